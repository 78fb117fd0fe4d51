"""``explain eval explanations`` and ``explain calibrate supervised|contextual``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from explainer.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explanations", help="score explanations (task2.json / results.jsonl) against gold labels",
                       description="Per-artifact, micro and macro precision/recall/F1, per region and group, "
                                   "false alarms, gating loss; several runs side by side with a paired bootstrap.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="an `explain --out` folder, a results.jsonl or a task2.json")
    p.add_argument("--gold", required=True, metavar="GOLD", help="task-2 JSON or JSONL of {image, artifacts, regions}")
    p.add_argument("--name", action="append", metavar="NAME", help="a name per RUN, in order (default: folder name)")
    p.add_argument("--tree", metavar="FILE", help="the tree the runs were made with (default: the shipped one they name)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown tables")
    p.add_argument("--out", metavar="DIR", help="also write report.md, report.json, f1_per_artifact.png, pr_curve.png")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=0, metavar="N", help="per-artifact rows in Markdown (default: all)")
    p.set_defaults(func=run_eval)

    s = sub.add_parser("simulate", help="tree vs direct on explanation F1 and s/image with a simulated answerer",
                       description="F1 from the oracle with a stated noise level (simulated, not a model's "
                                   "accuracy); seconds from a model computing every answer when --vlm/--arch is given.")
    s.add_argument("--images", type=int, default=200)
    s.add_argument("--noise", type=float, default=1.0, help="Gaussian noise sd in log-odds on each answer (default 1.0)")
    s.add_argument("--flip", type=float, default=0.0, help="probability of turning an answer round (default 0)")
    s.add_argument("--seed", type=int, default=0)
    src = s.add_mutually_exclusive_group()
    src.add_argument("--vlm", metavar="ID_OR_PATH", help="a model to time the questions with")
    src.add_argument("--arch", choices=("smolvlm-256m", "idefics3", "llava", "qwen2_vl", "qwen2_5_vl"),
                     help="build a random-weight model to time the questions with")
    s.add_argument("--models-dir", default="runs/bench-models", help="where built models are kept between runs")
    s.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    s.add_argument("--markdown", action="store_true", help="print a Markdown table")
    s.add_argument("--json-out", metavar="FILE", help="also write the result as JSON")
    s.set_defaults(func=run_simulate)


def register_calibrate(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("supervised", help="per-question scaling and threshold from labelled walks",
                       description="Fit, per yes/no question, Platt or isotonic scaling and the threshold that "
                                   "maximises F1 (or meets --target-precision) from a run with every P(yes) "
                                   "(--ask-all or --strategy direct) and gold labels.")
    s.add_argument("run", metavar="RUN", help="an `explain --out` folder or its results.jsonl")
    s.add_argument("--gold", required=True, metavar="GOLD")
    s.add_argument("--method", choices=("platt", "isotonic", "threshold"), default="platt",
                   help="scaling before the threshold (default platt; threshold: none)")
    s.add_argument("--target-precision", type=float, metavar="P",
                   help="pick the lowest threshold with at least this precision instead of the best F1")
    s.add_argument("--min-samples", type=int, default=8, help="questions answered fewer times keep no calibration")
    s.add_argument("--holdout", type=float, default=0.3, help="share of images held out to measure ECE and F1")
    _common(s)
    s.set_defaults(func=run_supervised)

    c = sub.add_parser("contextual", help="divide out each question's P(yes) on content-free images (no labels)",
                       description="Ask every yes/no question of the tree about content-free images (blank, "
                                   "noise) with the model; the mean P(yes) is the question's prior, divided out "
                                   "(calibrate before use, Zhao et al. 2021).")
    c.add_argument("--vlm", metavar="ID_OR_PATH", help="the model to calibrate (default: the device's default)")
    c.add_argument("--strategy", choices=("tree", "direct"), default="tree")
    c.add_argument("--class", dest="classes", action="append", metavar="NAME",
                   help="classes to ask about (default: every class of the tree)")
    c.add_argument("--inputs", default="blank,noise", help="content-free images: blank, noise, black, white")
    c.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    c.add_argument("--gold", metavar="GOLD", help="with --run: ECE before/after on labelled walks")
    c.add_argument("--run", metavar="RUN", help="labelled walks for the ECE report")
    _common(c)
    c.set_defaults(func=run_contextual)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", metavar="FILE", help="the tree (default: the shipped tree the run names)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="calibration YAML to write")
    p.add_argument("--plot", metavar="PNG", help="reliability diagram before/after (default: next to the output)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--seed", type=int, default=0)


def _load(gold_path: str, run_paths: list[str], names: list[str] | None, tree_file: str | None):
    from explainer.quality.gold import load_gold
    from explainer.quality.paths import TreePaths, tree_for_run
    from explainer.quality.runs import load_run
    from explainer.trees.catalogue import builtin_catalogue

    if names and len(names) != len(run_paths):
        raise UsageError(f"--name given {len(names)} time(s) for {len(run_paths)} run(s)")
    catalogue = builtin_catalogue()
    gold = load_gold(gold_path, catalogue)
    runs, paths = [], []
    for k, path in enumerate(run_paths):
        run = load_run(path, gold, catalogue, names[k] if names else None)
        ids = {q.get("node_id") for rec in run.images.values() for q in rec.questions}
        paths.append(TreePaths(tree_for_run(tree_file, run.tree, ids)))
        runs.append(run)
    seen = [r.name for r in runs]
    if len(set(seen)) != len(seen):
        for k, r in enumerate(runs):
            r.name = f"{k + 1}:{r.name}"
    return gold, runs, paths


def run_eval(args: argparse.Namespace) -> int:
    from explainer.quality.curves import plot_f1_bars, plot_pr
    from explainer.quality.report import markdown, score_runs
    from explainer.safe_io import atomic_write_text

    if args.bootstrap < 1:
        raise UsageError("--bootstrap must be at least 1")
    gold, runs, paths = _load(args.gold, args.runs, args.name, args.tree)
    from explainer.quality.paths import TreePaths, shipped_trees
    from explainer.trees import compile_tree

    groups = TreePaths(compile_tree(Path(args.tree)) if args.tree else shipped_trees()[0]).groups
    result = score_runs(gold, runs, paths, args.bootstrap, args.seed, groups)
    text = markdown(result, args.top)
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out}: --out must be a directory")
        out.mkdir(parents=True, exist_ok=True)
        evs = result.get("runs", [result])
        written = [atomic_write_text(out / "report.md", text), atomic_write_text(out / "report.json", json.dumps(result, indent=1)),
                   plot_f1_bars(evs, out / "f1_per_artifact.png")]
        curves = {ev["run"]: ev["pr_curve"] for ev in evs if ev.get("pr_curve")}
        if curves:
            written.append(plot_pr(curves, out / "pr_curve.png"))
        else:
            print("note: no precision-recall curve: no run has results.jsonl with P(yes)", file=sys.stderr)
        print(f"wrote {', '.join(str(w) for w in written)}", file=sys.stderr)
    print(json.dumps(result) if args.json else text)
    return 0


def run_supervised(args: argparse.Namespace) -> int:
    from explainer.quality.calibrate import fit_supervised, summary_text

    gold, runs, paths = _load(args.gold, [args.run], None, args.tree)
    if runs[0].kind != "results":
        raise UsageError(f"{args.run}: supervised calibration needs results.jsonl (every question with its P(yes)), "
                         "not task2.json")
    if args.target_precision is not None and not 0 < args.target_precision <= 1:
        raise UsageError("--target-precision must be in (0, 1]")
    if not 0 <= args.holdout < 1:
        raise UsageError("--holdout must be in [0, 1)")
    summary = fit_supervised(gold, runs[0], paths[0], method=args.method, target_precision=args.target_precision,
                             min_samples=args.min_samples, holdout=args.holdout, seed=args.seed,
                             output=Path(args.output), plot=Path(args.plot) if args.plot else None)
    print(json.dumps(summary) if args.json else summary_text(summary))
    return 0


def run_contextual(args: argparse.Namespace) -> int:
    from explainer.answerers.hf import load_vlm
    from explainer.pipeline import PipelineOptions, tree_path_for
    from explainer.quality.calibrate import fit_contextual, summary_text
    from explainer.trees import compile_tree

    tree = compile_tree(Path(args.tree) if args.tree else tree_path_for(PipelineOptions(strategy=args.strategy)))
    inputs = [s.strip() for s in args.inputs.split(",") if s.strip()]
    labelled = None
    if bool(args.gold) != bool(args.run):
        raise UsageError("--gold and --run go together (labelled walks to measure ECE on)")
    if args.gold:
        gold, runs, paths = _load(args.gold, [args.run], None, args.tree)
        labelled = (gold, runs[0], paths[0])
    answerer = load_vlm(args.vlm, device=args.device)
    summary = fit_contextual(tree, answerer, classes=args.classes, inputs=inputs, seed=args.seed,
                             output=Path(args.output), plot=Path(args.plot) if args.plot else None,
                             labelled=labelled, model=args.vlm or "default")
    print(json.dumps(summary) if args.json else summary_text(summary))
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from explainer.outputs.tables import Table
    from explainer.quality.tradeoff import compare_strategies
    from explainer.safe_io import atomic_write_text

    if args.images < 1 or args.noise < 0 or not 0 <= args.flip <= 1:
        raise UsageError("--images must be at least 1, --noise at least 0 and --flip in [0, 1]")
    vlm = args.vlm
    if args.arch:
        from explainer.cli.bench import _model_path

        vlm = _model_path(args)
    err = Console(stderr=True, highlight=False)
    result = compare_strategies(args.images, noise=args.noise, flip=args.flip, seed=args.seed, vlm_path=vlm,
                                device=args.device, on_progress=lambda m: err.print(m))
    timed = result["timed_by"]
    table = Table("Tree vs direct prompting (SIMULATED answers)",
                  ["strategy", "micro P", "micro R", "micro F1", "macro F1", "false-alarm rate", "yes/no per image",
                   "rounds", "median s / image"])
    for r in result["rows"]:
        table.add(r["strategy"], f"{r['micro']['precision']:.3f}", f"{r['micro']['recall']:.3f}",
                  f"{r['micro']['f1']:.3f}", f"{r['macro']['f1']:.3f}",
                  "" if r["false_alarm_rate"] is None else f"{r['false_alarm_rate']:.3f}",
                  f"{r['yes_no_per_image']:.1f}", f"{r['rounds_per_image']:.1f}", f"{r['seconds_per_image_median']:.4f}")
    table.footer = (f"{result['images']} simulated images, seed {result['seed']}; answers simulated: the oracle at "
                    f"P(yes) 0.9/0.1 with Gaussian noise sd {args.noise} in log-odds"
                    + (f" and flips with p = {args.flip}" if args.flip else "") + "; seconds: "
                    + (f"{timed['model_type']} ({timed['parameters'] / 1e6:.1f}M parameters) computing every answer"
                       if isinstance(timed, dict) else timed) + ".")
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(result, indent=1))
    if args.markdown:
        print(table.markdown())
    else:
        Console(highlight=False).print(table.rich())
        print(table.footer)
    return 0
