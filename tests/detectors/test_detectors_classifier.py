"""Classifier: construction, normalisation inside the wrapper, checkpoints."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from detectors.classifier import ClassifierConfig, build_classifier, load_classifier, save_classifier
from explainer.errors import UsageError


def test_default_is_densenet121_with_one_logit():
    model = build_classifier(ClassifierConfig())
    assert model.config.backbone == "densenet121"
    assert type(model.backbone).__name__ == "DenseNet"
    assert model.random_init  # no weights file: random, and it says so
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 128, 128))
    assert out.shape == (2,)
    assert model.default_cam_layer() == "backbone.features.denseblock3"


def test_normalisation_is_inside_the_wrapper():
    model = build_classifier(ClassifierConfig(backbone="tiny_cnn", input_norm="imagenet")).eval()
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.backbone((x - mean) / std).reshape(-1), atol=1e-6)


def test_default_normalisation_removes_each_images_mean_colour():
    model = build_classifier(ClassifierConfig(backbone="tiny_cnn")).eval()
    assert model.config.input_norm == "image_mean"
    x = torch.rand(2, 3, 64, 64) * 0.5
    shifted = x + torch.tensor([0.3, -0.1, 0.2]).view(1, 3, 1, 1)  # another mean colour, same detail
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model(shifted), atol=1e-5)
        expected = model.backbone((x - x.mean(dim=(2, 3), keepdim=True)) / std).reshape(-1)
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_old_checkpoint_without_input_norm_keeps_imagenet_normalisation():
    config = ClassifierConfig.from_dict({"backbone": "tiny_cnn", "grayscale": False, "image_size": 128, "lr_size": 32})
    assert config.input_norm == "imagenet"


def test_grayscale_ignores_colour_at_equal_luma():
    model = build_classifier(ClassifierConfig(backbone="tiny_cnn", grayscale=True)).eval()
    assert model.backbone.features.stem[0].in_channels == 1
    # Two images with the same luminance but different colours look the same.
    a = torch.full((1, 3, 32, 32), 0.5)
    luma = torch.tensor([0.299, 0.587, 0.114])
    b = torch.zeros(1, 3, 32, 32)
    b[:, 0] = 0.5 / luma[0] * 0.5
    b[:, 2] = 0.5 / luma[2] * 0.5
    with torch.no_grad():
        assert torch.allclose(model(a), model(b), atol=1e-5)


def test_other_timm_backbone_by_name():
    model = build_classifier(ClassifierConfig(backbone="test_resnet")).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1,)
    assert model.default_cam_layer() == "backbone.layer3"


def test_unknown_backbone_is_usage_error():
    with pytest.raises(UsageError, match="unknown backbone"):
        build_classifier(ClassifierConfig(backbone="no_such_net_42"))


def test_pretrained_file_is_used(tmp_path):
    # An "ImageNet" checkpoint in timm's format, 1000-class head included.
    src = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / "imagenet.safetensors"
    save_file(src.state_dict(), str(path))
    model = build_classifier(ClassifierConfig(backbone="test_resnet", pretrained_file=str(path)))
    assert not model.random_init
    assert torch.equal(model.backbone.conv1[0].weight, src.conv1[0].weight)
    assert model.backbone.get_classifier().out_features == 1  # head replaced


def test_missing_pretrained_file(tmp_path):
    with pytest.raises(UsageError) as exc:
        build_classifier(ClassifierConfig(backbone="test_resnet", pretrained_file=str(tmp_path / "x.pth")))
    assert str(exc.value).startswith(str(tmp_path / "x.pth"))


@pytest.mark.parametrize("backbone", ["tiny_cnn", "densenet121"])
def test_save_and_reload_gives_identical_outputs(tmp_path, backbone):
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(backbone=backbone)).eval()
    # Move BatchNorm running stats away from their defaults so they must be saved too.
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))
    model.eval()
    save_classifier(tmp_path, model, {"epoch": 3})
    x = torch.rand(2, 3, 32, 32)  # small input: the check is about weights, not resolution
    with torch.no_grad():
        expected = model(x)
    # Every way of naming a checkpoint; one is enough for the big model (CPU time).
    wheres = [tmp_path, tmp_path / "detector.safetensors", tmp_path / "detector.json"]
    for where in wheres if backbone == "tiny_cnn" else wheres[:1]:
        loaded, meta = load_classifier(where)
        assert meta["epoch"] == 3 and meta["backbone"] == backbone
        with torch.no_grad():
            assert torch.equal(loaded(x), expected)


def test_mismatched_checkpoint_is_one_line_error(tmp_path):
    save_classifier(tmp_path, build_classifier(ClassifierConfig(backbone="tiny_cnn")))
    meta = json.loads((tmp_path / "detector.json").read_text())
    meta["backbone"] = "test_resnet"
    (tmp_path / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError) as exc:
        load_classifier(tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "detector.safetensors"))
    assert "do not match" in msg


def test_corrupt_and_missing_checkpoint_files(tmp_path):
    save_classifier(tmp_path, build_classifier(ClassifierConfig(backbone="tiny_cnn")))
    (tmp_path / "detector.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(UsageError) as exc:
        load_classifier(tmp_path)
    assert str(exc.value).startswith(str(tmp_path / "detector.safetensors")) and "\n" not in str(exc.value)
    (tmp_path / "detector.json").unlink()
    with pytest.raises(UsageError) as exc:
        load_classifier(tmp_path)
    assert str(exc.value) == f"{tmp_path / 'detector.json'}: no such file"


def test_reloaded_random_classifier_still_says_it_is_untrained(tmp_path):
    from PIL import Image

    from detectors import DetectorStage
    from detectors.classifier import ClassifierConfig, build_classifier, load_classifier, save_classifier

    save_classifier(tmp_path / "det", build_classifier(ClassifierConfig(backbone="tiny_cnn")))
    model, meta = load_classifier(tmp_path / "det")
    assert model.random_init and meta["random_init"] is True
    result = DetectorStage.from_paths(classifier=tmp_path / "det").run([Image.new("RGB", (32, 32), (90, 120, 200))])[0]
    assert "classifier weights are untrained: the verdict means nothing" in result.notes
