"""``explain train sr|detector`` and ``explain eval detector``.

Registered by ``explainer/cli/main.py``; each sub-parser's ``func(args)`` returns an
exit code. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction

from explainer.errors import UsageError


def _eps(text: str) -> float:
    """Accepts 0.03 or 8/255."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be in [0, 1] (pixel scale)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=_positive, default=None, help="CPU threads for torch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _setup(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device != "cpu" and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available on this machine")


def register_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sr", help="fine-tune the x4 super-resolution net on real images (L1 loss)")
    p.add_argument("hr_dir", metavar="HR_DIR", help="folder of real high-resolution images")
    p.add_argument("--out", default="runs/sr", help="checkpoint folder (default: runs/sr)")
    p.add_argument("--arch", choices=("rrdbnet", "srvgg"), default="rrdbnet")
    p.add_argument("--weights", help="start from these weights (e.g. RealESRGAN_x4plus.pth)")
    p.add_argument("--num-block", type=_positive, default=23, help="RRDB blocks (or SRVGG convs) when training from scratch")
    p.add_argument("--epochs", type=_positive, default=10)
    p.add_argument("--batch-size", type=_positive, default=8)
    p.add_argument("--patch", type=_positive, default=128, help="HR crop size (LR is patch/4)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    _common(p)
    p.set_defaults(func=run_train_sr)

    p = subparsers.add_parser("detector", help="train the real/fake classifier on a CIFAKE-layout folder")
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder with train/REAL, train/FAKE (and test/REAL, test/FAKE)")
    p.add_argument("--out", default="runs/detector", help="checkpoint folder (default: runs/detector)")
    p.add_argument("--recipe", help="named recipe (seed000-densenet121-fgsm, seed001-custom-cnn, ...; 'list' prints them) "
                   "or a recipe .yaml; explicit options override it")
    # Defaults are None so a recipe can fill them and --resume can tell what was given.
    p.add_argument("--backbone", default=None, help="timm architecture name, tiny_cnn, custom_cnn, tiny_vgg or "
                   "ensemble:A+B (default densenet121); hub and local-dir backbones are refused")
    p.add_argument("--pretrained-file", default=None, help="local ImageNet weights for the backbone (else random init)")
    p.add_argument("--grayscale", action="store_true", default=None, help="classify luminance only")
    p.add_argument("--input-norm", choices=("image_mean", "imagenet"), default=None,
                   help="image_mean: remove each image's mean colour (default); imagenet: fixed ImageNet mean/std")
    p.add_argument("--sr-weights", default=None, help="Real-ESRGAN .pth or our .safetensors (else bicubic)")
    p.add_argument("--lr-size", type=_positive, default=None, help="images are resized to this first (default 32)")
    p.add_argument("--image-size", type=_positive, default=None, help="classifier input after SR (default 128)")
    p.add_argument("--epochs", type=_positive, default=None, help="most epochs (default 10)")
    p.add_argument("--batch-size", type=_positive, default=None, help="default 32")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate, AdamW (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 1e-4)")
    p.add_argument("--warmup-epochs", type=float, default=None, help="linear warm-up, then cosine decay (default 1)")
    p.add_argument("--fgsm-eps", type=_eps, default=None,
                   help="FGSM budget on the 32-px input, in [0,1]; 0 = no adversarial training (default 1/255)")
    p.add_argument("--adv-weight", type=float, default=None, help="weight of the adversarial loss, rest clean (default 0.5)")
    p.add_argument("--adv-start-epoch", type=int, default=None, help="first adversarial epoch, 0-based (default 2)")
    p.add_argument("--adv-batchnorm", choices=("batch", "running"), default=None,
                   help="normalise the adversarial half with its own batch statistics, then discarded (default), or "
                        "the running ones; either way the running statistics come from clean images only")
    p.add_argument("--augment", default=None, help="comma list of flip,crop,blur,jpeg,resize or none (default flip,crop)")
    p.add_argument("--val-fraction", type=float, default=None, help="validation share of train/ (default 0.1)")
    p.add_argument("--select-by", choices=("val_loss", "val_auc"), default=None, help="best-epoch rule (default val_loss)")
    p.add_argument("--patience", type=int, default=None,
                   help="stop after this many epochs without improvement, counted once validation AUC reaches 0.6; "
                        "0 = never (default 5)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out with its recorded hyperparameters")
    p.add_argument("--stop-after-epochs", type=_positive, default=None,
                   help="end this invocation after N epochs (e.g. a time-limited job); --resume continues")
    _common(p)
    p.set_defaults(func=run_train_detector)


def register_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("detector", help="accuracy, precision, recall, F1, ROC-AUC, AP; clean and under FGSM")
    p.add_argument("data_dir", metavar="DATA_DIR", help="CIFAKE-layout folder")
    p.add_argument("--checkpoint", required=True, help="folder, .safetensors or .json from 'explain train detector'")
    p.add_argument("--split", default="test", help="which split to score (default: test)")
    p.add_argument("--sr-weights", help="override the SR weights recorded in the checkpoint")
    p.add_argument("--fgsm-eps", type=_eps, default=None, help="FGSM epsilon (default: the training one); 0 = skip")
    p.add_argument("--fgsm-sweep", default=None,
                   help="also score these budgets, e.g. 1/255,2/255 ('default': 0.5, 1, 2, 4 and 8 /255)")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="write roc.png, pr.png and confusion.png here (default: CHECKPOINT/eval-SPLIT); 'none' = no plots")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(p)
    p.set_defaults(func=run_eval_detector)


def run_train_sr(args: argparse.Namespace) -> int:
    from detectors.sr.train import SRTrainConfig, train_sr

    _setup(args)
    summary = train_sr(
        SRTrainConfig(
            hr_dir=args.hr_dir, out_dir=args.out, arch=args.arch, weights=args.weights, num_block=args.num_block,
            epochs=args.epochs, batch_size=args.batch_size, patch=args.patch, lr=args.lr, seed=args.seed,
            device=args.device, resume=args.resume, progress=not args.no_progress,
        )
    )
    last = summary["history"][-1]["l1"] if summary["history"] else float("nan")
    print(f"SR checkpoint: {summary['checkpoint']} ({summary['arch']}, {summary['epochs']} epochs, final L1 {last:.4f})")
    return 0


TRAIN_OPTIONS = (
    "backbone", "pretrained_file", "grayscale", "input_norm", "sr_weights", "lr_size", "image_size", "epochs",
    "batch_size", "lr", "weight_decay", "warmup_epochs", "fgsm_eps", "adv_weight", "adv_start_epoch", "adv_batchnorm", "augment",
    "val_fraction", "select_by", "patience",
)


def run_train_detector(args: argparse.Namespace) -> int:
    from detectors.recipes import load_recipe, recipe_names
    from detectors.train import DetectorTrainConfig, train_detector

    if args.recipe == "list":
        for name in recipe_names():
            print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in load_recipe(name).items()))
        return 0
    _setup(args)
    options = load_recipe(args.recipe) if args.recipe else {}
    explicit = {k for k in TRAIN_OPTIONS if getattr(args, k) is not None}
    options.update({k: getattr(args, k) for k in explicit})
    cfg = DetectorTrainConfig(data_dir=args.data_dir, out_dir=args.out, seed=args.seed, device=args.device,
                              resume=args.resume, progress=not args.no_progress, recipe=args.recipe, explicit=explicit,
                              stop_after_epochs=args.stop_after_epochs)
    for key, value in options.items():
        setattr(cfg, key, float(value) if isinstance(getattr(cfg, key), float) and type(value) is int else value)
    summary = train_detector(cfg)
    line = (f"detector checkpoint: {summary['checkpoint']} (best epoch {summary['best_epoch']} of "
            f"{summary['epochs_run']} run{', stopped early' if summary['stopped_early'] else ''}, SR {summary['sr_method']})")
    if "test" in summary:
        line += f"; test accuracy {summary['test']['accuracy']:.4f}"
    if "test_fgsm" in summary:
        line += f", under FGSM eps={cfg.fgsm_eps * 255:.3g}/255 {summary['test_fgsm']['accuracy']:.4f}"
    print(line)
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _sweep(text: str | None) -> tuple[float, ...]:
    from detectors.evaluate import DEFAULT_SWEEP

    if not text:
        return ()
    if text == "default":
        return DEFAULT_SWEEP
    try:
        return tuple(_eps(t) for t in text.split(",") if t.strip())
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"--fgsm-sweep: {exc}") from None


def run_eval_detector(args: argparse.Namespace) -> int:
    from pathlib import Path

    from detectors.evaluate import EvalConfig, evaluate_detector
    from detectors.metrics import CLASS_NAMES, METRIC_NAMES

    _setup(args)
    plots = args.plots
    if plots is None:
        ckpt = Path(args.checkpoint)
        plots = str((ckpt if ckpt.is_dir() else ckpt.parent) / f"eval-{args.split}")
    elif plots == "none":
        plots = None
    result = evaluate_detector(
        EvalConfig(
            data_dir=args.data_dir, checkpoint=args.checkpoint, split=args.split, sr_weights=args.sr_weights,
            fgsm_eps=args.fgsm_eps, fgsm_sweep=_sweep(args.fgsm_sweep), batch_size=args.batch_size,
            device=args.device, seed=args.seed, progress=not args.no_progress, plots_dir=plots,
        )
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['split']}: {result['n']} images ({result['n_fake']} fake), SR {result['sr_method']}, "
          f"attack on the {result['attack_space']}")
    columns = ["clean"] + (["fgsm"] if "fgsm" in result else [])
    header = f"{'metric':<10}" + "".join(
        f"{('clean' if c == 'clean' else 'FGSM ' + format(result['fgsm_eps'], '.4f')):>14}" for c in columns
    )
    print(header)
    for name in METRIC_NAMES:
        print(f"{name:<10}" + "".join(f"{_fmt(result[c][name]):>14}" for c in columns))
    print()
    print(f"{'class':<10}{'precision':>11}{'recall':>9}{'f1':>9}{'support':>9}   (clean)")
    for name in CLASS_NAMES:
        r = result["report"]["per_class"][name]
        print(f"{name:<10}{r['precision']:>11.4f}{r['recall']:>9.4f}{r['f1-score']:>9.4f}{r['support']:>9d}")
    (tn, fp), (fn, tp) = result["report"]["confusion_matrix"]
    print(f"confusion (rows true real/fake, columns predicted real/fake): [[{tn}, {fp}], [{fn}, {tp}]]")
    if "fgsm_sweep" in result:
        print()
        print(f"{'FGSM eps':<10}{'accuracy':>10}{'ROC-AUC':>10}")
        for row in result["fgsm_sweep"]:
            print(f"{format(row['eps_255'], '.3g') + '/255':<10}{row['accuracy']:>10.4f}{_fmt(row['roc_auc']):>10}")
    if "plots" in result:
        print(f"plots: {', '.join(result['plots'].values())}")
    return 0
