"""``explain IMAGE [IMAGE|DIR ...]``: the product. Results on stdout, progress and notes on stderr.

Settings come from, in order of precedence: the command line, ``EXPLAIN_*``
environment variables (e.g. ``EXPLAIN_VLM``, ``EXPLAIN_DEVICE``), a YAML config
file (``--config`` or ``EXPLAIN_CONFIG``), and the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from explainer.errors import ExplainerError, UsageError
from explainer.safe_io import read_text_capped
from explainer.images import expand_inputs, image_index, load_image
from explainer.outputs.results import ResultsLog, write_challenge_files
from explainer.pipeline import ImageReport, Pipeline, PipelineOptions, batched
from explainer.outputs.report import ReportWriter
from explainer.outputs.view import render_report

# option name -> (type, default); these may also come from the config file or EXPLAIN_<NAME>
SETTINGS: dict[str, tuple[type, Any]] = {
    "tree": (str, None), "strategy": (str, "tree"), "vlm": (str, None), "detector": (str, None),
    "sr": (str, None), "mask": (str, None), "device": (str, "auto"), "quantize": (str, None),
    "batch_size": (int, 32), "max_steps": (int, 2000), "calibration": (str, None), "batch_images": (int, None),
    "engine": (str, "local"), "ray_address": (str, None), "workers": (int, 2), "worker_cpus": (float, None),
    "worker_gpus": (float, 0.0),
}
RAY_ONLY = ("ray_address", "workers", "worker_cpus", "worker_gpus")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="explain",
        description="Explain why images look AI-generated. Sub-commands: explain tree|train|eval|bench --help.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    p.add_argument("--tree", help="question tree YAML (default: the shipped tree of --strategy)")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="a folder the tree's include: and catalogue: files may also come from (repeatable; "
                        "by default only the tree's own folder)")
    p.add_argument("--strategy", choices=("tree", "direct"), help="tree: the question tree; direct: all 70 artifacts")
    p.add_argument("--vlm", metavar="ID_OR_PATH", help="vision-language model: Hugging Face id or local folder")
    p.add_argument("--no-vlm", action="store_true", help="skip the VLM questions (detector and mask only)")
    p.add_argument("--detector", metavar="CHECKPOINT", help="real/fake classifier from `explain train detector`")
    p.add_argument("--sr", metavar="WEIGHTS", help="Real-ESRGAN .pth or our SR checkpoint (default: bicubic)")
    p.add_argument("--mask", metavar="CHECKPOINT", help="mask C-GAN from `explain train masks` (default: GrabCut)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quantize", choices=("4bit", "8bit"), help="bitsandbytes quantization (CUDA only)")
    p.add_argument("--explain-with-vlm", action="store_true",
                   help="ask the VLM for a free sentence per finding instead of the tree's explanation template")
    p.add_argument("--calibration", metavar="FILE", help="per-question P(yes) calibration from `explain calibrate`")
    p.add_argument("--ask-all", action="store_true",
                   help="also ask and record the questions the gates skipped (labelled walks for `explain calibrate`)")
    p.add_argument("--class", dest="obj", metavar="NAME", help="the object class, when known (skips that question)")
    p.add_argument("--json", action="store_true", help="one JSON record per image on stdout")
    p.add_argument("--out", metavar="DIR", help="write task1.json, task2.json and results.jsonl here")
    p.add_argument("--report", metavar="DIR", help="write an HTML report here: one page per image and index.html")
    p.add_argument("--resume", action="store_true", help="continue a run in --out DIR, skipping images already done")
    p.add_argument("--batch-size", type=int, help="images per detector batch (default 32)")
    p.add_argument("--batch-images", type=int, metavar="K",
                   help="images walked together: each round is one forward pass over the ready questions of K "
                        "images (default per device: 1 on a CPU, 16 on a GPU; see `explain bench throughput`)")
    p.add_argument("--max-steps", type=int, help="step limit of one walk (default 2000)")
    p.add_argument("--engine", choices=("local", "ray"), help="local (default): this process; ray: a Ray cluster")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --engine ray: auto, ray://HOST:10001 or HOST:PORT (default: a local cluster, 127.0.0.1)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="with --engine ray: actors, each loading the models once (default 2)")
    p.add_argument("--worker-cpus", type=float, metavar="C",
                   help="with --engine ray: CPUs per actor, fractions allowed (default: the CPUs shared, at most 1)")
    p.add_argument("--worker-gpus", type=float, metavar="G",
                   help="with --engine ray: GPUs per actor, fractions allowed (default 0)")
    p.add_argument("--config", metavar="FILE", help="YAML file of settings (keys as the long options)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _resolve_settings(args: argparse.Namespace) -> None:
    """Fill unset options from the environment, then the config file, then defaults."""
    ray_flags = [n for n in RAY_ONLY if getattr(args, n, None) is not None]  # given on the command line
    config: dict[str, Any] = {}
    config_path = args.config or os.environ.get("EXPLAIN_CONFIG")
    if config_path:
        try:
            config = yaml.safe_load(read_text_capped(config_path, what="config file")) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"{config_path}: cannot read config: {str(exc).splitlines()[0]}") from None
        if not isinstance(config, dict):
            raise UsageError(f"{config_path}: a config file is a mapping of settings")
        unknown = sorted(set(config) - set(SETTINGS) - {"class"})
        if unknown:
            raise UsageError(f"{config_path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(SETTINGS))}")
    for name, (kind, default) in SETTINGS.items():
        if getattr(args, name) is not None:
            continue
        value, source = os.environ.get(f"EXPLAIN_{name.upper()}"), f"EXPLAIN_{name.upper()}"
        if value is None:
            value, source = config.get(name), f"{config_path}: {name}"
        if value is None:
            value = default
        elif kind in (int, float):
            try:
                value = kind(value)
            except (TypeError, ValueError):
                what = "an integer" if kind is int else "a number"
                raise UsageError(f"{source}: must be {what}, not {value!r}") from None
        setattr(args, name, value)
    if args.obj is None and config.get("class"):
        args.obj = str(config["class"])
    if args.strategy not in ("tree", "direct"):
        raise UsageError(f"strategy must be 'tree' or 'direct', not {args.strategy!r}")
    if args.batch_size < 1 or args.max_steps < 1:
        raise UsageError("--batch-size and --max-steps must be at least 1")
    if args.engine not in ("local", "ray"):
        raise UsageError(f"engine must be 'local' or 'ray', not {args.engine!r}")
    if args.engine != "ray" and ray_flags:
        raise UsageError(f"--{ray_flags[0].replace('_', '-')} needs --engine ray")
    from explainer.pipeline import MAX_BATCH_IMAGES

    if args.batch_images is not None and not 1 <= args.batch_images <= MAX_BATCH_IMAGES:
        raise UsageError(f"--batch-images must be between 1 and {MAX_BATCH_IMAGES}, not {args.batch_images}")


def run_explain(args: argparse.Namespace) -> int:
    _resolve_settings(args)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR (the run to continue)")
    paths: list[Path] = []
    seen: set[Path] = set()
    for p in expand_inputs(args.images):
        key = p.resolve()
        if key not in seen:  # the same file given twice is explained once
            seen.add(key)
            paths.append(p)
    if not paths:
        raise UsageError(f"no images found in {' '.join(args.images)}")
    log = ResultsLog(Path(args.out), resume=args.resume) if args.out else None
    todo = [p for p in paths if not (log and log.has(p))]
    pages = ReportWriter(Path(args.report)) if args.report else None
    if log and len(todo) < len(paths):
        err.print(f"resuming: {len(paths) - len(todo)} image(s) already done in {args.out}")
    options = PipelineOptions(
        tree=args.tree, include_paths=tuple(args.include_path), strategy=args.strategy, vlm=args.vlm, use_vlm=not args.no_vlm, detector=args.detector,
        sr=args.sr, mask=args.mask, device=args.device, quantize=args.quantize, obj=args.obj, max_steps=args.max_steps,
        explain_with_vlm=args.explain_with_vlm, calibration=args.calibration, ask_all=args.ask_all,
        batch_images=args.batch_images)

    def on_note(note: str) -> None:
        err.print(f"[yellow]note:[/] {note}")

    if args.engine == "ray":
        from explainer.scale import RaySettings, explain_on_ray

        settings = RaySettings(address=args.ray_address, workers=args.workers, worker_cpus=args.worker_cpus,
                               worker_gpus=args.worker_gpus, batch_size=args.batch_size, verbose=args.debug)
        stream = explain_on_ray(todo, options, settings, with_artifacts=pages is not None, on_note=on_note)
        report_batches = ([report] for report in stream)  # reports come back one by one, as they finish
    else:
        pipeline = Pipeline.load(options, on_note=on_note)
        stream = report_batches = (_explain_batch(pipeline, batch, args.debug)
                                   for batch in batched(todo, args.batch_size))
    failures: list[ImageReport] = []
    from rich.progress import Progress

    # closing(): a Ray run's cluster is shut down at once if writing a result fails
    with Progress(console=err, transient=True, disable=len(todo) < 2) as progress, contextlib.closing(stream):
        task = progress.add_task("explaining", total=len(todo))
        for batch in report_batches:
            for report in batch:
                if report.error:
                    failures.append(report)
                if log:
                    log.append(report)
                if pages:
                    pages.add(report)
                if args.json:
                    print(json.dumps(report.to_dict()), flush=True)
                elif not report.error:
                    out.print(render_report(report))
                progress.advance(task)
    if log:
        task1, task2 = write_challenge_files(log)
        err.print(f"wrote {task1}, {task2} and {log.path}")
    if pages:
        err.print(f"wrote {pages.write_index(log.ordered() if log else None)}")
    if failures:
        err.print(f"[red]{len(failures)} of {len(todo)} image(s) failed:[/]")
        for r in failures:
            err.print(f"  {r.error}")
        return 1
    return 0


def _explain_batch(pipeline: Pipeline, batch: list[Path], debug: bool) -> list[ImageReport]:
    """Reports in input order; a bad file or a failing batch is recorded, never fatal."""
    loaded, reports = [], {}
    for p in batch:
        try:
            loaded.append(load_image(p))
        except UsageError as exc:
            reports[p] = ImageReport(file=str(p), index=image_index(p), error=str(exc))
    try:
        for li, report in zip(loaded, pipeline.explain(loaded)):
            reports[li.path] = report
    except Exception as exc:  # a runtime failure must not lose the rest of the batch run
        if debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        for li in loaded:
            reports[li.path] = ImageReport(file=str(li.path), index=image_index(li.path),
                                           error=f"{li.path}: failed: {type(exc).__name__}: {message}")
    return [reports[p] for p in batch]


__all__ = ["build_parser", "run_explain", "ExplainerError"]
