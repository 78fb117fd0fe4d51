"""Signal probes: the measurements, the `probe:` node in the language and engine, and the no-VLM path."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from PIL import Image

from explainer.answerers.base import ImageContext
from explainer.answerers.scripted import ScriptedAnswerer
from explainer.cli import main
from explainer.engine import ProbeMeasured, TreeRunner
from explainer.probes import PROBES, measure, region_mask
from explainer.trees import TreeError, compile_tree

RNG = np.random.default_rng(0)
FLAT = np.full((64, 64, 3), 0.5, np.float32)
NOISY = np.clip(0.5 + RNG.normal(0, 0.1, (64, 64, 3)), 0, 1).astype(np.float32)
_yy, _xx = np.mgrid[:64, :64]
STRIPES = np.repeat((0.5 + 0.4 * np.sin(_xx * 2 * np.pi / 4) * np.sin(_yy * 2 * np.pi / 4))[..., None], 3, 2).astype(np.float32)
GREY_NOISE = np.repeat(NOISY[..., :1], 3, 2)


def m(name, image, mask=None, region="whole"):
    return measure(name, image, mask, region)[0]


def test_measurements_order_images_as_expected():
    assert m("smoothness", FLAT) < 0.001 < m("smoothness", NOISY)
    assert m("periodicity", STRIPES) > 2 * m("periodicity", NOISY)
    assert m("noise_residual", FLAT) < 0.005 < m("noise_residual", NOISY)
    assert m("sharpness", FLAT) < m("sharpness", NOISY)
    assert m("colourfulness", GREY_NOISE) < 1e-6 < m("colourfulness", NOISY)
    assert m("saturation_spread", GREY_NOISE) < 1e-6 < m("saturation_spread", NOISY)


def test_regions_come_from_the_mask():
    image = FLAT.copy()
    image[:, 32:] = NOISY[:, 32:]  # noisy right half
    mask = np.zeros((64, 64), bool)
    mask[:, 32:] = True  # the "object" is the right half
    assert m("smoothness", image, mask, "object") > 10 * m("smoothness", image, mask, "background")
    small = np.zeros((16, 16), bool)
    small[:, 8:] = True  # a mask at another resolution is resized to the image
    assert region_mask(small, "object", (64, 64)).sum() == 64 * 32


def test_too_small_region_is_not_measured():
    mask = np.ones((64, 64), bool)
    value, why = measure("smoothness", FLAT, mask, "background")
    assert value is None and "background has only 0 pixels" in why


def test_every_probe_accepts_a_pil_image():
    img = Image.fromarray((NOISY * 255).astype("uint8"))
    for name in PROBES:
        assert np.isfinite(measure(name, img, None, "whole")[0])


PROBE_TREE = """
    tree: probes
    start: scene
    nodes:
      scene:
        all: [smooth, texture]
      smooth:
        probe: smoothness
        within: background
        below: 0.004
        artifact: Artificial smoothness
        explain: "Flat background: gradient {{ '%.4f' | format(value) }}."
      texture:
        ask: Does the texture repeat?
        if_yes: {at_least_one: [periodic, grid]}
      periodic:
        probe: periodicity
        above: 4.0
        artifact: Frequency domain signatures
      grid:
        ask: Is there a grid?
        artifact: Regular grid-like artifacts in textures
"""


def _tree(tmp_path, body=PROBE_TREE):
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(body))
    return compile_tree(path)


def test_probe_nodes_measure_and_branch(tmp_path):
    tree = _tree(tmp_path)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    ans = ScriptedAnswerer({"texture": "yes", "grid": "no"})
    result = TreeRunner(tree, ans).run(ImageContext(pixels=STRIPES * 0 + FLAT, mask=mask))
    probes = [e for e in result.events if isinstance(e, ProbeMeasured)]
    assert [(p.node_id, p.answer) for p in probes] == [("smooth", "yes"), ("periodic", "no")]
    assert result.artifacts == {"Artificial smoothness", "Regular grid-like artifacts in textures"}  # grid inferred
    smooth = next(f for f in result.findings if f.artifact == "Artificial smoothness")
    assert smooth.value == pytest.approx(0.0) and smooth.explanation == "Flat background: gradient 0.0000."
    assert result.probes == 2 and result.yes_no == 1  # probes ask the model nothing; grid was inferred
    assert ans.calls[0].node_ids == ("texture",)


def test_probe_member_that_says_yes_keeps_the_last_member_asked(tmp_path):
    tree = _tree(tmp_path)
    ans = ScriptedAnswerer({"texture": "yes", "grid": "no"})
    result = TreeRunner(tree, ans).run(ImageContext(pixels=STRIPES))
    assert "Frequency domain signatures" in result.artifacts
    periodic = next(f for f in result.findings if f.artifact == "Frequency domain signatures")
    assert "measured periodicity" in periodic.explanation
    assert ("yes_no", ("grid",)) in [(c.kind, c.node_ids) for c in ans.calls]


def test_probe_without_an_image_is_unknown_and_never_inferred_past(tmp_path):
    tree = _tree(tmp_path)
    ans = ScriptedAnswerer({"texture": "yes", "grid": "no"})
    result = TreeRunner(tree, ans).run(ImageContext())
    probes = {e.node_id: e for e in result.events if isinstance(e, ProbeMeasured)}
    assert probes["smooth"].answer == "unknown" and probes["smooth"].note == "no image to measure"
    assert result.artifacts == set()  # grid was asked (said no), not inferred past an unknown probe


@pytest.mark.parametrize("body, message", [
    ("probe: smoothnes\n    below: 0.1", "unknown probe 'smoothnes' (did you mean 'smoothness'?)"),
    ("probe: smoothness\n    below: 0.1\n    above: 0.5", "a probe needs exactly one threshold"),
    ("probe: smoothness", "a probe needs exactly one threshold"),
    ("probe: smoothness\n    below: 0.1\n    within: sky", "must be one of object, background, whole, not 'sky'"),
    ("probe: smoothness\n    below: 0.1\n    on: background", "bare 'on:' key is read by YAML as the boolean True"),
    ("probe: smoothness\n    below: low", "must be a number, not str 'low'"),
])
def test_probe_errors(tmp_path, body, message):
    text = f"tree: t\nstart: p\nnodes:\n  p:\n    {body}\n    artifact: Artificial smoothness\n"
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(TreeError) as info:
        compile_tree(tmp_path / "t.yaml")
    assert any(message in str(p) for p in info.value.problems), info.value


def test_without_a_vlm_the_probes_still_run(tmp_path, capsys):
    periodic = Image.fromarray((STRIPES[:32, :32] * 255).astype("uint8"))
    periodic.save(tmp_path / "1.png")
    assert main([str(tmp_path / "1.png"), "--no-vlm", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["skipped"] == "VLM questions skipped: --no-vlm was given"
    measured = {q["node_id"]: q for q in record["questions"] if q["kind"] == "probe"}
    assert measured["periodicity_probe"]["value"] > 4.0 and measured["periodicity_probe"]["answer"] == "yes"
    assert [f["artifact"] for f in record["findings"]] == ["Frequency domain signatures"]
    assert record["counts"]["yes_no"] == 0 and record["counts"]["probes"] == 2
