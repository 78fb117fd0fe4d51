"""How long `explain tree validate` takes on generated trees of 5,000, 50,000 and 200,000 nodes.

    python bench/bench_trees.py                      # 5k, 50k, 200k; table, JSON and plot in bench/results/
    python bench/bench_trees.py --sizes 5000 --repeat 1

The generated tree looks like a real one scaled up: sections (``all:``) of ten
gate questions, each gate opening three questions with inline artifacts under
``at_least_one``; prompts use ``{{ roi }}``, a tree variable and an input, and
one prompt in a hundred uses jinja statements. Every run parses the YAML and
compiles (every check of ``tree validate``) in this process; the time is the
best of ``--repeat`` runs. Growth is judged by seconds per 1,000 nodes, which
stays flat when validation is linear.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from explainer.trees import builtin_catalogue, compile_tree  # noqa: E402

SECTION = 41  # one all: node, ten gates, thirty members


def generate_tree(n_nodes: int) -> str:
    """YAML text of a valid tree with about ``n_nodes`` nodes."""
    names = builtin_catalogue().names
    sections = max(1, math.ceil((n_nodes - 1) / SECTION))
    out = ["tree: generated", "inputs: [obj]", "vars:", "  yn: Answer yes or no.", "start: root", "nodes:",
           "  root:", "    all: [" + ", ".join(f"s{s}" for s in range(sections)) + "]"]
    k = 0
    for s in range(sections):
        gates = [f"s{s}g{g}" for g in range(10)]
        out += [f"  s{s}:", f"    label: Section {s}", f"    all: [{', '.join(gates)}]"]
        for gate in gates:
            members = [f"{gate}m{m}" for m in range(3)]
            if k % 100 == 0:
                prompt = "\"{% if obj == 'cat' %}Look at the cat.{% else %}Look at the {{ obj }}.{% endif %} Gate " + gate + " in {{ roi }}? {{ yn }}\""
            else:
                prompt = f"\"Is part {gate} of the {{{{ obj }}}} odd in {{{{ roi }}}}? {{{{ yn }}}}\""
            out += [f"  {gate}:", f"    ask: {prompt}", f"    if_yes: {{at_least_one: [{', '.join(members)}]}}"]
            for member in members:
                out += [f"  {member}:", f"    ask: \"Is {member} of the {{{{ obj }}}} wrong? {{{{ yn }}}}\"",
                        f"    artifact: '{names[k % len(names)]}'"]
                k += 1
    return "\n".join(out) + "\n"


def time_validate(path: Path, repeat: int) -> tuple[float, float, int]:
    """Best wall-clock and process CPU seconds of ``repeat`` validations (CPU time is the fairer figure on a shared machine)."""
    best, best_cpu, nodes = math.inf, math.inf, 0
    for _ in range(repeat):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        tree = compile_tree(path)
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
        nodes = len(tree.spec.nodes)
        del tree
    return best, best_cpu, nodes


def run(sizes: list[int], repeat: int, out_dir: Path | None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"tree_{size}.yaml"
            path.write_text(generate_tree(size), encoding="utf-8")
            seconds, cpu, nodes = time_validate(path, repeat)
            rows.append({"nodes": nodes, "bytes": path.stat().st_size, "seconds": seconds, "cpu_seconds": cpu,
                         "ms_per_1000_nodes": 1e6 * seconds / nodes})
            print(f"{nodes:>8,} nodes  {path.stat().st_size / 1e6:6.1f} MB  {seconds:7.2f} s  (CPU {cpu:6.2f} s)  "
                  f"{rows[-1]['ms_per_1000_nodes']:6.1f} ms per 1,000 nodes", flush=True)
    if out_dir is not None:
        write_results(rows, out_dir)
    return rows


def write_results(rows: list[dict], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "trees.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| nodes | file | validate (s) | CPU (s) | ms per 1,000 nodes |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['nodes']:,} | {r['bytes'] / 1e6:.1f} MB | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
              f"{r['ms_per_1000_nodes']:.0f} |" for r in rows]
    (out_dir / "trees.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs, ys = [r["nodes"] for r in rows], [r["seconds"] for r in rows]
    ax.plot(xs, ys, "o-", label="tree validate")
    if rows:
        per_node = rows[0]["seconds"] / rows[0]["nodes"]
        ax.plot(xs, [per_node * x for x in xs], "--", color="grey", label="linear from the smallest")
    ax.set_xlabel("nodes")
    ax.set_ylabel("seconds")
    ax.set_title("Validating a generated tree")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "trees.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 50_000, 200_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    run(args.sizes, args.repeat, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
