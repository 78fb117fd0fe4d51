"""Super-resolution: architecture facts, loading released-format weights, fallback, training."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

from detectors.sr.load import NO_WEIGHTS_REASON, load_sr
from detectors.sr.rrdbnet import RRDBNet
from detectors.sr.srvgg import SRVGGNetCompact
from explainer.cli import main
from explainer.errors import UsageError

RRDB_KEY = re.compile(r"^body\.(\d+)\.rdb([123])\.conv([1-5])\.(weight|bias)$")
TOP_LEVEL = {"conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def rrdbnet() -> RRDBNet:
    torch.manual_seed(0)
    return RRDBNet().eval()


def test_rrdbnet_x4_matches_release(rrdbnet):
    sd = rrdbnet.state_dict()
    assert n_params(rrdbnet) == 16_697_987
    assert len(sd) == 702
    body = [k for k in sd if k.startswith("body.")]
    assert len(body) == 23 * 3 * 5 * 2
    assert all(RRDB_KEY.match(k) for k in body)
    assert {int(RRDB_KEY.match(k).group(1)) for k in body} == set(range(23))
    assert {k.rsplit(".", 1)[0] for k in sd if not k.startswith("body.")} == TOP_LEVEL
    # Dense connectivity: conv_i sees num_feat + (i-1) * grow channels.
    assert [sd[f"body.0.rdb1.conv{i}.weight"].shape[1] for i in range(1, 6)] == [64, 96, 128, 160, 192]
    assert sd["conv_first.weight"].shape == (64, 3, 3, 3)


def test_rrdbnet_scale2_unshuffles_input():
    net = RRDBNet(scale=2, num_block=1)
    assert net.conv_first.in_channels == 12
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    assert RRDBNet(scale=1, num_block=1).conv_first.in_channels == 48


def test_srvgg_matches_release():
    net = SRVGGNetCompact()
    sd = net.state_dict()
    assert n_params(net) == 1_213_296
    assert {int(k.split(".")[1]) for k in sd} == set(range(67))  # convs and PReLUs both have weights
    assert max(int(k.split(".")[1]) for k in sd) == 66
    assert sd["body.1.weight"].shape == (64,)  # PReLU
    x = torch.rand(1, 3, 8, 8)
    assert net(x).shape == (1, 3, 32, 32)


def test_srvgg_output_is_residual_over_nearest_upsampling():
    net = SRVGGNetCompact(num_conv=2)
    with torch.no_grad():
        net.body[-1].weight.zero_()
        net.body[-1].bias.zero_()
        x = torch.rand(1, 3, 4, 4)
        out = net(x)
    assert torch.equal(out, torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest"))


def test_full_size_params_ema_pth_loads_strictly_and_identically(tmp_path, rrdbnet):
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": rrdbnet.state_dict()}, path)
    sr = load_sr(path)
    assert sr.method == "rrdbnet" and sr.scale == 4 and sr.reason is None
    assert sr.arch_kwargs["num_block"] == 23 and n_params(sr.net) == 16_697_987
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        expected = rrdbnet(x).clamp(0, 1)
    assert torch.equal(sr(x), expected)


@pytest.mark.parametrize("wrapper", ["params", None])
def test_release_format_wrappers(tmp_path, wrapper):
    torch.manual_seed(1)
    rrdbnet = RRDBNet(num_block=2).eval()
    sd = rrdbnet.state_dict()
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({wrapper: sd} if wrapper else sd, path)
    sr = load_sr(path)
    assert sr.method == "rrdbnet" and sr.scale == 4 and sr.reason is None
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        expected = rrdbnet(x).clamp(0, 1)
    assert torch.equal(sr(x), expected)


def test_params_ema_preferred_over_params(tmp_path):
    a, b = SRVGGNetCompact(num_conv=2), SRVGGNetCompact(num_conv=2)
    path = tmp_path / "w.pth"
    torch.save({"params": a.state_dict(), "params_ema": b.state_dict()}, path)
    sr = load_sr(path)
    assert sr.method == "srvgg"
    assert torch.equal(sr.net.body[0].weight, b.body[0].weight)


def test_srvgg_release_file_loads(tmp_path):
    net = SRVGGNetCompact()
    path = tmp_path / "realesr-general-x4v3.pth"
    torch.save({"params": net.state_dict()}, path)
    sr = load_sr(path)
    assert sr.method == "srvgg" and sr.arch_kwargs["num_conv"] == 32 and sr.arch_kwargs["act_type"] == "prelu"
    assert n_params(sr.net) == 1_213_296


def _one_line_naming(exc: pytest.ExceptionInfo, path) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))


def test_corrupt_file_is_one_line_usage_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UsageError) as exc:
        load_sr(path)
    _one_line_naming(exc, path)
    assert exc.value.exit_code == 2


def test_missing_file_is_usage_error(tmp_path):
    with pytest.raises(UsageError) as exc:
        load_sr(tmp_path / "nope.pth")
    _one_line_naming(exc, tmp_path / "nope.pth")


def test_mismatched_weights_are_one_line_usage_error(tmp_path):
    sd = RRDBNet(num_block=2).state_dict()
    sd["conv_body.weight"] = torch.zeros(64, 64, 1, 1)  # wrong shape
    del sd["conv_hr.bias"]
    path = tmp_path / "bad.pth"
    torch.save({"params_ema": sd}, path)
    with pytest.raises(UsageError) as exc:
        load_sr(path)
    _one_line_naming(exc, path)
    assert "missing" in str(exc.value) and "shape" in str(exc.value)


def test_not_an_sr_state_dict(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(UsageError) as exc:
        load_sr(path)
    _one_line_naming(exc, path)


def test_pickled_code_is_refused(tmp_path):
    # weights_only=True: a file that needs arbitrary unpickling is rejected, not run.
    path = tmp_path / "evil.pth"
    torch.save({"params": RRDBNet(num_block=1)}, path)  # a whole module, not tensors
    with pytest.raises(UsageError):
        load_sr(path)


def test_bicubic_fallback_says_so():
    sr = load_sr(None)
    assert (sr.method, sr.reason) == ("bicubic", NO_WEIGHTS_REASON) == ("bicubic", "no SR weights given")
    x = torch.rand(2, 3, 32, 32)
    y = sr(x)
    assert y.shape == (2, 3, 128, 128) and 0 <= y.min() and y.max() <= 1
    out = sr.upscale_pil([Image.new("RGB", (32, 32), (10, 200, 30))])
    assert out[0].size == (128, 128) and out[0].getpixel((64, 64)) == (10, 200, 30)


def test_train_sr_checkpoint_reloads_identically_and_resumes(tmp_path):
    hr = tmp_path / "hr"
    hr.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        arr = (torch.rand(48, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(hr / f"{i}.png")
    out = tmp_path / "sr"
    args = ["train", "sr", str(hr), "--out", str(out), "--num-block", "1", "--patch", "32",
            "--batch-size", "2", "--no-progress"]
    assert main(args + ["--epochs", "1"]) == 0
    first = (out / "sr.safetensors").read_bytes()
    assert main(args + ["--epochs", "2", "--resume"]) == 0
    meta = json.loads((out / "sr.json").read_text())
    assert meta["epoch"] == 2 and len(meta["history"]) == 2 and meta["arch"] == "rrdbnet"
    assert (out / "sr.safetensors").read_bytes() != first  # the second epoch changed the weights
    assert torch.load(out / "sr_optimizer.pt", weights_only=True)["epoch"] == 2

    # Our safetensors checkpoint loads through the same path as a release file.
    sr = load_sr(out / "sr.safetensors")
    assert sr.method == "rrdbnet" and sr.arch_kwargs["num_block"] == 1
    x = torch.rand(1, 3, 8, 8)
    again = load_sr(out / "sr.safetensors")
    assert torch.equal(sr(x), again(x))
    # Refuses to overwrite a run without --resume.
    assert main(args + ["--epochs", "1"]) == 2


def test_train_sr_fine_tunes_released_srvgg_weights(tmp_path):
    hr = tmp_path / "hr"
    hr.mkdir()
    for i in range(2):
        Image.new("RGB", (20, 24), (40 * i, 90, 200)).save(hr / f"{i}.jpg")  # smaller than a patch: scaled up
    release = SRVGGNetCompact(num_conv=2)
    torch.save({"params": release.state_dict()}, tmp_path / "realesr.pth")
    out = tmp_path / "sr"
    assert main(["train", "sr", str(hr), "--out", str(out), "--weights", str(tmp_path / "realesr.pth"),
                 "--patch", "32", "--epochs", "1", "--batch-size", "2", "--no-progress"]) == 0
    sr = load_sr(out / "sr.safetensors")
    assert sr.method == "srvgg" and sr.arch_kwargs["num_conv"] == 2
    assert not torch.equal(sr.net.body[0].weight, release.body[0].weight)  # it trained
