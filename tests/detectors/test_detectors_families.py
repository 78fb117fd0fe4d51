"""Every backbone family the README lists trains, evaluates and gives a Grad-CAM box.

Small members of each family on 64-px inputs (16-px sources), one epoch on a
handful of images: the point is that the plumbing works for each family
(building at the input size, the Grad-CAM layer, token maps for ViTs), not accuracy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from detectors.classifier import ClassifierConfig, build_classifier
from detectors.gradcam import GradCAM
from detectors.stage import DetectorStage
from explainer.cli import main

# (backbone, family): one small member per family named in the README; timm's
# test_* models are its own tiny configs of a family (same classes, same code paths).
FAMILIES = [
    ("tiny_cnn", "ours"),
    ("custom_cnn", "seed 001"),
    ("tiny_vgg", "seed 000"),
    ("ensemble:tiny_vgg+mobilenetv3_small_050", "seed 000 ensemble"),
    ("densenet121", "densenet"),
    ("test_resnet", "resnet"),
    ("test_efficientnet", "efficientnet"),
    ("mobilenetv3_small_050", "mobilenetv3"),
    ("test_convnext", "convnext"),
    ("test_vit", "vit"),
    pytest.param("vit_tiny_patch16_224", "vit (real config)", marks=pytest.mark.slow),
    pytest.param("legacy_xception", "xception", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("backbone, family", FAMILIES)
def test_gradcam_gives_a_box_for_every_family(backbone, family):
    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(backbone=backbone, image_size=64, lr_size=16)).eval()
    layer = model.default_cam_layer()
    x = torch.rand(3, 3, 64, 64)
    with GradCAM(model, layer) as cam:
        out = cam(x)
    assert out.heatmaps.shape == (3, 64, 64)
    assert np.isfinite(out.heatmaps).all()
    assert torch.allclose(out.logits, model(x).detach(), atol=1e-4)  # eval mode: the same logits
    # A random net's evidence may all point one way; the gradient must reach the
    # layer either way (a ViT's last block, the old default, gave zero both ways).
    with GradCAM(_Negated(model), "model." + layer) as cam:
        negated = cam(x)
    assert (~out.flat | ~negated.flat).any(), f"{backbone}: no Grad-CAM signal at {layer}"


class _Negated(torch.nn.Module):
    """The same network with the logit negated: Grad-CAM for 'real' instead of 'fake'."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return -self.model(x)


def test_vit_builds_at_the_input_size_and_maps_patch_tokens():
    model = build_classifier(ClassifierConfig(backbone="test_vit", image_size=128)).eval()
    assert model(torch.rand(2, 3, 128, 128)).shape == (2,)  # 224-px position grid would crash here
    layer = model.default_cam_layer()
    assert layer.endswith(".norm1"), layer  # the last block's output feeds only the class token
    with GradCAM(model, layer) as cam:
        out = cam(torch.rand(2, 3, 128, 128))
    assert out.heatmaps.shape == (2, 128, 128) and not out.flat.all()


@pytest.mark.parametrize("backbone", ["test_vit", "test_efficientnet", "ensemble:tiny_vgg+mobilenetv3_small_050"])
def test_family_trains_evaluates_and_explain_draws_a_box(backbone, tiny_data, tmp_path, capsys):
    out = tmp_path / "det"
    assert main(["train", "detector", str(tiny_data), "--out", str(out), "--backbone", backbone, "--epochs", "1",
                 "--batch-size", "4", "--lr-size", "16", "--image-size", "64", "--no-progress"]) == 0
    meta = json.loads((out / "detector.json").read_text())
    assert meta["backbone"] == backbone and meta["hyperparameters"]["image_size"] == 64
    capsys.readouterr()
    assert main(["eval", "detector", str(tiny_data), "--checkpoint", str(out), "--json", "--no-progress",
                 "--plots", "none", "--fgsm-eps", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 8 and 0.0 <= result["clean"]["accuracy"] <= 1.0
    stage = DetectorStage.from_paths(classifier=out)
    images = [Image.fromarray((np.random.default_rng(i).random((16, 16, 3)) * 255).astype(np.uint8)) for i in range(4)]
    results = stage.run(images)
    assert all(r.p_fake is not None for r in results)
    for r in results:  # a box, or the plain note saying why there is none
        assert r.roi_box is not None or "Grad-CAM found nothing pointing to 'fake'; no box" in r.notes, r.notes
    if not any(r.roi_box is not None for r in results):
        # One epoch may leave every image on the 'real' side: the map for 'real' must then exist.
        from detectors.sr.load import pil_to_tensor

        x = torch.stack([pil_to_tensor(r.sr_image) for r in results])
        with GradCAM(_Negated(stage.classifier), "model." + stage.cam_layer) as cam:
            assert not cam(x).flat.all(), f"{backbone}: no Grad-CAM signal either way"
