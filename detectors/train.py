"""``explain train detector`` and ``explain train sr``.

Both write weights as safetensors plus a JSON that says how to rebuild the
model, and keep the optimizer state (and epoch) in a weights_only-loadable
``.pt`` so ``--resume`` continues exactly where the last epoch ended. Each
epoch draws its shuffling and FGSM noise from a generator seeded by
(seed, epoch), so a resumed run follows the same path as an uninterrupted one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from detectors.checkpoint import load_strict, read_json, read_safetensors, read_torch, write_json, write_safetensors
from detectors.classifier import (
    CONFIG_NAME,
    OPTIMIZER_NAME,
    ClassifierConfig,
    build_classifier,
    load_classifier,
    save_classifier,
)
from detectors.data import SRPairs, has_split, list_split, load_split
from detectors.evaluate import predict, prepare_batch
from detectors.fgsm import DEFAULT_EPS, fgsm
from detectors.metrics import binary_metrics
from detectors.progress import make_progress, note
from detectors.sr.load import build_sr_net, load_sr, sr_scale
from explainer.errors import UsageError


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


# --------------------------------------------------------------------------- detector


@dataclass
class DetectorTrainConfig:
    data_dir: str
    out_dir: str = "runs/detector"
    backbone: str = "densenet121"
    grayscale: bool = False
    pretrained_file: str | None = None
    sr_weights: str | None = None
    lr_size: int = 32
    image_size: int = 128
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    fgsm_eps: float = DEFAULT_EPS  # 0 turns the adversarial epochs off
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    progress: bool = True


def train_detector(cfg: DetectorTrainConfig) -> dict[str, Any]:
    if not 0.0 <= cfg.fgsm_eps <= 1.0:
        raise UsageError(f"--fgsm-eps {cfg.fgsm_eps}: must be in [0, 1] (pixel scale)")
    out = Path(cfg.out_dir)
    list_split(cfg.data_dir, "train")  # fail on a bad folder before building anything
    torch.manual_seed(cfg.seed)
    history: list[dict[str, Any]] = []
    if cfg.resume:
        model, meta = load_classifier(out, cfg.device)
        state = read_torch(out / OPTIMIZER_NAME)
        start_epoch = int(meta.get("epoch", 0))
        history = list(meta.get("history", []))
        # The checkpoint, not the command line, decides the model and its data path.
        cfg.sr_weights = meta.get("sr_weights")
        cfg.fgsm_eps = float(meta.get("fgsm_eps", cfg.fgsm_eps))
        cfg.seed = int(meta.get("seed", cfg.seed))
    else:
        if (out / CONFIG_NAME).exists():
            raise UsageError(f"{out}: already holds a checkpoint; pass --resume or choose another --out")
        model = build_classifier(
            ClassifierConfig(cfg.backbone, cfg.grayscale, cfg.image_size, cfg.lr_size, cfg.pretrained_file)
        ).to(cfg.device)
        state, start_epoch = None, 0
        if model.random_init:
            note(f"{cfg.backbone}: starting from random weights (no --pretrained-file given)")
    mcfg = model.config
    sr = load_sr(cfg.sr_weights, cfg.device)
    if sr.net is None:
        note("super-resolution: bicubic (no --sr-weights given)")
    x_train, y_train = load_split(cfg.data_dir, "train", mcfg.lr_size)
    test = load_split(cfg.data_dir, "test", mcfg.lr_size) if has_split(cfg.data_dir, "test") else None
    n_fake = int(y_train.sum())
    note(f"train: {len(y_train)} images ({len(y_train) - n_fake} real, {n_fake} fake)"
         + (f"; test: {len(test[1])} images" if test is not None else "; no test split: no held-out score"))

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"{out / OPTIMIZER_NAME}: optimizer state does not fit the model ({type(exc).__name__})") from None

    n = len(y_train)
    batches = max(1, n // cfg.batch_size + (1 if n % cfg.batch_size >= 2 else 0))
    progress = make_progress() if cfg.progress else None
    if progress:
        progress.start()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            gen = _epoch_generator(cfg.seed, epoch)
            # Every other epoch trains on FGSM images: robustness without halving clean accuracy.
            adversarial = cfg.fgsm_eps > 0 and epoch % 2 == 1
            perm = torch.randperm(n, generator=gen)
            task = None
            if progress:
                kind = f"FGSM eps={cfg.fgsm_eps:.4f}" if adversarial else "clean"
                task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs} ({kind})", total=batches, info="")
            total_loss, seen = 0.0, 0
            model.train()
            for b in range(batches):
                idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                if len(idx) < 2:  # BatchNorm cannot train on one sample
                    continue
                x = prepare_batch(x_train[idx], sr, mcfg.image_size, cfg.device)
                y = y_train[idx].to(cfg.device)
                if adversarial:
                    x = fgsm(model, x, y, eps=cfg.fgsm_eps, generator=gen)
                loss = F.binary_cross_entropy_with_logits(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * len(idx)
                seen += len(idx)
                if progress:
                    progress.update(task, advance=1, info=f"loss {total_loss / seen:.4f}")
            record: dict[str, Any] = {"epoch": epoch + 1, "adversarial": adversarial, "train_loss": total_loss / max(seen, 1)}
            if test is not None:
                probs = predict(model, sr, test[0], test[1], max(cfg.batch_size, 64), cfg.device)
                record["test"] = binary_metrics(test[1].numpy(), probs)
                if progress:
                    progress.update(task, info=f"loss {record['train_loss']:.4f}, test acc {record['test']['accuracy']:.3f}")
            history.append(record)
            _save_detector(out, model, optimizer, cfg, epoch + 1, history)
    finally:
        if progress:
            progress.stop()
    return {"checkpoint": str(out), "epochs": cfg.epochs, "history": history, "sr_method": sr.method}


def _save_detector(out: Path, model, optimizer, cfg: DetectorTrainConfig, epoch: int, history: list) -> None:
    model.random_init = False  # saved after at least one epoch of training
    extra = {
        "epoch": epoch,
        "epochs": cfg.epochs,
        "sr_weights": cfg.sr_weights,
        "fgsm_eps": cfg.fgsm_eps,
        "seed": cfg.seed,
        "lr": cfg.lr,
        "optimizer_file": OPTIMIZER_NAME,
        "history": history,
    }
    save_classifier(out, model, extra)
    torch.save({"optimizer": optimizer.state_dict(), "epoch": epoch}, out / OPTIMIZER_NAME)


# --------------------------------------------------------------------------- super-resolution

SR_FORMAT = "explainer-sr/1"
SR_WEIGHTS = "sr.safetensors"
SR_CONFIG = "sr.json"
SR_OPTIMIZER = "sr_optimizer.pt"


@dataclass
class SRTrainConfig:
    hr_dir: str
    out_dir: str = "runs/sr"
    arch: str = "rrdbnet"
    weights: str | None = None  # start from released weights (recommended)
    num_block: int = 23  # RRDB blocks / SRVGG convs when starting from scratch
    epochs: int = 10
    batch_size: int = 8
    patch: int = 128
    lr: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    progress: bool = True


def train_sr(cfg: SRTrainConfig) -> dict[str, Any]:
    """Fine-tune on (bicubic-downscaled real image, real image) pairs with L1 loss.
    Perceptual and GAN losses (as in Real-ESRGAN) are not implemented."""
    out = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)
    history: list[dict[str, Any]] = []
    opt_state = None
    if cfg.resume:
        meta = read_json(out / SR_CONFIG)
        if meta.get("format") != SR_FORMAT:
            raise UsageError(f"{out / SR_CONFIG}: not an SR checkpoint description")
        arch, kwargs = meta["arch"], meta["kwargs"]
        net = build_sr_net(arch, kwargs)
        load_strict(net, read_safetensors(out / SR_WEIGHTS), out / SR_WEIGHTS, arch)
        opt_state = read_torch(out / SR_OPTIMIZER)
        start_epoch, history = int(meta["epoch"]), list(meta.get("history", []))
        cfg.seed = int(meta.get("seed", cfg.seed))
    else:
        if (out / SR_CONFIG).exists():
            raise UsageError(f"{out}: already holds an SR checkpoint; pass --resume or choose another --out")
        if cfg.weights:
            loaded = load_sr(cfg.weights)
            net, arch, kwargs = loaded.net, loaded.method, loaded.arch_kwargs
        else:
            arch = cfg.arch
            if arch == "rrdbnet":
                kwargs = dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=cfg.num_block, num_grow_ch=32)
            elif arch == "srvgg":
                kwargs = dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=cfg.num_block, upscale=4, act_type="prelu")
            else:
                raise UsageError(f"--arch {arch}: expected rrdbnet or srvgg")
            net = build_sr_net(arch, kwargs)
            note(f"{arch}: training from random weights (no --weights given); expect a long run")
        start_epoch = 0
    net = net.to(cfg.device)
    scale = sr_scale(arch, kwargs)
    data = SRPairs(cfg.hr_dir, cfg.patch, scale)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    if opt_state is not None:
        try:
            optimizer.load_state_dict(opt_state["optimizer"])
        except (KeyError, ValueError, TypeError) as exc:
            raise UsageError(f"{out / SR_OPTIMIZER}: optimizer state does not fit the model ({type(exc).__name__})") from None
    out.mkdir(parents=True, exist_ok=True)
    n = len(data)
    batches = (n + cfg.batch_size - 1) // cfg.batch_size
    progress = make_progress() if cfg.progress else None
    if progress:
        progress.start()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            rng = random.Random(cfg.seed * 100_003 + epoch)
            order = list(range(n))
            rng.shuffle(order)
            task = progress.add_task(f"SR epoch {epoch + 1}/{cfg.epochs}", total=batches, info="") if progress else None
            net.train()
            total, seen = 0.0, 0
            for b in range(batches):
                pairs = [data.pair(i, rng) for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
                lr_img = torch.stack([p[0] for p in pairs]).to(cfg.device)
                hr_img = torch.stack([p[1] for p in pairs]).to(cfg.device)
                loss = F.l1_loss(net(lr_img), hr_img)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(pairs)
                seen += len(pairs)
                if progress:
                    progress.update(task, advance=1, info=f"L1 {total / seen:.4f}")
            history.append({"epoch": epoch + 1, "l1": total / max(seen, 1)})
            write_safetensors(out / SR_WEIGHTS, net.state_dict())
            write_json(
                out / SR_CONFIG,
                {"format": SR_FORMAT, "arch": arch, "kwargs": kwargs, "scale": scale, "epoch": epoch + 1,
                 "epochs": cfg.epochs, "seed": cfg.seed, "lr": cfg.lr, "patch": cfg.patch, "history": history,
                 "loss": "l1", "init_weights": cfg.weights},
            )
            torch.save({"optimizer": optimizer.state_dict(), "epoch": epoch + 1}, out / SR_OPTIMIZER)
    finally:
        if progress:
            progress.stop()
    return {"checkpoint": str(out / SR_WEIGHTS), "arch": arch, "epochs": cfg.epochs, "history": history}
