"""``explain bench``: per-image latency of the four strategies, as a table and a JSON file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from explainer.outputs.tables import Table

from explainer.errors import UsageError

_err = Console(stderr=True, highlight=False)


def _model_path(args: argparse.Namespace) -> str:
    if args.vlm:
        return args.vlm
    from explainer import testing

    cache = Path(args.models_dir)
    if args.arch == "smolvlm-256m":
        _err.print(f"building a SmolVLM-256M-sized model with random weights in {cache} (once)")
        return str(testing.build_smolvlm_256m(cache / "smolvlm-256m"))
    return str(testing.build_tiny_vlm(args.arch, cache / f"tiny-{args.arch}"))


def cmd_bench(args: argparse.Namespace) -> int:
    from explainer.bench import STRATEGIES, run_bench

    strategies = args.strategies.split(",") if args.strategies else list(STRATEGIES)
    if args.images < 1:
        raise UsageError("--images must be at least 1")
    path = _model_path(args)
    report = run_bench(path, strategies=strategies, n_images=args.images, oracle=not args.model_answers,
                       device=args.device, seed=args.seed, detector_stage=args.detector_stage,
                       on_progress=lambda m: _err.print(f"[dim]{m}[/]"))
    table = strategy_table(report)
    if args.markdown:
        print(table.markdown())
    else:
        Console(highlight=False).print(table.rich())
        Console(highlight=False).print(table.footer)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.to_dict(), indent=2))
        _err.print(f"wrote {args.json_out}")
    return 0


def strategy_table(report) -> Table:
    m = report.model
    table = Table(
        title="per image",
        headers=["strategy", "median s / image", "min–max s", "× tree", "yes/no", "follow-ups", "rounds",
                 "forward passes", "tokens", "detector s", "image encoding s", "questions s", "engine overhead"],
        footer=(f"{report.settings['images']} images; {m['model_type']}, {m['parameters'] / 1e6:.1f}M parameters, "
                f"{m['dtype']}; detector stage: {report.settings['detector_stage']}; "
                f"{report.machine['device']}, {report.machine['cpu_threads']} threads, torch "
                f"{report.machine['torch']}, transformers {report.machine['transformers']}; "
                + ("branches opened by the oracle (p = %.3f)" % report.settings["p_artifact"] if report.settings["oracle"]
                   else "branches opened by the model's own answers") + "."))
    for s in report.summaries:
        table.add(s.strategy, f"{s.median_seconds:.3f}", f"{s.min_seconds:.2f}–{s.max_seconds:.2f}",
                  f"{s.speedup_of_tree:.1f}", f"{s.yes_no:.1f}", f"{s.follow_ups:.1f}", f"{s.rounds:.1f}",
                  f"{s.forward_passes:.1f}", f"{s.tokens:.0f}", f"{s.detector_seconds:.3f}", f"{s.encode_seconds:.3f}",
                  f"{s.question_seconds:.3f}", f"{100 * s.overhead_fraction:.1f}%")
    return table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("strategies", help="tree vs direct prompting, naive vs cached, per image")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--vlm", metavar="ID_OR_PATH", help="a real model (default: build --arch with random weights)")
    src.add_argument("--arch", default="smolvlm-256m", choices=("smolvlm-256m", "idefics3", "llava", "qwen2_vl", "qwen2_5_vl"),
                     help="random-weight model to build: real-size SmolVLM-256M or a tiny test model")
    p.add_argument("--models-dir", default="runs/bench-models", help="where built models are kept between runs")
    p.add_argument("--strategies", help="comma-separated subset of direct-naive,direct-cached,tree-naive,tree")
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detector-stage", choices=("default", "full"), default="default",
                   help="default: what `explain` runs without weights (bicubic, no classifier); "
                        "full: random-weight RRDBNet x4 + DenseNet121 + Grad-CAM (the seed's stage, for latency)")
    p.add_argument("--model-answers", action="store_true",
                   help="let the model's own answers open branches (default: an oracle does, see docs)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for READMEs)")
    p.add_argument("--json-out", metavar="FILE", help="write machine, model, settings and every run as JSON")
    p.set_defaults(func=cmd_bench)
