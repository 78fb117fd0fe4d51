"""Images per second of ``explain DIR --out OUT``: the local engine against ``--engine ray`` with 1, 2, 4 actors.

Every configuration is the real command in a fresh process, on the same
images and the same model, in one run, so the ratios compare like with like.
Two rates per configuration: end to end (what a user waits for: start-up,
cluster start, model loads, every image) and steady (first record to last:
the rate once everything is loaded: images after the first burst of
records over the time after it).

    python bench/ray_throughput.py --images 64 --workers 1 2 4 --markdown \
        --json-out bench-ray.json --plot bench-ray.png

``--arch tiny`` (default) is the tiny random-weight test VLM, where the
overheads show; ``--arch smolvlm-256m`` a SmolVLM-256M-sized one (random
weights, public config), where the model's time does; ``--vlm PATH`` any
model folder. Add ``--ray-address ADDR`` to measure on an existing cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Run:
    engine: str  # "local" or "ray ×N"
    workers: int | None
    images: int
    wall_s: float
    first_record_s: float
    steady_images_per_s: float  # images after the first burst of records / seconds after it
    images_per_s: float
    exit_code: int


def _build_model(arch: str, root: Path) -> Path:
    from explainer.testing import build_smolvlm_256m, build_tiny_vlm

    return build_smolvlm_256m(root / "vlm") if arch == "smolvlm-256m" else build_tiny_vlm("idefics3", root / "vlm")


def _write_images(folder: Path, n: int) -> None:
    from explainer.bench import synthetic_images

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(synthetic_images(n), start=1):
        image.save(folder / f"{i}.png")


def _line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def run_once(label: str, workers: int | None, cmd: list[str], results: Path, n: int, log: Path) -> Run:
    """Run the command, watching results.jsonl grow, and time it."""
    t0 = time.perf_counter()
    stamps: list[float] = []
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh, start_new_session=True)
        while proc.poll() is None:
            done = _line_count(results)
            now = time.perf_counter() - t0
            stamps += [now] * (done - len(stamps))
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    stamps += [wall] * (_line_count(results) - len(stamps))
    first = stamps[0] if stamps else float("nan")
    # Records land in bursts (one per actor call, or per --batch-size batch locally): the steady rate counts the
    # images after the first burst over the time after it.
    later = [t for t in stamps if t > first]
    steady = len(later) / (later[-1] - first) if later else float("nan")
    return Run(label, workers, n, round(wall, 2), round(first, 2), round(steady, 3), round(len(stamps) / wall, 3),
               proc.returncode)


def markdown(runs: list[Run]) -> str:
    local = next((r for r in runs if r.engine == "local"), None)
    rows = ["| engine | images | wall s | first record s | images/s end to end | × local | images/s steady "
            "| × local |",
            "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        ratio = f"{r.images_per_s / local.images_per_s:.2f}" if local else ""
        sratio = f"{r.steady_images_per_s / local.steady_images_per_s:.2f}" if local else ""
        rows.append(f"| {r.engine} | {r.images} | {r.wall_s:.1f} | {r.first_record_s:.1f} | {r.images_per_s:.2f} | "
                    f"{ratio} | {r.steady_images_per_s:.2f} | {sratio} |")
    return "\n".join(rows)


def plot(runs: list[Run], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ray_runs = [r for r in runs if r.workers]
    local = next((r for r in runs if r.engine == "local"), None)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    xs = [r.workers for r in ray_runs]
    ax.plot(xs, [r.images_per_s for r in ray_runs], "o-", label="Ray, end to end")
    ax.plot(xs, [r.steady_images_per_s for r in ray_runs], "s--", label="Ray, steady")
    if local:
        ax.axhline(local.images_per_s, color="grey", label="local, end to end")
        ax.axhline(local.steady_images_per_s, color="grey", linestyle=":", label="local, steady")
    ax.set_xlabel("actors")
    ax.set_ylabel("images / s")
    ax.set_xticks(xs)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    model = p.add_mutually_exclusive_group()
    model.add_argument("--arch", choices=("tiny", "smolvlm-256m"), default="tiny")
    model.add_argument("--vlm", help="a model folder instead of a built one")
    p.add_argument("--no-local", action="store_true", help="skip the local engine")
    p.add_argument("--ray-address", help="measure on this cluster instead of a local one per run")
    p.add_argument("--work-dir", help="keep images, models and outputs here (default: a temporary folder)")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json-out")
    p.add_argument("--plot", help="PNG of images/s against actors")
    args = p.parse_args(argv)

    root = Path(args.work_dir or tempfile.mkdtemp(prefix="explainer-ray-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    vlm = Path(args.vlm) if args.vlm else _build_model(args.arch, root)
    folder = root / "images"
    _write_images(folder, args.images)
    base = [sys.executable, "-m", "explainer.cli", str(folder), "--vlm", str(vlm), "--device", "cpu"]
    configs: list[tuple[str, int | None, list[str]]] = []
    if not args.no_local:
        configs.append(("local", None, []))
    for n in args.workers:
        extra = ["--engine", "ray", "--workers", str(n)]
        if args.ray_address:
            extra += ["--ray-address", args.ray_address]
        configs.append((f"ray ×{n}", n, extra))
    runs = []
    for label, workers, extra in configs:
        out = root / f"out-{label.replace(' ×', '-')}"
        if out.exists():
            for f in out.iterdir():
                f.unlink()
        run = run_once(label, workers, [*base, "--out", str(out), *extra], out / "results.jsonl", args.images,
                       root / f"{out.name}.log")
        print(f"{label}: {run.wall_s:.1f} s, {run.images_per_s:.2f} images/s (exit {run.exit_code})", file=sys.stderr)
        runs.append(run)
    from explainer.bench import machine_info

    meta = {"model": str(vlm) if args.vlm else args.arch, "images": args.images, "machine": machine_info("cpu"),
            "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    if args.markdown:
        print(markdown(runs))
        print(f"\n{args.images} images; model {meta['model']}; {meta['cpus']} CPUs; load average at the end "
              f"{meta['load_average'][0]:.2f}; torch {meta['machine']['torch']}.")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"runs": [asdict(r) for r in runs], **meta}, indent=1) + "\n")
    if args.plot:
        plot(runs, Path(args.plot), f"explain on {args.images} images, {meta['model']}, {meta['cpus']} CPUs")
    return 0 if all(r.exit_code == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
