"""Training the pix2pix mask C-GAN: adversarial + lambda * L1, Adam, held-out IoU each epoch."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from explainer.errors import RuntimeFailure, UsageError
from explainer.outputs.names import printable
from masks import checkpoint as ckpt
from masks.config import TrainConfig
from masks.data import Augment, PairSet, UnreadableImage, find_pairs, load_pair, split_indices
from masks.patchgan import PatchDiscriminator
from masks.unet import UnetGenerator, init_weights


@dataclass
class TrainResult:
    out_dir: Path
    first_epoch: int  # first epoch run in this call (1-based); > last_epoch if nothing was left to run
    last_epoch: int
    final_iou: float  # held-out IoU after the last epoch
    best_iou: float
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch, all epochs so far
    n_train: int = 0
    n_val: int = 0


def mean_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over images of |pred & truth| / |pred | truth| (1.0 when both are empty). Arrays N x H x W bool."""
    inter = (pred & truth).reshape(len(pred), -1).sum(1)
    union = (pred | truth).reshape(len(pred), -1).sum(1)
    return float(np.mean(np.where(union == 0, 1.0, inter / np.maximum(union, 1))))


@torch.no_grad()
def evaluate(generator: UnetGenerator, data: PairSet, device: str, batch_size: int = 16) -> float:
    was_training = generator.training
    generator.eval()
    preds = []
    for x, _ in data.batches(batch_size, None, shuffle=False):
        preds.append((generator.probability(x.to(device)) > 0.5)[:, 0].cpu().numpy())
    generator.train(was_training)
    return mean_iou(np.concatenate(preds), np.stack(data.masks))


def _epoch_seed(seed: int, epoch: int) -> int:
    # Each epoch's randomness depends only on (seed, epoch), so a resumed run
    # replays exactly what an uninterrupted one would have done.
    return (seed * 1_000_003 + epoch * 7919) % (2**63)


def _load_sets(data_dir: Path, config: TrainConfig, log: TextIO) -> tuple[PairSet, PairSet]:
    found = find_pairs(data_dir)
    if found.unmasked_images:
        print(f"note: {len(found.unmasked_images)} image(s) without a mask are not used "
              f"(first: {found.unmasked_images[0].name})", file=sys.stderr)
    size = config.model.size
    loaded = []
    for image_path, mask_path in found.pairs:
        try:
            loaded.append(load_pair(image_path, mask_path, size))
        except UnreadableImage as exc:  # one bad file (a bomb, a truncated download) must not end the run
            print(f"warning: skipping {printable(str(exc))}", file=sys.stderr)
    if len(loaded) < len(found.pairs):
        print(f"note: {len(found.pairs) - len(loaded)} of {len(found.pairs)} pair(s) skipped", file=sys.stderr)
    train_idx, val_idx = split_indices(len(loaded), config.val_fraction, config.seed)
    augment = Augment() if config.augment else None
    train_set = PairSet([loaded[i][0] for i in train_idx], [loaded[i][1] for i in train_idx], augment)
    val_set = PairSet([loaded[i][0] for i in val_idx], [loaded[i][1] for i in val_idx], None)
    return train_set, val_set


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    resume: bool = False,
    out: TextIO | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or, with resume, continue) a mask C-GAN on DATA_DIR, writing OUT/best.* and OUT/last.*.

    Per-epoch results go to ``out`` (stdout by default); the progress bar to stderr.
    """
    out = sys.stdout if out is None else out
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if config.threads:
        torch.set_num_threads(config.threads)
    last_stem, best_stem = out_dir / ckpt.LAST, out_dir / ckpt.BEST
    device = config.device

    meta: dict[str, Any] = {}
    if resume:
        stem = ckpt.resolve(last_stem) if ckpt.part(last_stem, ".json").exists() else None
        if stem is None:
            raise UsageError(f"{out_dir}: nothing to resume (no {ckpt.LAST}.json there)")
        generator, discriminator, meta = ckpt.load_models(stem, device, with_discriminator=True)
        # The run's identity (model, split, seed) comes from the checkpoint; only the epoch budget is new.
        saved = meta.get("train", {})
        for key, kinds in (("seed", int), ("batch_size", int), ("val_fraction", float), ("lambda_l1", float)):
            if key in saved and (not isinstance(saved[key], (int, float) if kinds is float else int)
                                 or isinstance(saved[key], bool)):
                raise UsageError(f"{ckpt.part(stem, '.json')}: train.{key}: wrong type ({type(saved[key]).__name__})")
        config = replace(config, model=generator.config, seed=saved.get("seed", config.seed),
                         val_fraction=saved.get("val_fraction", config.val_fraction),
                         batch_size=saved.get("batch_size", config.batch_size),
                         lambda_l1=saved.get("lambda_l1", config.lambda_l1))
    else:
        if ckpt.part(last_stem, ".json").exists():
            raise UsageError(f"{out_dir}: already holds a mask checkpoint; pass --resume to continue it or pick another --out")
        torch.manual_seed(config.seed)
        generator, discriminator = UnetGenerator(config.model), PatchDiscriminator(config.model)
        init_weights(generator)
        init_weights(discriminator)
        generator.to(device)
        discriminator.to(device)
    assert discriminator is not None

    train_set, val_set = _load_sets(data_dir, config, out)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    start = 1
    history: list[dict[str, float]] = list(meta.get("history", []))
    best_iou = float(meta.get("best_iou", -1.0))
    if resume:
        state = ckpt.load_optim_state(last_stem)
        try:
            opt_g.load_state_dict(state["generator"])
            opt_d.load_state_dict(state["discriminator"])
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"{ckpt.part(last_stem, '.optim.pt')}: does not match the model "
                             f"({' '.join(str(exc).split())[:200]})") from None
        if not isinstance(meta.get("epoch"), int) or isinstance(meta.get("epoch"), bool) or meta["epoch"] < 0:
            raise UsageError(f"{ckpt.part(last_stem, '.json')}: epoch: must be a whole number, not {meta.get('epoch')!r}")
        start = meta["epoch"] + 1
        print(f"resuming from epoch {meta['epoch']} in {out_dir} (best held-out IoU {best_iou:.3f})", file=out)

    print(f"training mask C-GAN: {len(train_set)} train / {len(val_set)} held-out pairs, "
          f"ngf={config.model.ngf} ndf={config.model.ndf}, epochs {start}..{config.epochs}", file=out)
    bce, l1 = nn.BCEWithLogitsLoss(), nn.L1Loss()
    n_batches = math.ceil(len(train_set) / config.batch_size)
    console = Console(stderr=True)
    bar = Progress(TextColumn("[bold]masks[/] epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console,
                   disable=not progress, transient=True)
    generator.train()
    discriminator.train()
    with bar:
        task = bar.add_task("train", total=max(0, config.epochs - start + 1) * n_batches, epoch=start, info="")
        for epoch in range(start, config.epochs + 1):
            t0 = time.perf_counter()
            torch.manual_seed(_epoch_seed(config.seed, epoch))  # dropout
            g = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch) + 1)  # order + augmentation
            sums = {"loss_d": 0.0, "loss_g_gan": 0.0, "loss_l1": 0.0}
            for x, y in train_set.batches(config.batch_size, g, shuffle=True):
                x, y = x.to(device), generator.from_unit(y.to(device))
                fake = generator(x)
                # D: real pairs -> 1, generated pairs -> 0 (halved, as in pix2pix, to slow D down).
                opt_d.zero_grad(set_to_none=True)
                pred_fake = discriminator(x, fake.detach())
                pred_real = discriminator(x, y)
                loss_d = 0.5 * (bce(pred_fake, torch.zeros_like(pred_fake)) + bce(pred_real, torch.ones_like(pred_real)))
                loss_d.backward()
                opt_d.step()
                # G: fool D, and stay close to the annotation.
                opt_g.zero_grad(set_to_none=True)
                pred_fake = discriminator(x, fake)
                loss_gan = bce(pred_fake, torch.ones_like(pred_fake))
                loss_l1 = l1(fake, y)
                (loss_gan + config.lambda_l1 * loss_l1).backward()
                opt_g.step()
                for k, v in (("loss_d", loss_d), ("loss_g_gan", loss_gan), ("loss_l1", loss_l1)):
                    sums[k] += v.item()
                if not math.isfinite(loss_d.item() + loss_gan.item() + loss_l1.item()):
                    raise RuntimeFailure(f"mask C-GAN training diverged at epoch {epoch} (loss is not finite)")
                bar.update(task, advance=1, epoch=f"{epoch}/{config.epochs}",
                           info=f"L1 {loss_l1.item():.4f}")
            iou = evaluate(generator, val_set, device, config.batch_size)
            row = {"epoch": epoch, **{k: v / n_batches for k, v in sums.items()}, "val_iou": iou,
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            improved = iou > best_iou
            best_iou = max(best_iou, iou)
            meta = {"epoch": epoch, "val_iou": iou, "best_iou": best_iou, "history": history,
                    "n_train": len(train_set), "n_val": len(val_set), "train": config.to_dict()}
            ckpt.save_checkpoint(last_stem, generator, discriminator, meta,
                                 {"generator": opt_g.state_dict(), "discriminator": opt_d.state_dict()})
            if improved:
                ckpt.save_checkpoint(best_stem, generator, None, meta)
            print(f"epoch {epoch}/{config.epochs}  loss_D {row['loss_d']:.3f}  loss_G_gan {row['loss_g_gan']:.3f}  "
                  f"L1 {row['loss_l1']:.4f}  held-out IoU {iou:.3f}{'  (best)' if improved else ''}", file=out)

    final_iou = history[-1]["val_iou"] if history else float("nan")
    last_epoch = int(history[-1]["epoch"]) if history else 0
    if start > config.epochs:
        print(f"nothing to do: the checkpoint is already at epoch {last_epoch} of {config.epochs}", file=out)
    print(f"done: epoch {last_epoch}, held-out IoU {final_iou:.3f}, best {best_iou:.3f}; "
          f"checkpoint {best_stem}.safetensors", file=out)
    return TrainResult(out_dir, start, last_epoch, final_iou, best_iou, history, len(train_set), len(val_set))
