"""``explain train features`` and ``explain eval features`` (seeds 002 and 004, UnivFD).

Registered by ``explainer/cli/main.py`` next to the CNN detector's commands.
Progress on stderr, results on stdout; the tables and figures go to ``--out``.
"""

from __future__ import annotations

import argparse
import json

from explainer.errors import UsageError

DEFAULT_BACKBONE = "clip-vit-b32"


def _list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("empty list")
    return items


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be between 0 and 1")
    return value


def _features_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transform", default="none",
                   help="applied to the training images: none, blur:SIGMA, jitter:S, jpeg:Q, or joined with + (default none)")
    p.add_argument("--attribution", action="store_true",
                   help="N-way source attribution: one folder per source (REAL, GAN, DIFFUSION, ...) instead of REAL/FAKE")
    p.add_argument("--test-fraction", type=_fraction, default=0.2, help="held out when DATA has no test split (default 0.2)")
    p.add_argument("--cache-dir", default="runs/feature-cache", help="feature cache folder; 'none' to disable (default runs/feature-cache)")
    p.add_argument("--batch-size", type=_positive, default=32, help="images per backbone forward pass (default 32)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=_positive, default=None, help="CPU threads for torch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _backbone_help(multiple: bool) -> str:
    from detectors.features.backbones import ALIASES

    what = "repeat or join with ',' for a grid; join with '+' to concatenate" if multiple else "join with '+' to concatenate"
    return (f"{', '.join(ALIASES)}, dino-resnet50=WEIGHTS, a Hugging Face id or folder, or timm:NAME=WEIGHTS "
            f"({what}; default {DEFAULT_BACKBONE})")


def register_train(subparsers: argparse._SubParsersAction) -> None:
    from detectors.features.heads import HEADS

    p = subparsers.add_parser("features", help="a classical head on frozen foundation-model features (seeds 002, 004)")
    p.add_argument("data_dir", metavar="DATA", help="CIFAKE-layout folder (or a folder per source with --attribution)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=_backbone_help(False))
    p.add_argument("--head", default="logreg", choices=list(HEADS), help="scikit-learn head (default logreg, the linear probe)")
    p.add_argument("--reduce", default="none", help="none, pca:K or ae:K (autoencoder) before the head (default none)")
    p.add_argument("--out", default="runs/features", help="head folder to write (default runs/features)")
    _features_options(p)
    p.set_defaults(func=run_train_features)


def register_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "features", help="grid of backbones x heads x reductions; --robustness transform matrix; --cross dataset matrix")
    p.add_argument("data_dirs", nargs="+", metavar="DATA", help="dataset folder (several with --cross)")
    p.add_argument("--backbone", action="append", type=_list, help=_backbone_help(True))
    p.add_argument("--head", action="append", type=_list, help="heads, comma-separated or repeated (default logreg); 'all' for every head")
    p.add_argument("--reduce", action="append", type=_list, help="reductions: none, pca:K, ae:K (default none)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--robustness", action="store_true", help="train x test transform matrix (seed 002)")
    mode.add_argument("--cross", action="store_true", help="train on each DATA, test on every other")
    p.add_argument("--train-transforms", type=_list, default=None, help="with --robustness (default none,blur:1,jitter:0.4,jpeg:75)")
    p.add_argument("--test-transforms", type=_list, default=None, help="with --robustness (default: the train transforms)")
    p.add_argument("--out", default="runs/features-eval", help="folder for the tables and figures (default runs/features-eval)")
    p.add_argument("--no-plots", action="store_true", help="tables only (t-SNE is the slow part)")
    _features_options(p)
    p.set_defaults(func=run_eval_features)


def _setup(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available on this machine")


def _cache(args: argparse.Namespace) -> str | None:
    return None if args.cache_dir.lower() == "none" else args.cache_dir


def run_train_features(args: argparse.Namespace) -> int:
    from detectors.features.metrics import fmt
    from detectors.features.train import TrainFeaturesConfig, train_features

    _setup(args)
    result = train_features(TrainFeaturesConfig(
        backbone=args.backbone, transform=args.transform, cache_dir=_cache(args), batch_size=args.batch_size,
        device=args.device, seed=args.seed, progress=not args.no_progress, data_dir=args.data_dir, out_dir=args.out,
        head=args.head, reduction=args.reduce, attribution=args.attribution, test_fraction=args.test_fraction,
    ))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    m = result["metrics"]
    print(f"feature head: {result['head_dir']} ({result['backbone']} + {result['head']}, reduction {result['reduction']}, "
          f"{result['n_train']} train / {result['n_test']} test)")
    print(f"test accuracy {fmt(m['accuracy'])}, AUC {fmt(m['roc_auc'])}, AP {fmt(m['ap'])}, F1 {fmt(m['f1'])}; "
          f"train accuracy {fmt(result['train_accuracy'])}")
    return 0


def _flat(values: list[list[str]] | None, default: list[str]) -> list[str]:
    out = [v for group in values or [] for v in group]
    return out or default


def run_eval_features(args: argparse.Namespace) -> int:
    from rich.console import Console

    from detectors.features.evaluate import EvalFeaturesConfig, run_cross, run_grid, run_robustness
    from detectors.features.heads import HEADS
    from detectors.features.transforms import DEFAULT_ROBUSTNESS

    _setup(args)
    heads = _flat(args.head, ["logreg"])
    if "all" in heads:
        heads = list(HEADS)
    cfg = EvalFeaturesConfig(
        backbone="", transform=args.transform, cache_dir=_cache(args), batch_size=args.batch_size, device=args.device,
        seed=args.seed, progress=not args.no_progress, data_dirs=args.data_dirs,
        backbones=_flat(args.backbone, [DEFAULT_BACKBONE]), heads=heads, reductions=_flat(args.reduce, ["none"]),
        out_dir=args.out, attribution=args.attribution, test_fraction=args.test_fraction, plots=not args.no_plots,
    )
    if (args.train_transforms or args.test_transforms) and not args.robustness:
        raise UsageError("--train-transforms and --test-transforms go with --robustness")
    if args.robustness:
        train_t = args.train_transforms or list(DEFAULT_ROBUSTNESS)
        record = run_robustness(cfg, train_t, args.test_transforms or train_t)
    elif args.cross:
        record = run_cross(cfg)
    else:
        record = run_grid(cfg)
    table = record.pop("table")
    if args.json:
        print(json.dumps(record, indent=2, default=float))
        return 0
    Console(highlight=False).print(table.rich())
    if table.footer:
        print(table.footer)
    print(f"tables and figures: {args.out}")
    return 0
