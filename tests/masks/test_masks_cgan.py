"""The pix2pix C-GAN: architecture, training to a held-out IoU, checkpoints, resume."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from masks import MaskPredictor
from masks.config import ModelConfig, TrainConfig
from masks.patchgan import PatchDiscriminator
from masks.synthetic import make_samples, write_dataset
from masks.train import mean_iou, train
from masks.unet import UnetGenerator, init_weights



def test_unet_128_has_seven_downsamplings_and_skip_shapes() -> None:
    g = UnetGenerator(ModelConfig(ngf=4, ndf=4))
    downs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    ups = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(downs) == 7 and len(ups) == 7
    assert sum(isinstance(m, torch.nn.Dropout) for m in g.modules()) == 2  # the two innermost ngf*8 blocks
    with torch.no_grad():
        out = g.eval()(torch.zeros(2, 3, 128, 128))
    assert out.shape == (2, 1, 128, 128)
    assert float(out.min()) >= 0 and float(out.max()) <= 1  # sigmoid


def test_patchgan_is_70x70_on_pairs() -> None:
    d = PatchDiscriminator(ModelConfig(ngf=4, ndf=4))
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 16, 32, 1] and convs[0].in_channels == 4
    assert all(c.kernel_size == (4, 4) for c in convs)
    # Receptive field of k4 s2,s2,s2,s1,s1: 1 + 3*(1+1+2+4+8)... computed backwards = 70.
    rf = 1
    for c in reversed(convs):
        rf = (rf - 1) * c.stride[0] + c.kernel_size[0]
    assert rf == 70
    assert d(torch.zeros(1, 3, 128, 128), torch.zeros(1, 1, 128, 128)).shape == (1, 1, 14, 14)


def test_init_is_normal_002() -> None:
    torch.manual_seed(0)
    g = UnetGenerator(ModelConfig(ngf=16, ndf=16))
    init_weights(g)
    w = torch.cat([m.weight.detach().flatten() for m in g.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(w.std()) - 0.02) < 0.002 and abs(float(w.mean())) < 0.002


def test_short_training_reaches_iou_08_on_held_out(trained, quick) -> None:
    result, out, log = trained
    assert result.n_val >= 8 and result.last_epoch == quick.epochs
    assert result.final_iou >= 0.8, log
    assert "held-out IoU" in log and log.count("epoch ") >= quick.epochs
    # And on images never seen in training or checkpoint selection, through the public API.
    fresh = make_samples(12, seed=99, style="salient")
    pred = MaskPredictor.from_checkpoint(out / "last.safetensors").predict([img for img, _ in fresh])
    assert all(r.method == "cgan" and r.mask.shape == (128, 128) and r.mask.dtype == bool for r in pred)
    assert mean_iou(np.stack([r.mask for r in pred]), np.stack([m for _, m in fresh])) >= 0.8


def test_checkpoint_files_describe_the_model(trained) -> None:
    result, out, _ = trained
    meta = json.loads((out / "best.json").read_text())
    assert meta["model"]["ngf"] == 8 and meta["model"]["size"] == 128
    assert meta["best_iou"] == pytest.approx(result.best_iou)
    assert len(meta["history"]) == meta["epoch"]
    assert any(k.startswith("generator.") for k in load_file(str(out / "best.safetensors")))


def test_reloaded_model_gives_identical_masks(trained) -> None:
    _, out, _ = trained
    images = [img.resize((96, 80)) for img, _ in make_samples(5, seed=7, style="salient")]
    a = MaskPredictor.from_checkpoint(out).predict(images)
    b = MaskPredictor.from_checkpoint(out / "best.json").predict(images)
    assert all(r.mask.shape == (80, 96) for r in a)  # back at the input's size
    for x, y in zip(a, b):
        assert np.array_equal(x.mask, y.mask)
    # batching must not change the answer (eval-mode BatchNorm)
    one_by_one = [MaskPredictor.from_checkpoint(out, batch_size=1).predict([im])[0].mask for im in images]
    assert all(np.array_equal(x.mask, y) for x, y in zip(a, one_by_one))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("tiny") / "data", 6, seed=1, style="salient")


def test_resume_continues_from_saved_epoch_and_matches_uninterrupted(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(model=ModelConfig(ngf=4, ndf=4), epochs=3, batch_size=2, lr=2e-3, seed=5, threads=1)
    full = train(tiny_dir, tmp_path / "full", cfg, progress=False, out=io.StringIO())
    part = train(tiny_dir, tmp_path / "part", replace(cfg, epochs=2), progress=False, out=io.StringIO())
    assert part.last_epoch == 2
    log = io.StringIO()
    resumed = train(tiny_dir, tmp_path / "part", cfg, resume=True, progress=False, out=log)
    assert "resuming from epoch 2" in log.getvalue()
    assert (resumed.first_epoch, resumed.last_epoch) == (3, 3)
    assert len(resumed.history) == 3 and resumed.history[:2] == part.history
    untimed = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert untimed(resumed.history) == untimed(full.history)  # the same losses, epoch by epoch
    a, b = load_file(str(tmp_path / "full" / "last.safetensors")), load_file(str(tmp_path / "part" / "last.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from an uninterrupted one"


def test_resume_without_checkpoint_and_overwrite_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    from explainer.errors import UsageError

    cfg = TrainConfig(model=ModelConfig(ngf=4, ndf=4), epochs=1, batch_size=2, threads=1)
    with pytest.raises(UsageError, match="nothing to resume"):
        train(tiny_dir, tmp_path / "none", cfg, resume=True, progress=False, out=io.StringIO())
    train(tiny_dir, tmp_path / "run", cfg, progress=False, out=io.StringIO())
    with pytest.raises(UsageError, match="--resume"):
        train(tiny_dir, tmp_path / "run", cfg, progress=False, out=io.StringIO())


@pytest.mark.slow
def test_fuller_training_with_pix2pix_defaults(tmp_path: Path) -> None:
    # pix2pix's own lr (2e-4) and a wider net on the harder 'random' colours.
    data = write_dataset(tmp_path / "data", 60, seed=11, style="random")
    cfg = TrainConfig(model=ModelConfig(ngf=32, ndf=32), epochs=60, batch_size=4, seed=0, threads=1)
    result = train(data, tmp_path / "out", cfg, progress=False, out=io.StringIO())
    assert result.best_iou >= 0.8
