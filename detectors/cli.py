"""``explain train sr|detector`` and ``explain eval detector``.

Registered by ``explainer/cli/main.py``; each sub-parser's ``func(args)`` returns an
exit code. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction

from explainer.errors import UsageError

# Same value as detectors.fgsm.DEFAULT_EPS; repeated so argument parsing does not import torch.
DEFAULT_EPS = 8 / 255


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
    p.add_argument("--backbone", default="densenet121", help="timm model name, or tiny_cnn (default: densenet121)")
    p.add_argument("--pretrained-file", help="local ImageNet weights for the backbone (else random init)")
    p.add_argument("--grayscale", action="store_true", help="classify luminance only")
    p.add_argument("--sr-weights", help="Real-ESRGAN .pth or our .safetensors (else bicubic)")
    p.add_argument("--lr-size", type=_positive, default=32, help="images are resized to this first (default 32)")
    p.add_argument("--image-size", type=_positive, default=128, help="classifier input after SR (default 128)")
    p.add_argument("--epochs", type=_positive, default=10)
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--fgsm-eps", type=_eps, default=DEFAULT_EPS, help="FGSM epsilon in [0,1] for every other epoch; 0 = off (default 8/255)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    _common(p)
    p.set_defaults(func=run_train_detector)


def register_eval(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("detector", help="accuracy, precision, recall, F1, ROC-AUC, AP; clean and under FGSM")
    p.add_argument("data_dir", metavar="DATA_DIR", help="CIFAKE-layout folder")
    p.add_argument("--checkpoint", required=True, help="folder, .safetensors or .json from 'explain train detector'")
    p.add_argument("--split", default="test", help="which split to score (default: test)")
    p.add_argument("--sr-weights", help="override the SR weights recorded in the checkpoint")
    p.add_argument("--fgsm-eps", type=_eps, default=None, help="FGSM epsilon (default: the training one); 0 = skip")
    p.add_argument("--batch-size", type=_positive, default=64)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(p)
    p.set_defaults(func=run_eval_detector)


def run_train_sr(args: argparse.Namespace) -> int:
    from detectors.train import SRTrainConfig, train_sr

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


def run_train_detector(args: argparse.Namespace) -> int:
    from detectors.train import DetectorTrainConfig, train_detector

    _setup(args)
    summary = train_detector(
        DetectorTrainConfig(
            data_dir=args.data_dir, out_dir=args.out, backbone=args.backbone, grayscale=args.grayscale,
            pretrained_file=args.pretrained_file, sr_weights=args.sr_weights, lr_size=args.lr_size,
            image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            weight_decay=args.weight_decay, fgsm_eps=args.fgsm_eps, seed=args.seed, device=args.device,
            resume=args.resume, progress=not args.no_progress,
        )
    )
    line = f"detector checkpoint: {summary['checkpoint']} ({summary['epochs']} epochs, SR {summary['sr_method']})"
    last = summary["history"][-1] if summary["history"] else {}
    if "test" in last:
        line += f"; test accuracy {last['test']['accuracy']:.4f}"
    print(line)
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def run_eval_detector(args: argparse.Namespace) -> int:
    from detectors.evaluate import EvalConfig, evaluate_detector
    from detectors.metrics import METRIC_NAMES

    _setup(args)
    result = evaluate_detector(
        EvalConfig(
            data_dir=args.data_dir, checkpoint=args.checkpoint, split=args.split, sr_weights=args.sr_weights,
            fgsm_eps=args.fgsm_eps, batch_size=args.batch_size, device=args.device, seed=args.seed,
            progress=not args.no_progress,
        )
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['split']}: {result['n']} images ({result['n_fake']} fake), SR {result['sr_method']}")
    columns = ["clean"] + (["fgsm"] if "fgsm" in result else [])
    header = f"{'metric':<10}" + "".join(
        f"{('clean' if c == 'clean' else 'FGSM ' + format(result['fgsm_eps'], '.4f')):>14}" for c in columns
    )
    print(header)
    for name in METRIC_NAMES:
        print(f"{name:<10}" + "".join(f"{_fmt(result[c][name]):>14}" for c in columns))
    return 0
