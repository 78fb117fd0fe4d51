"""End to end through the real command line: train and eval features, then explain with the head as detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from PIL import Image

from detectors.features.stage import FeatureDetectorStage
from explainer.cli.main import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("feature-cache"))


def test_train_features_head_folder(tmp_path, capsys, tiny_backbones, texture_data, cache):
    out = tmp_path / "head"
    code, stdout, _ = _run(capsys, "train", "features", texture_data, "--backbone", tiny_backbones["clip"], "--head", "lda",
                           "--out", str(out), "--cache-dir", cache, "--no-progress", "--json")
    assert code == 0
    result = json.loads(stdout)
    assert result["metrics"]["accuracy"] >= 0.9 and result["metrics"]["roc_auc"] >= 0.95
    meta = json.loads((out / "head.json").read_text())
    assert meta["backbone"] == tiny_backbones["clip"] and meta["head"] == "lda" and meta["classes"] == ["real", "fake"]
    assert meta["cache_key"] and meta["backbone_description"]["processor"] and meta["metrics"]["n"] == 24
    assert meta["differentiable"] is True
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "head.json", "head.skops", "roc.png"]


@pytest.mark.slow  # ~40 s on 2 cores; the robustness/cross test covers the same command in the default run
def test_eval_grid_tables_and_figures(tmp_path, capsys, tiny_backbones, texture_data, cache):
    out = tmp_path / "grid"
    code, stdout, _ = _run(capsys, "eval", "features", texture_data, "--backbone", f"{tiny_backbones['clip']},{tiny_backbones['siglip']}",
                           "--head", "logreg,cosine-nn", "--reduce", "none", "--reduce", "pca:4", "--out", str(out),
                           "--cache-dir", cache, "--no-progress")
    assert code == 0 and "Feature heads on" in stdout
    record = json.loads((out / "grid.json").read_text())
    assert len(record["rows"]) == 2 * 2 * 2
    by = {(r["backbone"], r["reduction"], r["head"]): r for r in record["rows"]}
    assert by[("clip", "none", "logreg")]["accuracy"] >= 0.9
    assert by[("siglip", "none", "logreg")]["accuracy"] >= 0.9
    row = by[("clip", "pca:4", "cosine-nn")]
    assert set(row["per_class"]) == {"real", "fake"} and {"accuracy", "roc_auc", "ap", "f1"} <= set(row)
    md = (out / "grid.md").read_text()
    assert sum(1 for line in md.splitlines() if line.startswith("|") and ("clip" in line or "siglip" in line)) == 8
    names = {p.name for p in out.glob("*.png")}
    assert {"roc-clip-none.png", "roc-siglip-pca_4.png", "scatter-clip-pca.png", "scatter-clip-tsne.png"} <= names


def test_eval_robustness_and_cross(tmp_path, capsys, tiny_backbones, texture_data, cache):
    out = tmp_path / "rob"
    code, _, _ = _run(capsys, "eval", "features", texture_data, "--robustness", "--backbone", tiny_backbones["dinov2"],
                      "--head", "logreg", "--train-transforms", "none,jpeg:60", "--test-transforms", "none,blur:1,jitter:0.3",
                      "--out", str(out), "--cache-dir", cache, "--no-progress")
    assert code == 0
    rob = json.loads((out / "robustness.json").read_text())
    assert rob["train_transforms"] == ["none", "jpeg:60"] and rob["test_transforms"] == ["none", "blur:1", "jitter:0.3"]
    acc = np.array(rob["accuracy"], dtype=float)
    assert acc.shape == (2, 3) and acc[0, 0] >= 0.9
    assert (out / "robustness.png").is_file()

    out = tmp_path / "cross"
    code, _, _ = _run(capsys, "eval", "features", texture_data, texture_data + "/", "--cross", "--backbone", tiny_backbones["clip"],
                      "--head", "lda", "--out", str(out), "--cache-dir", cache, "--no-progress")
    assert code == 0
    cross = json.loads((out / "cross.json").read_text())
    assert np.array(cross["accuracy"]).shape == (2, 2) and (out / "cross.png").is_file()


def test_attribution_confusion_matrix(tmp_path, capsys, tiny_backbones, cache):
    from detectors.features.testing import make_planted_dataset

    data = tmp_path / "sources"
    make_planted_dataset(data, n_train=20, n_test=10, size=32, patch=32, strength=30, sources=("REAL", "GAN", "DIFFUSION"))
    out = tmp_path / "attr"
    code, _, _ = _run(capsys, "eval", "features", str(data), "--attribution", "--backbone", tiny_backbones["clip"],
                      "--head", "logreg", "--out", str(out), "--cache-dir", cache, "--no-progress", "--no-plots")
    assert code == 0
    row = json.loads((out / "grid.json").read_text())["rows"][0]
    assert np.array(row["confusion"]).shape == (3, 3) and np.array(row["confusion"]).sum() == 30
    assert row["accuracy"] >= 0.8 and set(row["per_class"]) == {"real", "gan", "diffusion"}


@pytest.mark.parametrize("kind", ["clip", "dinov2"])
def test_gradient_box_finds_the_planted_patch(tmp_path, capsys, tiny_backbones, patch_data, cache, kind):
    """A differentiable head on a ViT: the peak of the gradient map lies in the planted 8 px patch (chance: 1 in 16)."""
    root, boxes = patch_data
    head = tmp_path / "head"
    assert _run(capsys, "train", "features", root, "--backbone", tiny_backbones[kind], "--head", "logreg", "--out", str(head),
                "--cache-dir", cache, "--no-progress")[0] == 0
    stage = FeatureDetectorStage(head)
    fakes = sorted(Path(root, "test", "FAKE").glob("*.png"))
    results = stage.run([Image.open(p).convert("RGB") for p in fakes])
    hits = 0
    for path, r in zip(fakes, results):
        assert r.roi_box is not None and r.heatmap is not None and r.p_fake is not None
        x0, y0, x1, y1 = boxes[str(path)]
        py, px = np.unravel_index(np.argmax(r.heatmap), r.heatmap.shape)
        hits += x0 <= px < x1 and y0 <= py < y1
        bx0, by0, bx1, by1 = r.roi_box
        assert bx0 <= px < bx1 and by0 <= py < by1
    assert hits >= 0.8 * len(fakes), f"{hits}/{len(fakes)}"


def test_explain_with_feature_head(tmp_path, capsys, tiny_backbones, texture_data, cache):
    head = tmp_path / "knn"
    assert _run(capsys, "train", "features", texture_data, "--backbone", tiny_backbones["clip"], "--head", "knn3",
                "--out", str(head), "--cache-dir", cache, "--no-progress")[0] == 0
    fake = str(Path(texture_data, "test", "FAKE", "0.png"))
    code, stdout, _ = _run(capsys, fake, "--detector", str(head), "--no-vlm", "--json")
    assert code == 0
    record = json.loads(stdout.strip().splitlines()[-1])
    assert record["verdict"] == "fake" and record["roi_box"] is None
    assert any("no box: the knn3 head is not differentiable" in n for n in record["notes"])

    # a head folder whose skops file names an untrusted type is refused in one line, exit 2
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    (head / "head.skops").write_bytes(sio.dumps(Pipeline([("f", FunctionTransformer(func=print))])))
    code, _, err = _run(capsys, fake, "--detector", str(head), "--no-vlm")
    assert code == 2
    assert "refusing to load: untrusted type builtins.print" in err and len(err.strip().splitlines()) <= 2


def test_bad_arguments_exit_2(capsys, tiny_backbones, texture_data, tmp_path):
    code, _, err = _run(capsys, "eval", "features", texture_data, "--backbone", tiny_backbones["clip"], "--head", "nope",
                        "--out", str(tmp_path), "--no-progress")
    assert code == 2 and "unknown" in err
    code, _, err = _run(capsys, "eval", "features", texture_data, "--cross", "--backbone", tiny_backbones["clip"], "--no-progress",
                        "--out", str(tmp_path))
    assert code == 2 and "--cross needs at least two" in err
