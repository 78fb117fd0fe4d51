"""`explain train masks DATA_DIR`: train the foreground-mask C-GAN."""

from __future__ import annotations

import argparse


def register_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "masks",
        help="train the foreground-mask C-GAN (pix2pix) on images/ + masks/",
        description="Train a pix2pix C-GAN that maps a 128x128 image to its foreground mask. "
        "DATA_DIR holds images/NAME.png and masks/NAME.png (same stem; see docs/masks.md).",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder with images/ and masks/")
    p.add_argument("--out", default="runs/masks", help="checkpoint folder (best.* and last.*; default: %(default)s)")
    p.add_argument("--epochs", type=int, default=200, help="total epochs, counting resumed ones (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="default: %(default)s")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--lambda-l1", type=float, default=100.0, help="weight of the L1 term (default: %(default)s)")
    p.add_argument("--ngf", type=int, default=64, help="generator width (default: %(default)s)")
    p.add_argument("--ndf", type=int, default=64, help="discriminator width (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held-out share for IoU (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.add_argument("--no-augment", action="store_true", help="turn off flips, affine and colour jitter")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.* up to --epochs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from explainer.errors import UsageError

    if args.epochs < 1 or args.batch_size < 1:
        raise UsageError("--epochs and --batch-size must be at least 1")
    if not 0 < args.val_fraction < 1:
        raise UsageError("--val-fraction must be between 0 and 1")
    from masks.config import ModelConfig, TrainConfig
    from masks.train import train

    try:
        model = ModelConfig(ngf=args.ngf, ndf=args.ndf)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    config = TrainConfig(
        model=model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lambda_l1=args.lambda_l1,
        val_fraction=args.val_fraction, seed=args.seed, augment=not args.no_augment, device=args.device,
        threads=args.threads,
    )
    train(args.data_dir, args.out, config, resume=args.resume, progress=not args.no_progress)
    return 0
