"""``explain train detector``: the recipe that learns a faint generator trace and stays robust.

What it does, and why (measured on planted-trace data, see the README):

- **Validation split** (``--val-fraction``, default 10% of each class, seeded)
  held out of the training folder; the epoch with the best validation loss (or
  AUC, ``--select-by``) is what ``detector.safetensors`` holds, and training
  stops after ``--patience`` epochs without improvement.
- **Adversarial training that hardens instead of erasing.** From the second
  epoch on, every batch is trained on its clean images *and* their FGSM copies
  (``--adv-weight`` mixes the two losses). The attack perturbs the 32-px image
  explain is given, through the upscale (:mod:`detectors.pipeline`), and the
  adversarial half is normalised with its own batch statistics, which are then
  discarded (``--adv-batchnorm batch``, :class:`~detectors.pipeline.batchnorm_stats_kept`),
  or with BatchNorm in eval mode (``running``, :class:`~detectors.pipeline.frozen_batchnorm`):
  either way the statistics the deployed model normalises with are those of
  clean images only. Measured on planted traces (tiny_cnn, 10 epochs, 1/255):
  ``batch`` 0.958 clean / 0.70 under FGSM held out, ``running`` 0.942 / 0.44. The first version trained whole epochs on FGSM images of the
  128-px upscale in train-mode BatchNorm: their statistics (up to 246x the clean
  variance in the trace-detecting channels) ended in the checkpoint and the
  model sat at chance although its weights had learned the trace.
- **RGB that learns**: each image's mean colour removed inside the classifier
  (``input_norm=image_mean``), AdamW with a linear warm-up over the first epoch
  and a cosine decay (``--lr 1e-3``).
- **Augmentations that keep traces**: flips and shifts at native resolution by
  default; blur, JPEG and resizing only when asked (:mod:`detectors.augment`).

Every hyperparameter truly used is written to ``detector.json``; ``--resume``
continues from ``last.safetensors`` and ``optimizer.pt`` with the recorded
hyperparameters, and each epoch draws its shuffling, augmentation and FGSM
noise from a generator seeded by (seed, epoch), so a resumed run follows the
same path as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from detectors.augment import DEFAULT_AUGMENT, augment, parse_augment
from detectors.checkpoint import read_torch, write_json, write_safetensors, write_torch
from detectors.classifier import (
    CHECKPOINT_FORMAT,
    CONFIG_NAME,
    OPTIMIZER_NAME,
    WEIGHTS_NAME,
    ClassifierConfig,
    build_classifier,
    check_sizes,
    load_classifier,
    read_detector_meta,
    save_classifier,
)
from detectors.data import has_split, list_split, load_split, validation_split
from detectors.evaluate import predict
from detectors.fgsm import fgsm
from detectors.metrics import binary_metrics
from detectors.pipeline import LRPipeline, batchnorm_stats_kept, frozen_batchnorm
from detectors.progress import make_progress, note
from detectors.sr.load import load_sr
from explainer.errors import UsageError

LAST_WEIGHTS = "last.safetensors"
# The default training budget, on the 32-px input. Seed 000's 8/255 is larger than
# the traces a detector has to find (a few grey levels in a small patch): an
# attacker with that budget can erase or forge them, so training against it
# teaches the model to ignore them (measured on planted traces: chance, 0.50;
# at 2/255 learning stalled too, since a perturbation spread over the whole image
# outweighs a trace confined to a patch). 1/255 hardens what was learned; the
# seed000 recipe keeps 8/255 for data whose artifacts are stronger.
TRAIN_EPS = 1 / 255
SELECT_BY = ("val_loss", "val_auc")
# Hyperparameters a resumed run takes from detector.json, never from the command line.
FROZEN_ON_RESUME = (
    "backbone", "grayscale", "input_norm", "lr_size", "image_size", "pretrained_file", "sr_weights", "batch_size", "lr",
    "weight_decay", "warmup_epochs", "fgsm_eps", "adv_weight", "adv_start_epoch", "adv_batchnorm", "augment", "val_fraction",
    "select_by", "seed",
)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


@dataclass
class DetectorTrainConfig:
    data_dir: str
    out_dir: str = "runs/detector"
    backbone: str = "densenet121"
    grayscale: bool = False
    input_norm: str = "image_mean"
    pretrained_file: str | None = None
    sr_weights: str | None = None
    lr_size: int = 32
    image_size: int = 128
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    fgsm_eps: float = TRAIN_EPS  # 0 turns adversarial training off
    adv_weight: float = 0.5  # loss = (1 - w) * clean + w * adversarial
    adv_start_epoch: int = 2  # 0-based: the first epochs learn on clean images only
    adv_batchnorm: str = "batch"  # adversarial half normalised by its own ("batch") or the running ("running") statistics
    augment: tuple[str, ...] = DEFAULT_AUGMENT
    val_fraction: float = 0.1
    select_by: str = "val_loss"
    patience: int = 5  # epochs without a better validation score, once learning has started; 0 = never stop early
    seed: int = 0
    recipe: str | None = None
    stop_after_epochs: int | None = None  # end this invocation early (a time-limited job); --resume continues
    device: str = "cpu"
    resume: bool = False
    progress: bool = True
    explicit: set[str] = field(default_factory=set)  # options the user set (for resume notes)

    def check(self) -> None:
        if not 0.0 <= self.fgsm_eps <= 1.0:
            raise UsageError(f"--fgsm-eps {self.fgsm_eps}: must be in [0, 1] (pixel scale)")
        if not 0.0 <= self.adv_weight <= 1.0:
            raise UsageError(f"--adv-weight {self.adv_weight}: must be in [0, 1]")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr {self.lr}: must be a positive number")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise UsageError(f"--weight-decay {self.weight_decay}: must be >= 0")
        if self.adv_batchnorm not in ("batch", "running"):
            raise UsageError(f"--adv-batchnorm {self.adv_batchnorm}: expected batch or running")
        if self.select_by not in SELECT_BY:
            raise UsageError(f"--select-by {self.select_by}: expected one of {', '.join(SELECT_BY)}")
        if not (0 <= self.warmup_epochs <= 1000):
            raise UsageError(f"--warmup-epochs {self.warmup_epochs}: must be between 0 and 1000")
        if not (0 <= self.adv_start_epoch <= 100_000):
            raise UsageError(f"--adv-start-epoch {self.adv_start_epoch}: must be >= 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"--val-fraction {self.val_fraction}: must be between 0 and 1")
        if self.patience < 0:
            raise UsageError(f"--patience {self.patience}: must be >= 0")
        if self.batch_size < 2:
            raise UsageError(f"--batch-size {self.batch_size}: BatchNorm needs at least 2")
        try:
            self.augment = parse_augment(self.augment)
        except ValueError as exc:
            raise UsageError(f"--augment: {exc}") from None
        check_sizes(self.lr_size, self.image_size)

    def hyperparameters(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("out_dir", "device", "resume", "progress", "explicit", "stop_after_epochs"):
            d.pop(k)
        d["augment"] = list(self.augment)
        return d


def _schedule(cfg: DetectorTrainConfig, steps_per_epoch: int):
    """Linear warm-up over ``warmup_epochs``, then cosine decay to 0 at the last epoch."""
    warm = max(1, int(round(cfg.warmup_epochs * steps_per_epoch)))
    total = max(warm + 1, cfg.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / (total - warm))))

    return factor


def _resume_config(cfg: DetectorTrainConfig, out: Path) -> tuple[dict[str, Any], list[str]]:
    """Take the recorded hyperparameters; say which command-line values are ignored."""
    _, _, meta, _ = read_detector_meta(out)
    recorded = meta.get("hyperparameters")
    if not isinstance(recorded, dict):
        raise UsageError(f"{out / CONFIG_NAME}: no 'hyperparameters' record; cannot resume this run")
    ignored = []
    for key in FROZEN_ON_RESUME:
        if key not in recorded:
            raise UsageError(f"{out / CONFIG_NAME}: hyperparameters.{key} is missing; cannot resume this run")
        value = recorded[key]
        expected = type(getattr(DetectorTrainConfig(data_dir=""), key))
        allowed = {bool: (bool,), int: (int,), float: (int, float), str: (str,), tuple: (list,)}.get(expected, (str, type(None)))
        if key in ("pretrained_file", "sr_weights"):
            allowed = (str, type(None))
        if type(value) not in allowed or (expected is tuple and not all(isinstance(v, str) for v in value)):
            raise UsageError(f"{out / CONFIG_NAME}: hyperparameters.{key} has the wrong type ({type(value).__name__})")
        if expected is float:
            value = float(value)
        if expected is tuple:
            value = tuple(value)
        if key in cfg.explicit and value != getattr(cfg, key):
            ignored.append(f"--{key.replace('_', '-')} {getattr(cfg, key)} (the run uses {value})")
        setattr(cfg, key, value)
    if "recipe" in recorded:
        cfg.recipe = recorded["recipe"]
    if "patience" not in cfg.explicit and isinstance(recorded.get("patience"), int):
        cfg.patience = recorded["patience"]
    if "epochs" not in cfg.explicit and isinstance(recorded.get("epochs"), int):
        cfg.epochs = recorded["epochs"]
    try:
        cfg.check()
    except UsageError as exc:
        raise UsageError(f"{out / CONFIG_NAME}: recorded hyperparameters: {exc}") from None
    return meta, ignored


# Early stopping waits until the model has started to learn: on faint traces the
# first epochs often sit at chance (measured: 4 to 5 epochs) before the loss
# falls, and a patience counted from epoch 1 stopped such a run at chance.
LEARNING_STARTED_AUC = 0.6


def update_patience(best: dict, improved: bool, epoch: int, score: float, val_auc: float | None) -> dict:
    """The best-epoch record after one epoch; ``bad_epochs`` counts only once validation AUC
    has reached :data:`LEARNING_STARTED_AUC` (``started`` remembers that it has)."""
    started = bool(best.get("started")) or (val_auc is not None and val_auc >= LEARNING_STARTED_AUC)
    if improved:
        return {"epoch": epoch, "score": score, "bad_epochs": 0, "started": started}
    return {**best, "bad_epochs": best["bad_epochs"] + (1 if started else 0), "started": started}


def _bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, y)


@torch.no_grad()
def _score(pipeline: LRPipeline, x: torch.Tensor, y: torch.Tensor, batch: int, device: str) -> dict[str, Any]:
    pipeline.eval()
    logits = torch.cat([pipeline(x[i : i + batch].to(device).float().div(255)).cpu() for i in range(0, len(x), batch)])
    metrics = binary_metrics(y.numpy(), torch.sigmoid(logits).numpy())
    metrics["loss"] = float(_bce(logits, y))
    return metrics


def train_detector(cfg: DetectorTrainConfig) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    list_split(cfg.data_dir, "train")  # fail on a bad folder before building anything
    history: list[dict[str, Any]] = []
    ignored: list[str] = []
    if cfg.resume:
        meta, ignored = _resume_config(cfg, out)
        model, _ = load_classifier(out, cfg.device, weights_name=LAST_WEIGHTS)
        state = read_torch(out / OPTIMIZER_NAME)
        if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
            raise UsageError(f"{out / OPTIMIZER_NAME}: not an optimizer state written by explain train detector")
        start_epoch = state["epoch"]
        history = list(meta.get("history", [])) if isinstance(meta.get("history"), list) else []
        for line in ignored:
            note(f"--resume: ignored {line}")
    else:
        cfg.check()
        if (out / CONFIG_NAME).exists():
            raise UsageError(f"{out}: already holds a checkpoint; pass --resume or choose another --out")
        torch.manual_seed(cfg.seed)
        model = build_classifier(
            ClassifierConfig(cfg.backbone, cfg.grayscale, cfg.image_size, cfg.lr_size, cfg.pretrained_file, cfg.input_norm)
        ).to(cfg.device)
        state, start_epoch = None, 0
        if model.random_init:
            note(f"{cfg.backbone}: starting from random weights (no --pretrained-file given)")
    sr = load_sr(cfg.sr_weights, cfg.device)
    if sr.net is None:
        note("super-resolution: bicubic (no --sr-weights given)")
    pipeline = LRPipeline(model, sr).to(cfg.device)

    x_all, y_all = load_split(cfg.data_dir, "train", cfg.lr_size, warn=note)
    train_idx, val_idx = validation_split(y_all, cfg.val_fraction, cfg.seed)
    x_train, y_train = x_all[train_idx], y_all[train_idx]
    x_val, y_val = x_all[val_idx], y_all[val_idx]
    test = load_split(cfg.data_dir, "test", cfg.lr_size, warn=note) if has_split(cfg.data_dir, "test") else None
    n = len(y_train)
    note(f"train: {n} images ({n - int(y_train.sum())} real, {int(y_train.sum())} fake); validation: {len(y_val)}"
         + (f"; test: {len(test[1])}" if test is not None else "; no test split: no held-out score"))

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = max(1, n // cfg.batch_size + (1 if n % cfg.batch_size >= 2 else 0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, batches))
    best = {"epoch": 0, "score": None, "bad_epochs": 0}
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            best = {k: state["best"][k] for k in ("epoch", "score", "bad_epochs")}
            best["started"] = bool(state["best"].get("started", True))
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"{out / OPTIMIZER_NAME}: optimizer state does not fit the model ({type(exc).__name__})") from None

    progress = make_progress() if cfg.progress else None
    stopped_early = False
    if progress:
        progress.start()
    try:
        epoch = start_epoch
        while epoch < cfg.epochs:
            if cfg.patience and best["bad_epochs"] >= cfg.patience:
                stopped_early = True
                break
            if cfg.stop_after_epochs is not None and epoch - start_epoch >= cfg.stop_after_epochs:
                note(f"stopping after {cfg.stop_after_epochs} epoch(s) as asked; continue with --resume")
                break
            gen = _epoch_generator(cfg.seed, epoch)
            adversarial = cfg.fgsm_eps > 0 and cfg.adv_weight > 0 and epoch >= cfg.adv_start_epoch
            perm = torch.randperm(n, generator=gen)
            task = None
            if progress:
                kind = f"clean + FGSM eps={cfg.fgsm_eps:.4f}" if adversarial else "clean"
                task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs} ({kind})", total=batches, info="")
            sums = {"loss": 0.0, "clean": 0.0, "adv": 0.0}
            seen = 0
            pipeline.train()
            for b in range(batches):
                idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                if len(idx) < 2:  # BatchNorm cannot train on one sample
                    continue
                x = augment(x_train[idx], cfg.augment, gen).to(cfg.device).float().div_(255)
                y = y_train[idx].to(cfg.device)
                optimizer.zero_grad(set_to_none=True)
                clean_loss = _bce(pipeline(x), y)
                loss = clean_loss
                if adversarial:
                    # Two backward passes accumulate into one step: the running statistics are
                    # restored in place, which must not happen inside a graph still to be differentiated.
                    ((1 - cfg.adv_weight) * clean_loss).backward()
                    x_adv = fgsm(pipeline, x, y, eps=cfg.fgsm_eps, generator=gen)
                    with (batchnorm_stats_kept if cfg.adv_batchnorm == "batch" else frozen_batchnorm)(pipeline):
                        adv_loss = _bce(pipeline(x_adv), y)
                        (cfg.adv_weight * adv_loss).backward()
                    loss = (1 - cfg.adv_weight) * clean_loss.detach() + cfg.adv_weight * adv_loss.detach()
                    sums["adv"] += float(adv_loss.detach()) * len(idx)
                else:
                    clean_loss.backward()
                optimizer.step()
                scheduler.step()
                sums["loss"] += float(loss.detach()) * len(idx)
                sums["clean"] += float(clean_loss.detach()) * len(idx)
                seen += len(idx)
                if progress:
                    progress.update(task, advance=1, info=f"loss {sums['loss'] / seen:.4f}")
            val = _score(pipeline, x_val, y_val, max(cfg.batch_size, 64), cfg.device)
            record: dict[str, Any] = {
                "epoch": epoch + 1, "adversarial": adversarial, "lr_end": optimizer.param_groups[0]["lr"],
                "train_loss": sums["loss"] / max(seen, 1), "train_clean_loss": sums["clean"] / max(seen, 1),
                "val": val,
            }
            if adversarial:
                record["train_adv_loss"] = sums["adv"] / max(seen, 1)
            score = val["loss"] if cfg.select_by == "val_loss" else -(val["roc_auc"] if val["roc_auc"] is not None else 0.0)
            improved = best["score"] is None or score < best["score"] - 1e-6
            best = update_patience(best, improved, epoch + 1, score, val["roc_auc"])
            record["best_so_far"] = best["epoch"]
            history.append(record)
            if progress:
                progress.update(task, info=f"loss {record['train_loss']:.4f}, val loss {val['loss']:.4f}, "
                                           f"val acc {val['accuracy']:.3f}" + (" (best)" if improved else ""))
            _save(out, model, optimizer, scheduler, cfg, epoch + 1, history, best, improved)
            epoch += 1
    finally:
        if progress:
            progress.stop()

    # The kept model is the best epoch's; score it on the held-out test split, clean and attacked.
    best_model, _ = load_classifier(out, cfg.device)
    summary: dict[str, Any] = {"checkpoint": str(out), "epochs_run": len(history), "best_epoch": best["epoch"],
                               "stopped_early": stopped_early, "history": history, "sr_method": sr.method,
                               "ignored_on_resume": ignored}
    if test is not None:
        bp = LRPipeline(best_model, sr)
        clean = predict(bp, test[0], test[1], max(cfg.batch_size, 64), cfg.device)
        summary["test"] = binary_metrics(test[1].numpy(), clean)
        if cfg.fgsm_eps > 0:
            adv = predict(bp, test[0], test[1], max(cfg.batch_size, 64), cfg.device, fgsm_eps=cfg.fgsm_eps, seed=cfg.seed)
            summary["test_fgsm"] = binary_metrics(test[1].numpy(), adv)
    _finish_meta(out, best_model, cfg, history, best, stopped_early, summary)
    return summary


def _meta(cfg: DetectorTrainConfig, epoch: int, history: list, best: dict) -> dict[str, Any]:
    return {
        "epoch": epoch,  # epochs trained so far (last.safetensors)
        "best_epoch": best["epoch"],  # the epoch detector.safetensors holds
        "epochs": cfg.epochs,
        "sr_weights": cfg.sr_weights,
        "fgsm_eps": cfg.fgsm_eps,
        "attack_space": "lr",
        "seed": cfg.seed,
        "lr": cfg.lr,
        "hyperparameters": cfg.hyperparameters(),
        "optimizer": "AdamW",
        "schedule": "linear warm-up, cosine decay (per step)",
        "optimizer_file": OPTIMIZER_NAME,
        "last_weights": LAST_WEIGHTS,
        "history": history,
    }


def _save(out: Path, model, optimizer, scheduler, cfg: DetectorTrainConfig, epoch: int, history: list,
          best: dict, improved: bool) -> None:
    model.random_init = False  # saved after at least one epoch of training
    # Order matters for a kill between writes: weights first, then the state that points at them.
    save_classifier(out, model, _meta(cfg, epoch, history, best), weights_name=LAST_WEIGHTS)
    if improved:
        write_safetensors(out / WEIGHTS_NAME, model.state_dict())
    write_torch(out / OPTIMIZER_NAME, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                       "epoch": epoch, "best": dict(best)})


def _finish_meta(out: Path, model, cfg: DetectorTrainConfig, history: list, best: dict, stopped_early: bool,
                 summary: dict[str, Any]) -> None:
    meta = _meta(cfg, history[-1]["epoch"] if history else 0, history, best)
    meta["stopped_early"] = stopped_early
    for key in ("test", "test_fgsm"):
        if key in summary:
            meta[key] = summary[key]
    config = {**asdict(model.config), "pretrained_file": cfg.pretrained_file}
    write_json(out / CONFIG_NAME, {"format": CHECKPOINT_FORMAT, **config, "random_init": False, **meta})
