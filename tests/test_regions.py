"""Regions as data (``regions:`` in a tree): located lazily, once per image, with fallbacks as notes; recorded per
region with its box in the walk, the JSON record, task2.json and the views. Compiler errors live in the
broken-tree corpus (tests/trees/broken/region_*.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainer.answerers.base import FollowUpQuery, ImageContext, LocateQuery, PerImageAnswerers
from explainer.answerers.locate import LOCATE_MAX_NEW_TOKENS, locate_question, parse_box
from explainer.answerers.oracle import OracleAnswerer
from explainer.answerers.scripted import ScriptedAnswerer
from explainer.cli import main
from explainer.engine import RegionLocated, TreeRunner
from explainer.engine.regions import WHOLE_IMAGE, RegionLocator
from explainer.trees import compile_tree
from explainer.trees.templates import ROI_WITH_BOX, ROI_WITHOUT_BOX

ROOT = Path(__file__).resolve().parents[1]
ART = "Texture repetition patterns"

# Two branches, each about its own VLM-located region; one more region on a branch only `no` opens.
LAZY_TREE = f"""
tree: lazy
vars: {{yn: Answer yes or no.}}
regions:
  eyes: {{locate: ask_vlm, prompt: the eyes, fallback: marked}}
  hair: {{locate: ask_vlm, prompt: the hair, wording: the hair, fallback: image}}
  marked: {{locate: detector_box, fallback: image}}
  image: {{locate: whole}}
start: q
nodes:
  q:
    ask: Is anything odd? {{{{ yn }}}}
    if_yes: eyes
    if_no: hair
  eyes:
    region: eyes
    ask: Look at {{{{ roi }}}}. Odd? {{{{ yn }}}}
    if_yes: [irises, lids]
  irises:
    ask: In {{{{ roi }}}} ({{{{ region }}}}), do the irises differ? {{{{ yn }}}}
    artifact: {ART}
  lids:
    ask: Are the lids in {{{{ roi }}}} odd? {{{{ yn }}}}
    artifact: Unrealistic eye reflections
  hair:
    region: hair
    ask: Look at {{{{ roi }}}}. Odd? {{{{ yn }}}}
    artifact: {ART}
"""


@pytest.fixture()
def lazy(tmp_path):
    path = tmp_path / "lazy.yaml"
    path.write_text(LAZY_TREE)
    return compile_tree(path)


def _image(w=128, h=128):
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _locates(answerer: ScriptedAnswerer) -> list[str]:
    return [r for c in answerer.calls if c.kind == "locate" for r in c.node_ids]


# -- the parser --------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, size, box", [
    ("10, 20, 30, 40", (64, 64), (10, 20, 30, 40)),
    (" [10,20,30,40]. ", (64, 64), (10, 20, 30, 40)),
    ("(0, 0, 500, 90)", (64, 48), (0, 0, 64, 48)),  # clamped to the image
    ("-5, 3, 20, 30", (64, 64), (0, 3, 20, 30)),
    ("10, 20, 30, 40", (0, 0), (10, 20, 30, 40)),  # no image size: not clamped
])
def test_parse_box_reads_four_integers_and_clamps(text, size, box):
    assert parse_box(text, *size) == (box, "")


@pytest.mark.parametrize("text, why", [
    ("none", "not in the image"),
    ("The eyes are at 10, 20, 30, 40", "not a box"),  # no guessing inside sentences
    ("10, 20, 30", "not a box"),
    ("10.5, 20, 30, 40", "not a box"),
    ("10, 20, 30, 40, 50", "not a box"),
    ("", "not a box"),
    ("30, 20, 10, 40", "empty"),  # x1 < x0
    ("70, 70, 90, 90", "empty"),  # wholly outside a 64x64 image: nothing left after clamping
])
def test_parse_box_refuses_anything_else(text, why):
    box, reason = parse_box(text, 64, 64)
    assert box is None and why in reason


# -- locating each kind, and fallbacks ------------------------------------------------------------------

def _regions(text: str, tmp_path) -> dict:
    path = tmp_path / "r.yaml"
    names = [line.split(":")[0].strip() for line in text.strip().splitlines()]
    nodes = "\n".join(f"  n{i}:\n    region: {n}\n    ask: Is {{{{ roi }}}} odd?\n    if_no: n{i + 1}" for i, n in enumerate(names))
    path.write_text(f"tree: r\nregions:\n{text}\nstart: n0\nnodes:\n{nodes}\n  n{len(names)}:\n    artifact: {ART}\n")
    return compile_tree(path).regions


def test_mask_and_detector_regions_are_located_from_the_image(tmp_path):
    regions = _regions("""
  fg: {locate: foreground}
  bg: {locate: background, wording: the backdrop}
  marked: {locate: detector_box}
  all: {locate: whole}""", tmp_path)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 4:20] = True  # the mask stage's own resolution: boxes are scaled to the image the VLM sees
    ctx = ImageContext(image=_image(128, 128), mask=mask, roi_box=(10, 20, 50, 60))
    loc = RegionLocator(regions, ctx, None)
    fg, bg, marked, whole = (loc.get(n) for n in ("fg", "bg", "marked", "all"))
    assert fg.located and fg.box == (16, 32, 80, 96) and fg.wording == "the main subject"
    assert bg.located and bg.box == (0, 0, 128, 128) and bg.wording == "the backdrop"
    assert marked.located and marked.box == (10, 20, 50, 60) and marked.wording == ROI_WITH_BOX
    assert whole.located and whole.box == (0, 0, 128, 128) and whole.wording == ROI_WITHOUT_BOX
    assert loc.notes == [] and loc.calls == 0


def test_fallback_chain_ends_at_the_whole_image_and_every_step_is_a_note(tmp_path):
    regions = _regions("""
  eyes: {locate: ask_vlm, prompt: the eyes, fallback: marked}
  marked: {locate: detector_box, fallback: fg}
  fg: {locate: foreground}""", tmp_path)
    mask = np.zeros((32, 32), bool)
    mask[0, :10] = True  # 10 pixels: too few to be a region
    loc = RegionLocator(regions, ImageContext(image=_image(64, 64), mask=mask), None, "answerer 'interactive'")
    eyes = loc.get("eyes")
    assert not eyes.located and eyes.used == WHOLE_IMAGE and eyes.wording == ROI_WITHOUT_BOX and eyes.box == (0, 0, 64, 64)
    assert loc.notes == [
        "region 'eyes' (ask_vlm 'the eyes'): answerer 'interactive' cannot locate regions; using region 'marked' instead",
        "region 'marked' (detector_box): no detector box (no detector checkpoint, or no image); using region 'fg' instead",
        "region 'fg' (foreground): the mask gives the foreground only 10 pixels (need 64); no fallback left, so its "
        "questions are about the whole image",
    ]
    # the regions on the way are recorded as not located, never with a box of their own
    assert {n: (r.located, r.used) for n, r in loc.located.items()} == {
        "eyes": (False, WHOLE_IMAGE), "marked": (False, WHOLE_IMAGE), "fg": (False, WHOLE_IMAGE)}


# -- lazy locating in walks ----------------------------------------------------------------------------------

def test_a_region_on_an_unvisited_branch_is_never_located(lazy):
    script = ScriptedAnswerer({"q": "yes", "eyes": "yes", "irises": "yes", "lids": "no"},
                              regions={"eyes": [8, 16, 40, 30], "hair": [0, 0, 10, 10]})
    result = TreeRunner(lazy, script).run(ImageContext(image=_image(64, 48)))
    assert _locates(script) == ["eyes"]  # once, though three nodes are about the eyes; hair never asked
    assert list(result.regions) == ["eyes"]
    assert result.regions["eyes"] == {"locate": "ask_vlm", "located": True, "used": "eyes", "box": [8, 16, 40, 30],
                                      "wording": "the eyes in the box from (8, 16) to (40, 30) of this 64x48 image",
                                      "answer": "[8, 16, 40, 30]"}
    prompts = {e.node_id: e.prompt for e in result.questions}
    assert prompts["q"] == "Is anything odd? Answer yes or no."  # a node about no region: unchanged
    assert prompts["irises"].startswith("In the eyes in the box from (8, 16) to (40, 30) of this 64x48 image (eyes),")
    assert [(f.artifact, f.region) for f in result.findings] == [(ART, "eyes")]
    assert result.notes == []
    located = [e for e in result.events if isinstance(e, RegionLocated)]
    assert [e.region for e in located] == ["eyes"] and located[0].round == 1  # when the `yes` opened the branch


def test_the_other_branch_locates_only_its_region(lazy):
    script = ScriptedAnswerer({"q": "no", "hair": "yes"}, regions={"hair": "none"})
    result = TreeRunner(lazy, script).run(ImageContext(image=_image(64, 48)))
    assert _locates(script) == ["hair"]
    assert result.regions["hair"]["located"] is False and result.regions["hair"]["used"] == "image"
    assert result.regions["image"]["box"] == [0, 0, 64, 48]
    assert result.notes == ["region 'hair' (ask_vlm 'the hair'): script says region 'hair' is not in the image; "
                            "using region 'image' instead"]
    assert result.questions[-1].prompt == "Look at the whole image. Odd? Answer yes or no."
    assert result.findings[0].region == "hair"


def test_no_locating_when_no_node_about_a_region_is_reached(lazy):
    script = ScriptedAnswerer({"q": "yes", "eyes": "no"}, regions={"eyes": [0, 0, 5, 5]})
    runner = TreeRunner(lazy, script)
    # the first question is about no region: nothing is located before it is answered
    events = runner.stream(ImageContext(image=_image()))
    before_first_answer = []
    for e in events:
        if type(e).__name__ == "QuestionAnswered":
            break
        before_first_answer.append(e)
    assert not any(isinstance(e, RegionLocated) for e in before_first_answer) and _locates(script) == []
    list(events)
    assert _locates(script) == ["eyes"]


def test_a_tree_without_regions_locates_nothing_and_records_no_regions():
    tree = compile_tree(ROOT / "question_trees" / "cifake.yaml")
    result = TreeRunner(tree, OracleAnswerer({"Texture repetition patterns"}, facts={"obj": "cat"})).run(
        ImageContext(image=_image()), {"obj": "cat"})
    assert result.regions == {} and "regions" not in result.to_dict(events=False)


def test_many_images_walked_together_locate_each_image_its_own_box(lazy):
    boxes = {"a": [1, 2, 30, 20], "b": [5, 6, 40, 44]}
    contexts = [ImageContext(image=_image(64, 48), image_id=k) for k in boxes]

    def factory(context):
        return ScriptedAnswerer({"q": "yes", "eyes": "yes", "irises": "yes"}, regions={"eyes": boxes[context.image_id]})

    alone = [TreeRunner(lazy, factory(c)).run(c) for c in contexts]
    together = dict(TreeRunner(lazy, PerImageAnswerers(factory, max_images=2)).run_many(
        [(c, None) for c in contexts], batch_images=2))
    for i, k in enumerate(boxes):
        assert together[i].regions == alone[i].regions
        assert together[i].regions["eyes"]["box"] == boxes[k]


# -- a real (tiny) HF model -------------------------------------------------------------------------------------

def test_locate_on_a_tiny_real_model_parses_its_greedy_output(tiny_models, tmp_path):
    from explainer.answerers.hf import load_vlm

    vlm = load_vlm(str(tiny_models[0]), device="cpu")
    context = ImageContext(image=_image(64, 48), image_id="x")
    query = LocateQuery("eyes", "the eyes", 64, 48)
    vlm.begin_image(context)
    try:
        [answer] = vlm.locate([query])
        [free] = vlm.follow_up([FollowUpQuery("(region eyes)", locate_question(query), None, LOCATE_MAX_NEW_TOKENS,
                                              free_text=True)])
    finally:
        vlm.end_image()
    assert answer.text == free.text and answer.tokens > 0  # the same greedy generation, counted
    assert (answer.box, answer.why) == parse_box(answer.text, 64, 48)
    # a walk that starts about the eyes: located through the model, or (random weights: no box) fallen back
    tree_file = tmp_path / "eyes.yaml"
    tree_file.write_text(f"""
tree: eyes
regions:
  eyes: {{locate: ask_vlm, prompt: the eyes, fallback: marked}}
  marked: {{locate: detector_box, fallback: image}}
  image: {{locate: whole}}
start: q
nodes:
  q:
    region: eyes
    ask: Look at {{{{ roi }}}}. Odd?
    artifact: {ART}
""")
    tree = compile_tree(tree_file)
    result = TreeRunner(tree, vlm).run(context)
    eyes = result.regions["eyes"]
    assert list(result.regions)[0] == "eyes" and eyes["answer"] == answer.text
    if answer.box is None:  # what the tiny random model does: its text is quoted, and the fallbacks are notes
        assert not eyes["located"] and eyes["used"] == "image" and eyes["box"] == [0, 0, 64, 48]
        assert result.notes[0].startswith(f"region 'eyes' (ask_vlm 'the eyes'): {answer.why}; using region 'marked'")
        assert result.notes[1].startswith("region 'marked' (detector_box): no detector box")
        assert result.questions[0].prompt == "Look at the whole image. Odd?"
    else:
        assert eyes["located"] and eyes["box"] == list(answer.box)
    # two images walked together locate through the multi-image path: the same as one at a time
    second = ImageContext(image=_image(48, 64), image_id="y")
    alone = [TreeRunner(tree, vlm).run(c).regions for c in (context, second)]
    together = dict(TreeRunner(tree, vlm).run_many([(context, None), (second, None)], batch_images=2))
    assert [together[0].regions, together[1].regions] == alone


# -- end to end through `explain` ----------------------------------------------------------------------------------

E2E_TREE = f"""
tree: e2e
regions:
  eyes: {{locate: ask_vlm, prompt: the eyes, fallback: marked}}
  hair: {{locate: ask_vlm, prompt: the hair, wording: the hair, fallback: image}}
  marked: {{locate: detector_box, fallback: image}}
  image: {{locate: whole}}
  never: {{locate: background, fallback: image}}
start: top
nodes:
  top:
    all: [e, h, gate]
  e:
    region: eyes
    ask: Look at {{{{ roi }}}}. Does the texture repeat?
    artifact: {ART}
    explain: The texture of {{{{ roi }}}} repeats.
  h:
    region: hair
    ask: Look at {{{{ roi }}}}. Does the texture repeat?
    artifact: {ART}
  gate:
    ask: Is the background odd?
    if_yes: bg
  bg:
    region: never
    ask: Look at {{{{ roi }}}}. Is it cut off?
    artifact: Abruptly cut off objects
"""


def test_scripted_boxes_end_to_end_through_explain(tmp_path, monkeypatch, capsys):
    tree = tmp_path / "e2e.yaml"
    tree.write_text(E2E_TREE)
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "7.png")
    script = ScriptedAnswerer({"e": "yes", "h": "yes", "gate": "no"}, regions={"eyes": [4, 8, 600, 40], "hair": "none"})
    monkeypatch.setattr("explainer.answerers.hf.load_vlm", lambda *a, **k: script)
    out = tmp_path / "out"
    code = main([str(tmp_path / "7.png"), "--tree", str(tree), "--vlm", "scripted", "--device", "cpu", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    shown = capsys.readouterr().out
    [record] = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    width = Image.open(tmp_path / "7.png").width * 4  # the super-resolved image the VLM is shown
    assert _locates(script) == ["eyes", "hair"]  # `never` is behind a `no`: not located
    assert set(record["regions"]) == {"eyes", "hair", "image"}
    assert record["regions"]["eyes"]["box"] == [4, 8, width, 40]  # clamped to the image
    assert record["regions"]["hair"] == {"locate": "ask_vlm", "located": False, "used": "image", "box": [0, 0, width, width],
                                         "wording": ROI_WITHOUT_BOX, "answer": "none"}
    assert any("region 'hair' (ask_vlm 'the hair'):" in n and "using region 'image' instead" in n for n in record["notes"])
    prompts = {q["node_id"]: q["prompt"] for q in record["questions"]}
    assert prompts["e"] == f"Look at the eyes in the box from (4, 8) to ({width}, 40) of this {width}x{width} image. Does the texture repeat?"
    assert prompts["h"] == "Look at the whole image. Does the texture repeat?"
    assert sorted((f["artifact"], f["region"]) for f in record["findings"]) == [(ART, "eyes"), (ART, "hair")]
    # task2.json keeps the artifact found in two regions as two findings, each with its region
    [entry] = json.loads((out / "task2.json").read_text())
    both = entry["explanation"][ART]
    assert "In the eyes: The texture of the eyes in the box" in both and "In the hair: " in both
    assert f"eyes: box (4, 8, {width}, 40) (ask_vlm)" in " ".join(shown.split())  # the terminal view


def test_explain_report_page_draws_and_lists_the_regions(tmp_path):
    from explainer.outputs.report import render_page
    from explainer.pipeline import ImageReport

    sr = _image(64, 64)
    report = ImageReport(file=str(tmp_path / "1.png"), index=1, regions={
        "eyes": {"locate": "ask_vlm", "located": True, "used": "eyes", "box": [4, 8, 30, 20], "wording": "the eyes"},
        "hair": {"locate": "ask_vlm", "located": False, "used": "image", "box": [0, 0, 64, 64], "wording": "x"}})
    report.artifacts = {"original": sr, "sr": sr}
    page = render_page(report, original=sr)
    assert "eyes: box (4, 8, 30, 20) (ask_vlm)" in page
    assert "hair: not located (ask_vlm), uses region &#39;image&#39;: box (0, 0, 64, 64)" in page or \
           "hair: not located (ask_vlm), uses region 'image': box (0, 0, 64, 64)" in page
    assert "eyes (4, 8, 30, 20)" in page  # the figure of located boxes (hair's stand-in is not drawn)


# -- the portrait tree and the schemas --------------------------------------------------------------------------------

def test_portrait_tree_speaks_of_located_eyes_and_hair():
    tree = compile_tree(ROOT / "question_trees" / "portraits.yaml")
    kinds = {n: r.locate for n, r in tree.regions.items()}
    assert {kinds[n] for n in ("eyes", "mouth", "ears", "hair")} == {"ask_vlm"}
    assert kinds["background"] == "background" and kinds["image"] == "whole"
    script = ScriptedAnswerer({"face": "yes", "skin_and_hair": "yes", "eyes": "yes", "hair": "yes", "irises": "yes",
                               "eyelids": "no", "eye_reflections": "no", "hair_merge": "yes", "hair_strands": "no",
                               "hair_repeat": "no", "mouth": "no", "face_shape": "no", "skin": "no"},
                              regions={"eyes": [40, 30, 90, 50], "hair": [10, 0, 120, 40]})
    result = TreeRunner(tree, script).run(ImageContext(image=_image(128, 128)))
    # the mouth is asked about (and so located); the ears (under face_shape's no) and the background are never reached
    assert _locates(script) == ["eyes", "mouth", "hair"]
    assert "ears" not in result.regions and "background" not in result.regions
    assert result.regions["mouth"]["used"] == "image"  # no box scripted, no detector box: marked, then the image
    assert result.regions["eyes"]["box"] == [40, 30, 90, 50] and result.regions["hair"]["box"] == [10, 0, 120, 40]
    found = {f.artifact: f.region for f in result.findings}
    assert found == {"Mismatched irises or pupils": "eyes", "Hair merging into skin or background": "hair"}
    prompts = {e.node_id: e.prompt for e in result.questions}
    assert prompts["eyes"].startswith("Look at the person's eyes in the box from (40, 30) to (90, 50)")
    assert "the whole image" in prompts["light_and_rendering"]


def test_schema_accepts_the_portrait_regions_and_refuses_a_broken_region(capsys):
    import jsonschema
    import yaml

    assert main(["tree", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    data = yaml.safe_load((ROOT / "question_trees" / "portraits.yaml").read_text())
    jsonschema.validate(data, schema)
    for bad in ({"eyes": {"locate": "ask_vlm"}}, {"eyes": {"locate": "whole", "prompt": "x"}},
                {"eyes": {"locate": "ask_llm", "prompt": "x"}}, {"eyes": {"locate": "whole", "fallbak": "y"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**data, "regions": bad}, schema)
    assert main(["tree", "schema", "--answers"]) == 0
    answers = json.loads(capsys.readouterr().out)
    jsonschema.validate({"regions": {"eyes": [1, 2, 3, 4], "hair": "none"}, "defaults": {"locate": "error"}}, answers)
    for bad in ({"regions": {"eyes": [1, 2, 3]}}, {"regions": {"eyes": "nowhere"}}, {"defaults": {"locate": "maybe"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, answers)


def test_tree_walk_answers_file_gives_boxes_with_file_line_errors(tmp_path, capsys):
    tree = tmp_path / "lazy.yaml"
    tree.write_text(LAZY_TREE)
    good = tmp_path / "good.yaml"
    good.write_text("answers: {q: yes, eyes: yes, irises: yes}\nregions:\n  eyes: [1, 2, 30, 40]\n")
    assert main(["tree", "walk", str(tree), "--answers", str(good), "--json"]) == 0
    walked = json.loads(capsys.readouterr().out)
    assert walked["regions"]["eyes"]["box"] == [1, 2, 30, 40]  # no image: the box as given
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions:\n  eys: [1, 2, 3, 4]\n  hair: [5, 5, 1, 9]\ndefaults: {locate: maybe}\n")
    assert main(["tree", "walk", str(tree), "--answers", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: regions.eys: tree 'lazy' asks for no box for region 'eys' (did you mean 'eyes'?)" in err
    assert f"{bad}:3: regions.hair: a box needs 0 <= x0 < x1 and 0 <= y0 < y1" in err
    assert f"{bad}:4: defaults.locate: must be 'none' or 'error'" in err


def test_ask_all_words_skipped_questions_without_locating_anything(lazy):
    from explainer.quality.askall import ask_skipped

    script = ScriptedAnswerer({"q": "yes", "eyes": "no"}, regions={"eyes": [8, 16, 40, 30], "hair": [1, 1, 9, 9]})
    context = ImageContext(image=_image(64, 48))
    walk = TreeRunner(lazy, script).run(context)
    extra = {q["node_id"]: q["prompt"] for q in ask_skipped(lazy, script, context, walk, {})}
    assert _locates(script) == ["eyes"]  # the extra questions locate nothing
    assert extra["hair"] == "Look at the hair. Odd? Answer yes or no."  # never located: its words, no box
    assert extra["irises"].startswith("In the eyes in the box from (8, 16) to (40, 30)")  # as the walk located it
