"""Backbones load through the user's path (Auto classes, timm + local weights) and give features and tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from detectors.features.backbones import ConcatBackbone, load_backbone, short_name
from explainer.errors import UsageError


def _images(n: int = 3, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("kind", ["clip", "dinov2", "siglip"])
def test_hf_backbone_features_and_tokens(tiny_backbones, kind):
    bb = load_backbone(tiny_backbones[kind])
    ims = _images()
    feats = bb.features(ims)
    assert feats.shape == (3, bb.dim) and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1])  # different images, different features
    np.testing.assert_allclose(bb.features(ims), feats, rtol=1e-5, atol=1e-6)  # frozen and deterministic
    pixels = bb.preprocess(ims)
    f, act = bb.embed_with_tokens(pixels)
    np.testing.assert_allclose(f.detach().numpy(), feats, rtol=1e-4, atol=1e-5)
    assert act is not None and act.grid == (4, 4)  # 32 px / 8 px patches
    # A random direction: a plain sum of LayerNorm outputs can be constant (DINOv2's pooler).
    direction = torch.randn(f.shape[1], generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((f @ direction).sum(), act.values)
    assert act.patch_tokens(grad).abs().sum() > 0  # the patch tokens reach the features
    assert [v.size for v in bb.view(pixels)] == [(32, 32)] * 3


def test_concatenated_backbones(tiny_backbones):
    spec = f"{tiny_backbones['clip']}+{tiny_backbones['dinov2']}"
    bb = load_backbone(spec)
    assert isinstance(bb, ConcatBackbone)
    single = [load_backbone(tiny_backbones[k]).features(_images()) for k in ("clip", "dinov2")]
    np.testing.assert_allclose(bb.features(_images()), np.concatenate(single, axis=1), rtol=1e-5, atol=1e-6)
    assert short_name(spec) == "clip+dinov2"


@pytest.mark.parametrize("name", ["test_vit", "test_resnet"])
def test_timm_backbone_from_local_weights(tmp_path, name):
    import timm
    from safetensors.torch import save_file

    src = timm.create_model(name, pretrained=False)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(weights))
    bb = load_backbone(f"timm:{name}={weights}")
    ims = _images(2, 64)
    feats = bb.features(ims)
    assert feats.shape[0] == 2 and feats.shape[1] == bb.dim
    f, act = bb.embed_with_tokens(bb.preprocess(ims))
    assert act is not None
    direction = torch.randn(f.shape[1], generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((f @ direction).sum(), act.values)
    assert act.patch_tokens(grad).abs().sum() > 0
    # the weights really were loaded: features match the source model's pooled features
    src.eval()
    with torch.no_grad():
        ref = src.forward_head(src.forward_features(bb.preprocess(ims)), pre_logits=True)
    np.testing.assert_allclose(feats, ref.numpy(), rtol=1e-4, atol=1e-5)


def test_timm_wrong_weights_refused(tmp_path):
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "other.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}, str(weights))
    with pytest.raises(UsageError, match="do not match timm test_vit"):
        load_backbone(f"timm:test_vit={weights}")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("dino-resnet50", "dino_resnet50_pretrain.pth"),
        ("timm:test_vit", "no weights given"),
        ("timm:no_such_model=x", "not a timm model name"),
        ("./no/such/folder", "no such folder"),
        ("a++b", "empty name"),
        ("dino-resnet50=/dev/zero", "not a regular file"),
    ],
)
def test_bad_backbones_one_line(spec, message):
    with pytest.raises(UsageError, match=message) as info:
        load_backbone(spec)
    assert "\n" not in str(info.value)


def test_hub_id_offline_says_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="huggingface-cli download openai/clip-vit-large-patch14"):
        load_backbone("clip-vit-l14")


def test_folder_without_config_refused(tmp_path):
    with pytest.raises(UsageError, match="not a model folder"):
        load_backbone(str(tmp_path))
