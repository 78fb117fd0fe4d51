"""``explain train sr``: fine-tune the x4 super-resolution net on real images (L1 loss).

Weights go to ``sr.safetensors``, the architecture and history to ``sr.json``,
the optimizer state to a weights_only-loadable ``sr_optimizer.pt``. A resumed
run rebuilds the net from ``sr.json``, which is validated like any shared file:
types, ranges and the size caps of :mod:`detectors.sr.load` before anything is
allocated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from detectors.checkpoint import load_strict, read_json, read_safetensors, read_torch, write_json, write_safetensors, write_torch
from detectors.data import SRPairs
from detectors.progress import make_progress, note
from detectors.sr.load import build_sr_net, check_sr_kwargs, load_sr, sr_scale
from explainer.errors import UsageError

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
        meta = read_sr_meta(out / SR_CONFIG)
        arch, kwargs = meta["arch"], meta["kwargs"]
        net = build_sr_net(arch, kwargs)
        load_strict(net, read_safetensors(out / SR_WEIGHTS), out / SR_WEIGHTS, arch)
        opt_state = read_torch(out / SR_OPTIMIZER)
        if not isinstance(opt_state, dict):
            raise UsageError(f"{out / SR_OPTIMIZER}: not an optimizer state written by explain train sr")
        start_epoch, history = meta["epoch"], meta["history"]
        # The run's own hyperparameters, not the command line's, so sr.json stays true.
        cfg.seed, cfg.lr, cfg.patch, cfg.weights = meta["seed"], meta["lr"], meta["patch"], meta["init_weights"]
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
                pairs = [data.pair(i, rng, warn=note) for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
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
            write_torch(out / SR_OPTIMIZER, {"optimizer": optimizer.state_dict(), "epoch": epoch + 1})
    finally:
        if progress:
            progress.stop()
    return {"checkpoint": str(out / SR_WEIGHTS), "arch": arch, "epochs": cfg.epochs, "history": history}


def read_sr_meta(path: Path) -> dict[str, Any]:
    """``sr.json`` with every field a resumed run uses checked; one line naming the key otherwise."""
    meta = read_json(path)
    if meta.get("format") != SR_FORMAT:
        raise UsageError(f"{path}: not an SR checkpoint description (format {str(meta.get('format'))[:40]!r})")
    arch = meta.get("arch")
    if arch not in ("rrdbnet", "srvgg"):
        raise UsageError(f"{path}: arch must be rrdbnet or srvgg, got {str(arch)[:40]!r}")
    kwargs = meta.get("kwargs")
    if not isinstance(kwargs, dict):
        raise UsageError(f"{path}: kwargs must be an object of constructor arguments")
    check_sr_kwargs(arch, kwargs, f"{path}: kwargs")

    def need(key: str, kind, ok=lambda v: True, what: str = "") -> None:
        value = meta.get(key)
        if kind is float:
            good = type(value) in (int, float) and ok(value)
        elif kind is int:
            good = type(value) is int and ok(value)
        else:
            good = isinstance(value, kind) and ok(value)
        if not good:
            raise UsageError(f"{path}: {key} must be {what or kind.__name__}, got {str(value)[:40]!r}")

    need("epoch", int, lambda v: v >= 0, "an integer >= 0")
    need("seed", int)
    need("lr", float, lambda v: 0 < v < 10, "a number in (0, 10)")
    need("patch", int, lambda v: 4 <= v <= 1024, "an integer in 4..1024")
    need("history", list)
    init = meta.get("init_weights")
    if init is not None and not isinstance(init, str):
        raise UsageError(f"{path}: init_weights must be a string or null")
    meta.setdefault("init_weights", None)
    return meta
