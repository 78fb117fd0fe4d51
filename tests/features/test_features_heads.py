"""Heads on features with a known separation; skops round trips and refusals; torch twins equal sklearn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skops.io as sio
import torch
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from detectors.features.heads import HEADS, CosineBank, fit_head, proba, torch_logit
from detectors.features.persist import load_meta, load_pipeline, save_head
from detectors.features.reduce import AutoencoderReducer, parse_reduction
from explainer.errors import UsageError


def _separated(n: int = 60, d: int = 24, shift: float = 1.2, seed: int = 0, classes: int = 2):
    """Gaussian blobs whose class means differ by ``shift`` on every axis: Bayes accuracy near 1."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(k * shift, 1.0, (n, d)) for k in range(classes)]).astype(np.float32)
    y = np.repeat(np.arange(classes), n)
    return x, y


# Gradient boosting takes ~30 s alone on 2 cores: it runs with -m slow; every other head in the default run.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "gboost" else n for n in HEADS])
def test_every_head_learns_and_round_trips(tmp_path, name):
    # 2.5 sigma per axis: even a single decision tree, which splits on few axes, separates these
    x, y = _separated(shift=2.5)
    xt, yt = _separated(shift=2.5, seed=1)
    pipe = fit_head(name, "none", x, y)
    p = proba(pipe, xt)
    assert p.shape == (len(xt), 2)
    assert (np.argmax(p, 1) == yt).mean() >= 0.9
    save_head(tmp_path, pipe, {"backbone": "x", "classes": ["real", "fake"], "head": name})
    again = load_pipeline(tmp_path)
    np.testing.assert_allclose(proba(again, xt), p)
    assert load_meta(tmp_path)["versions"]["skops"]


_DIFFERENTIABLE = [h for h, (_, diff, _) in HEADS.items() if diff]


@pytest.mark.parametrize(
    "name, reduction", [(h, r) for h in _DIFFERENTIABLE for r in ("none", "pca:6")] + [("mlp", "ae:6"), ("linear-svm", "ae:6")]
)
def test_torch_twin_equals_sklearn(name, reduction):
    x, y = _separated(n=40, d=12, shift=0.6)
    pipe = fit_head(name, reduction, x, y)
    f, why = torch_logit(pipe)
    assert f is not None, why
    p_torch = torch.sigmoid(f(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(p_torch, pipe.predict_proba(x)[:, 1], atol=2e-5)


@pytest.mark.parametrize("name", [h for h, (_, diff, _) in HEADS.items() if not diff])
def test_non_differentiable_heads_say_so(name):
    x, y = _separated(n=20, d=6)
    f, why = torch_logit(fit_head(name, "none", x, y))
    assert f is None and "not a differentiable" in why


def test_multiclass_head_has_no_binary_twin():
    x, y = _separated(n=20, d=6, classes=3)
    f, why = torch_logit(fit_head("logreg", "none", x, y))
    assert f is None and "more than two classes" in why


def test_cosine_bank_is_the_nearest_neighbour():
    x, y = _separated(n=30, d=8, shift=0.5)
    q, _ = _separated(n=10, d=8, shift=0.5, seed=3)
    bank = CosineBank().fit(x, y)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    expected = y[np.argmax(qn @ xn.T, axis=1)]
    np.testing.assert_array_equal(bank.predict(q), expected)
    np.testing.assert_array_equal(np.argmax(bank.predict_proba(q), 1), expected)


def test_autoencoder_learns_a_code():
    x, _ = _separated(n=80, d=16)
    ae = AutoencoderReducer(n_components=4, epochs=100).fit(x)
    z = ae.transform(x)
    assert z.shape == (160, 4)
    # the reconstruction beats predicting the mean (the variance per entry)
    assert ae.reconstruction_mse_ < float(((x - x.mean(0)) ** 2).mean())


def test_untrusted_type_refused_in_one_line(tmp_path):
    pipe = Pipeline([("f", FunctionTransformer(func=print))])
    (tmp_path / "head.skops").write_bytes(sio.dumps(pipe))
    with pytest.raises(UsageError, match=r"head.skops: refusing to load: untrusted type builtins.print") as info:
        load_pipeline(tmp_path)
    assert "\n" not in str(info.value)


def test_corrupt_and_oversized_heads_refused(tmp_path, monkeypatch):
    (tmp_path / "head.skops").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UsageError, match="not a readable skops file"):
        load_pipeline(tmp_path)
    import detectors.features.persist as persist

    monkeypatch.setattr(persist, "MAX_HEAD_BYTES", 10)
    with pytest.raises(UsageError, match="over the limit"):
        load_pipeline(tmp_path)


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"format": "other"}, "not a feature head"),
        ({"format": "explainer-feature-head", "version": 99}, "version 99"),
        ({"format": "explainer-feature-head", "version": 1, "backbone": "b", "head": "lda", "classes": ["x"]}, "2 to 1000"),
        ({"format": "explainer-feature-head", "version": 1, "head": "lda", "classes": ["a", "b"]}, "'backbone'"),
    ],
)
def test_bad_head_metadata(tmp_path, meta, message):
    (tmp_path / "head.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match=message):
        load_meta(tmp_path)


@pytest.mark.parametrize("spec", ["pca:0", "svd:3", "ae:x", "pca:99999"])
def test_bad_reduction(spec):
    with pytest.raises(UsageError):
        parse_reduction(spec)
