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
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable

from rich.console import Console
from rich.text import Text

from explainer import settings
from explainer.errors import ExplainerError, UsageError
from explainer.images import expand_inputs, image_index, load_image
from explainer.outputs.indexes import assign_indexes, describe_collisions
from explainer.outputs.lock import FolderLock
from explainer.outputs.names import printable
from explainer.outputs.results import ResultsLog, write_challenge_files
from explainer.pipeline import ImageReport, Pipeline, PipelineOptions, batched
from explainer.outputs.report import ReportWriter
from explainer.outputs.view import render_report


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
    server_options(p)
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
    p.add_argument("--resume", action="store_true",
                   help="continue a run in --out DIR: skip images already done, retry those that failed")
    p.add_argument("--skip-failed", action="store_true", help="with --resume: do not retry images that failed before")
    p.add_argument("--index-from", choices=("name", "order"),
                   help="challenge index: the last number in the file name (default) or the position in the sorted input")
    p.add_argument("--batch-size", type=int, help="images per detector batch (default 32)")
    p.add_argument("--batch-images", type=int, metavar="K",
                   help="images walked together: each round is one forward pass over the ready questions of K "
                        "images (default per device: 1 on a CPU, 16 on a GPU; see `explain bench throughput`)")
    p.add_argument("--packing", choices=("rows", "exact"),
                   help="how the VLM lays out a round's yes/no questions: rows (default: one padded row each) or "
                        "exact (an image's questions in one sequence after its prefix, a 4D mask keeping them "
                        "apart; LLaVA, Idefics3/SmolVLM, Qwen2-VL/2.5-VL)")
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
    """Fill unset options from the environment, then the config file, then defaults; check every value."""
    ray_flags = [n for n in RAY_ONLY if getattr(args, n, None) is not None]  # given on the command line
    settings.resolve(args)
    if args.engine != "ray" and ray_flags:
        raise UsageError(f"--{ray_flags[0].replace('_', '-')} needs --engine ray")
    if args.resume and not args.out:
        raise UsageError("--resume needs --out DIR (the run to continue)")
    if args.skip_failed and not args.resume:
        raise UsageError("--skip-failed only makes sense with --resume")


def server_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("served VLM (any OpenAI-compatible chat-completions server; --vlm is its model name)")
    g.add_argument("--vlm-server", metavar="URL", help="e.g. http://127.0.0.1:8000/v1 (vLLM, SGLang, llama.cpp)")
    g.add_argument("--vlm-api-key-env", metavar="NAME", help="environment variable holding the API key (default OPENAI_API_KEY)")
    g.add_argument("--vlm-concurrency", type=int, metavar="N", help="requests in flight at once (default 16)")
    g.add_argument("--vlm-images", type=int, metavar="N", help="images walked at once (default concurrency / 4)")
    g.add_argument("--vlm-timeout", type=float, default=60.0, metavar="S", help="seconds per request (default 60)")
    g.add_argument("--vlm-retries", type=int, default=3, metavar="N",
                   help="retries with backoff on timeouts, connection errors, 429 and 5xx (default 3)")
    g.add_argument("--vlm-tokenizer", metavar="ID_OR_PATH",
                   help="local tokenizer for options' first tokens (default: the server's /tokenize)")


def server_settings(args: argparse.Namespace):
    """ServerSettings from the options, or None without --vlm-server."""
    if not args.vlm_server:
        return None
    if args.no_vlm:
        raise UsageError("--vlm-server and --no-vlm contradict each other")
    if getattr(args, "packing", None) == "exact":
        raise UsageError("--packing exact lays out an in-process VLM's questions; a --vlm-server does its own batching")
    if args.vlm_images is not None and args.vlm_images < 1:
        raise UsageError("--vlm-images must be at least 1")
    from explainer.answerers.server import ServerSettings

    return ServerSettings(url=args.vlm_server, model=args.vlm, api_key_env=args.vlm_api_key_env,
                          concurrency=args.vlm_concurrency, timeout=args.vlm_timeout, retries=args.vlm_retries,
                          images_in_flight=args.vlm_images, tokenizer=args.vlm_tokenizer)


def _say(console: Console, text: str, style: str | None = None) -> None:
    """Print literally: file names and notes may hold rich markup (``[/].png``) or bytes that are not UTF-8."""
    console.print(Text(printable(text), style=style or ""))


def _inputs(args: argparse.Namespace) -> list[Path]:
    paths: list[Path] = []
    seen: set[Path] = set()
    for p in expand_inputs(args.images):
        key = p.resolve()
        if key not in seen:  # the same file given twice is explained once
            seen.add(key)
            paths.append(p)
    if not paths:
        raise UsageError(f"no images found in {' '.join(args.images)}")
    missing = [p for p in paths if not os.path.lexists(p)]
    if len(missing) == len(paths):
        # nothing named exists (a typo): say so now, not after minutes of model loading; where only some are
        # missing, the batch goes on and records them as failed, like any other bad file
        more = f" (and {len(missing) - 1} more named input(s) that do not exist)" if len(missing) > 1 else ""
        raise UsageError(f"{printable(str(missing[0]))}: no such file or folder{more}")
    return paths


def run_explain(args: argparse.Namespace) -> int:
    _resolve_settings(args)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    note = lambda text: _say(err, f"note: {text}", "yellow")  # noqa: E731
    paths = _inputs(args)
    indexes, collisions = assign_indexes(paths, args.index_from)
    if collisions and args.out:
        shared = sum(len(v) for v in collisions.values())
        _say(err, f"warning: {shared} images share {len(collisions)} challenge index(es) taken from their file names; "
                  "none of them gets an entry in task1.json/task2.json (use --index-from order to number the inputs):",
             "yellow")
        for line in describe_collisions(collisions):
            _say(err, f"  {line}", "yellow")
    with ExitStack() as stack:
        # every output folder is locked (and so known writable) before any model loads
        log = pages = None
        if args.out:
            stack.enter_context(FolderLock(Path(args.out), "--out", note))
            log = ResultsLog(Path(args.out), resume=args.resume, on_note=note)
            stack.callback(log.close)
        if args.report:
            if not (args.out and Path(args.report).resolve() == Path(args.out).resolve()):
                stack.enter_context(FolderLock(Path(args.report), "--report", note))
            pages = ReportWriter(Path(args.report))
        todo = [p for p in paths if not log or log.status(p) is None
                or (log.status(p) == "failed" and not args.skip_failed)]
        if log and len(todo) < len(paths):
            retried = sum(1 for p in todo if log.status(p) == "failed")
            _say(err, f"resuming: {len(paths) - len(todo)} image(s) already done in {args.out}"
                      + (f"; retrying {retried} that failed (--skip-failed to leave them)" if retried else ""))
        options = PipelineOptions(
            tree=args.tree, include_paths=tuple(args.include_path), strategy=args.strategy, vlm=args.vlm,
            use_vlm=not args.no_vlm, detector=args.detector, sr=args.sr, mask=args.mask, device=args.device, quantize=args.quantize, obj=args.obj,
            max_steps=args.max_steps, explain_with_vlm=args.explain_with_vlm, calibration=args.calibration,
            ask_all=args.ask_all, batch_images=args.batch_images, server=server_settings(args), packing=args.packing)
        if args.engine == "ray":
            from explainer.scale import RaySettings, explain_on_ray

            ray = RaySettings(address=args.ray_address, workers=args.workers, worker_cpus=args.worker_cpus,
                              worker_gpus=args.worker_gpus, batch_size=args.batch_size, verbose=args.debug)
            stream = explain_on_ray(todo, options, ray, with_artifacts=pages is not None, on_note=note)
            report_batches = ([report] for report in stream)  # reports come back one by one, as they finish
        else:
            pipeline = Pipeline.load(options, on_note=note)
            stack.callback(pipeline.close)  # a served VLM's connection
            stream = report_batches = (_explain_batch(pipeline, batch, args.debug)
                                       for batch in batched(todo, args.batch_size))
        # closing(): a Ray run's cluster is shut down at once if writing a result fails
        with contextlib.closing(stream):
            failures = _write_reports(report_batches, len(todo), indexes, args, out, err, log, pages)
        if log:
            task1, task2 = write_challenge_files(log, exclude=set(collisions))
            _say(err, f"wrote {task1}, {task2} and {log.path}")
        if pages:
            _say(err, f"wrote {pages.write_index(log.ordered() if log else None)}")
    if failures:
        _say(err, f"{len(failures)} of {len(todo)} image(s) failed:", "red")
        for r in failures:
            _say(err, f"  {r.error}")
        return 1
    return 0


def _write_reports(report_batches: Iterable[list[ImageReport]], total: int, indexes: dict[Path, int | None],
                   args: argparse.Namespace, out: Console, err: Console, log: ResultsLog | None,
                   pages: ReportWriter | None) -> list[ImageReport]:
    from rich.progress import Progress

    failures: list[ImageReport] = []
    with Progress(console=err, transient=True, disable=total < 2) as progress:
        task = progress.add_task("explaining", total=total)
        for batch in report_batches:
            for report in batch:
                report.index = indexes.get(Path(report.file), report.index)
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
    return failures


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
