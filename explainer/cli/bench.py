"""``explain bench``: per-image latency of the four strategies, as a table and a JSON file."""

from __future__ import annotations

import argparse
import json
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
    if args.arch == "qwen2-vl-2b":
        from explainer.benchmarks.models import build_qwen2_vl_2b

        _err.print(f"building a Qwen2-VL-2B-sized model with random weights in {cache} (once)")
        return str(build_qwen2_vl_2b(cache, device=args.device))
    return str(testing.build_tiny_vlm(args.arch, cache / f"tiny-{args.arch}"))


def cmd_bench(args: argparse.Namespace) -> int:
    from explainer.bench import DEFAULT_STRATEGIES, run_bench

    strategies = args.strategies.split(",") if args.strategies else list(DEFAULT_STRATEGIES)
    if args.images < 1:
        raise UsageError("--images must be at least 1")
    served = None
    if args.vlm_server:
        from explainer.answerers.server import ServerSettings
        from explainer.bench import connect_server

        served = connect_server(ServerSettings(url=args.vlm_server, model=args.vlm_server_model,
                                               api_key_env=args.vlm_api_key_env, tokenizer=args.vlm_tokenizer),
                                strategies)
    try:
        path = _model_path(args)
        report = run_bench(path, strategies=strategies, n_images=args.images, oracle=not args.model_answers,
                           device=args.device, seed=args.seed, detector_stage=args.detector_stage, dtype=args.dtype,
                           quantize=args.quantize, server=served, on_progress=lambda m: _err.print(f"[dim]{m}[/]"))
    finally:
        if served is not None:
            served.close()
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
                 "forward passes", "tokens", "detector s", "image encoding s", "questions s", "engine overhead",
                 "ms / question", "packed vs alone: mean |ΔP(yes)|, flipped"],
        footer=(f"{report.settings['images']} images; {m['model_type']}, {m['parameters'] / 1e6:.1f}M parameters, "
                f"{m['dtype']}; detector stage: {report.settings['detector_stage']}; "
                + "".join(f"{k}: {'; '.join(v)}; " for k, v in report.settings.get("notes", {}).items())
                + "".join(f"{k} not available here ({v}); " for k, v in report.settings.get("unavailable", {}).items())
                + f"{report.machine['device']}, {report.machine['cpu_threads']} threads, torch "
                f"{report.machine['torch']}, transformers {report.machine['transformers']}; "
                + ("branches opened by the oracle (p = %.3f)" % report.settings["p_artifact"] if report.settings["oracle"]
                   else "branches opened by the model's own answers") + "."))
    for s in report.summaries:
        table.add(s.strategy, f"{s.median_seconds:.3f}", f"{s.min_seconds:.2f}–{s.max_seconds:.2f}",
                  f"{s.speedup_of_tree:.1f}", f"{s.yes_no:.1f}", f"{s.follow_ups:.1f}", f"{s.rounds:.1f}",
                  f"{s.forward_passes:.1f}", f"{s.tokens:.0f}", f"{s.detector_seconds:.3f}", f"{s.encode_seconds:.3f}",
                  f"{s.question_seconds:.3f}", f"{100 * s.overhead_fraction:.1f}%", f"{s.ms_per_question:.1f}",
                  "-" if s.packed_mean_abs is None else f"{s.packed_mean_abs:.3f}, {100 * s.packed_flipped:.0f}%")
    return table


def _int_list(text: str, what: str, low: int = 1, high: int = 4096) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} is a comma-separated list of integers, not {text!r}") from None
    if not values or any(not low <= v <= high for v in values):
        raise UsageError(f"{what}: every value must be between {low} and {high} ({text!r})")
    return sorted(set(values))


def _shape_list(text: str) -> list[str]:
    from explainer.benchmarks.growth import SHAPES

    shapes = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [v for v in shapes if v not in SHAPES]
    if not shapes or unknown:
        raise UsageError(f"--growth-shapes: {', '.join(unknown) or 'none given'}; choose from {', '.join(SHAPES)}")
    return shapes


def cmd_throughput(args: argparse.Namespace) -> int:
    from explainer.benchmarks.throughput import plot_growth, plot_throughput, run_throughput
    from explainer.safe_io import atomic_write_text

    batches = _int_list(args.batch_images, "--batch-images", 1, 256)
    counts = _int_list(args.images, "--images", 1, 100000)
    sizes = _int_list(args.growth, "--growth", 3, 5000) if args.growth else []
    shapes = _shape_list(args.growth_shapes)
    if args.growth_samples < 2:
        raise UsageError(f"--growth-samples must be at least 2, not {args.growth_samples}")
    path = _model_path(args)
    progress = lambda m: _err.print(f"[dim]{m}[/]")  # noqa: E731
    report = run_throughput(path, batch_images=batches, images=counts, device=args.device, dtype=args.dtype,
                            quantize=args.quantize, seed=args.seed, growth=sizes,
                            growth_dir=str(Path(args.out_dir or args.models_dir) / "generated-trees"),
                            growth_samples=args.growth_samples, growth_timed=args.growth_timed,
                            growth_shapes=shapes, packing=args.packing,
                            on_progress=progress)
    tables = [throughput_table(report)] + ([growth_table(report)] if report.growth else [])
    console = Console(highlight=False)
    for table in tables:
        if args.markdown:
            print(table.markdown() + "\n")
        else:
            console.print(table.rich())
            console.print(table.footer)
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "throughput.json", json.dumps(report.to_dict(), indent=2))
        atomic_write_text(out / "throughput.md", "\n\n".join(t.markdown() for t in tables) + "\n")
        plot_throughput(report, out / "throughput.png")
        if report.growth:
            plot_growth(report, out / "growth.png")
        _err.print(f"wrote {out / 'throughput.json'}, throughput.md, throughput.png"
                   + (" and growth.png" if report.growth else ""))
    return 0


def throughput_table(report) -> Table:
    m = report.model
    best = report.best
    gpu = any(p.peak_gpu_mib is not None for p in report.points)
    table = Table(
        title="throughput",
        headers=["--batch-images", "images", "images/s", "× K=1", "p50 s / image", "p95 s / image", "questions / image",
                 "model s / image", "outside the model", "peak RSS MiB"] + (["peak GPU MiB"] if gpu else []),
        footer=(f"{m['model_type']}, {m['parameters'] / 1e6:.1f}M parameters, {m['dtype']}"
                + (f" ({m['quantize']})" if m.get("quantize") else "")
                + f"; packing {report.settings.get('packing', 'rows')}"
                + f"; {report.machine['device']}, {report.machine['cpu_threads']} threads, torch "
                f"{report.machine['torch']}, transformers {report.machine['transformers']}; oracle-opened branches "
                f"(p = {report.settings['p_artifact']:.3f}); detector stage (not in the table) "
                f"{report.detector_seconds:.3f} s / image; best K here: {best.batch_images if best else '-'}."))
    for p in report.points:
        row = [p.batch_images, p.images, f"{p.images_per_second:.3f}", f"{p.speedup:.2f}", f"{p.p50_seconds:.3f}",
               f"{p.p95_seconds:.3f}", f"{p.questions:.1f}", f"{p.model_seconds:.3f}",
               f"{100 * p.overhead_fraction:.1f}%", f"{p.peak_rss_mib:.0f}"]
        if gpu:
            row.append("-" if p.peak_gpu_mib is None else f"{p.peak_gpu_mib:.0f}")
        table.add(*[str(c) for c in row])
    return table


def growth_table(report) -> Table:
    from explainer.benchmarks.growth import SHAPE_WORDS

    timed = any(g.seconds is not None for g in report.growth)
    shapes = list(dict.fromkeys(g.shape for g in report.growth))
    table = Table(
        title="cost growth",
        headers=["shape", "catalogue", "questions / image", "× smallest", "sampled (± se)", "floor",
                 "floor × smallest", "× floor", "rounds (mean)", "rounds (max)"]
        + (["s / image"] if timed else []),
        footer=("generated trees, 2.4 artifacts per image at every size; "
                + "; ".join(f"{s}: {SHAPE_WORDS[s]}" for s in shapes)
                + ". questions / image: the exact expectation; sampled: the real engine walked by the oracle"
                + (", seconds: the mean per image with the model at K=1, the shapes timed on the same images, "
                   "interleaved" if timed else "")
                + "; floor: the fewest questions any tree could average (the region choice + the entropy of the "
                  "artifact set in bits)."))
    for g in report.growth:
        row = [g.shape, g.artifacts, f"{g.expected:.2f}", f"{g.ratio_to_smallest:.3f}",
               f"{g.questions:.2f} ± {g.questions_se:.2f}", f"{g.floor:.2f}", f"{g.floor_ratio_to_smallest:.2f}",
               f"{g.expected / g.floor:.2f}", f"{g.rounds:.2f}", g.depth]
        if timed:
            row.append("-" if g.seconds is None else f"{g.seconds:.3f}")
        table.add(*[str(c) for c in row])
    return table


def _model_options(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--vlm", metavar="ID_OR_PATH", help="a real model (default: build --arch with random weights)")
    src.add_argument("--arch", default="smolvlm-256m", choices=("smolvlm-256m", "qwen2-vl-2b", "idefics3", "llava", "qwen2_vl", "qwen2_5_vl"),
                     help="random-weight model to build: real-size SmolVLM-256M or Qwen2-VL-2B, or a tiny test model")
    p.add_argument("--models-dir", default="runs/bench-models", help="where built models are kept between runs")


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("throughput", help="images/s when K images are walked together; cost growth with the catalogue")
    _model_options(t)
    t.add_argument("--batch-images", default="1,2,4,8,16,32", help="comma-separated K values (default 1,2,4,8,16,32)")
    t.add_argument("--images", default="16", help="comma-separated image counts (default 16)")
    t.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    t.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default: the device's")
    t.add_argument("--quantize", choices=("4bit", "8bit"), help="bitsandbytes (CUDA only)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--packing", choices=("rows", "exact"), default="rows",
                   help="how a round's yes/no questions are laid out (see explain --packing); run both to compare")
    t.add_argument("--growth", default="70,140,280",
                   help="catalogue sizes for the cost-growth table (generated trees); empty to skip")
    t.add_argument("--growth-shapes", default="wide,cheapest",
                   help="generated tree shapes: wide (the shipped tree's kind, few rounds), cheapest (fewest "
                        "expected questions, more rounds); comma-separated")
    t.add_argument("--growth-samples", type=int, default=400, help="oracle walks per catalogue size")
    t.add_argument("--growth-timed", type=int, default=0, metavar="N",
                   help="also time N images per catalogue size with the model (K=1)")
    t.add_argument("--markdown", action="store_true", help="print Markdown tables")
    t.add_argument("--out-dir", metavar="DIR", help="write throughput.json, throughput.md and throughput.png here")
    t.set_defaults(func=cmd_throughput)

    p = sub.add_parser("strategies", help="tree vs direct prompting, naive vs cached, per image")
    _model_options(p)
    p.add_argument("--strategies", help="comma-separated: direct-naive, direct-cached, tree-naive, tree, tree-packed, decision-pipeline, "
                                        "direct-decision-pipeline, direct-packed, tree-server "
                                        "(default: all but direct-decision-pipeline)")
    g = p.add_argument_group("tree-server: the tree through an OpenAI-compatible server (vLLM, SGLang, llama.cpp)")
    g.add_argument("--vlm-server", metavar="URL", help="e.g. http://127.0.0.1:8000/v1; without it tree-server is "
                                                       "listed as not available")
    g.add_argument("--vlm-server-model", metavar="NAME", help="the served model's name (default: the server's only model)")
    g.add_argument("--vlm-api-key-env", metavar="NAME", help="environment variable holding the API key (default OPENAI_API_KEY)")
    g.add_argument("--vlm-tokenizer", metavar="ID_OR_PATH",
                   help="local tokenizer for options' first tokens (default: the server's /tokenize)")
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default: the device's")
    p.add_argument("--quantize", choices=("4bit", "8bit"), help="bitsandbytes (CUDA only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detector-stage", choices=("default", "full"), default="default",
                   help="default: what `explain` runs without weights (bicubic, no classifier); "
                        "full: random-weight RRDBNet x4 + DenseNet121 + Grad-CAM (the seed's stage, for latency)")
    p.add_argument("--model-answers", action="store_true",
                   help="let the model's own answers open branches (default: an oracle does, see docs)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for READMEs)")
    p.add_argument("--json-out", metavar="FILE", help="write machine, model, settings and every run as JSON")
    p.set_defaults(func=cmd_bench)
