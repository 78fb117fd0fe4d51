"""The traversal engine: frontier batching, group inference, follow-ups, limits, events."""

from __future__ import annotations

import json
import textwrap

import pytest

from explainer.answerers.scripted import ScriptedAnswerer
from explainer.engine import (
    AnswerInferred, FindingMade, FindingWithdrawn, QuestionAnswered, StepLimitReached, TreeRunner, WalkFinished,
)
from explainer.errors import UsageError
from explainer.trees import compile_tree


def _tree(tmp_path, body: str):
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(body))
    return compile_tree(path)


SMALL = """
    tree: small
    classes: [cat, car]
    inputs: [obj]
    vars: {yn: Answer yes or no.}
    start: region
    nodes:
      region:
        all: [a, b, c]
      a:
        ask: Is the {{ obj }} odd? {{ yn }}
        if_yes: {at_least_one: [a1, a2, a3]}
      a1:
        ask: Does it glow?
        artifact: Glow or light bleed around object boundaries
      a2:
        ask: Does it repeat?
        artifact: Texture repetition patterns
      a3:
        ask: Is part cut off?
        artifact: Abruptly cut off objects
        follow_up:
          ask: Which part of the {{ obj }} is cut off? One word, or 'none'.
          var: part
        explain: The {{ obj }}'s {{ part }} ends abruptly.
      b:
        ask: Is it smooth?
        threshold: 0.8
        artifact: Artificial smoothness
      c:
        applies_to: [car]
        ask: Are the wheels wrong?
        artifact: Incorrect wheel geometry
"""


def test_ready_questions_go_out_in_one_batch(tmp_path):
    tree = _tree(tmp_path, SMALL)
    ans = ScriptedAnswerer({"a": "yes", "a1": "no", "a2": "yes", "a3": "no", "b": 0.7})
    result = TreeRunner(tree, ans).run(scope={"obj": "cat"})
    kinds = [(c.kind, c.node_ids) for c in ans.calls]
    # round 1: every region gate at once (c does not apply to a cat); round 2: the group
    # members but the last; round 3: the last, asked because a2 said yes.
    assert kinds == [("yes_no", ("a", "b")), ("yes_no", ("a1", "a2")), ("yes_no", ("a3",))]
    assert result.artifacts == {"Texture repetition patterns"}
    assert result.rounds == 3 and result.yes_no == 5
    # b's own threshold (0.8) turned P(yes)=0.7 into no
    b = next(q for q in result.questions if q.node_id == "b")
    assert b.answer == "no" and b.threshold == 0.8 and b.p_yes == 0.7


def test_last_group_member_is_inferred_when_the_others_say_no(tmp_path):
    tree = _tree(tmp_path, SMALL)
    ans = ScriptedAnswerer({"a": "yes"}, follow_ups={"a3": "tail"})
    result = TreeRunner(tree, ans).run(scope={"obj": "cat"})
    inferred = [e for e in result.events if isinstance(e, AnswerInferred)]
    assert [e.node_id for e in inferred] == ["a3"]
    assert all("a3" not in c.node_ids for c in ans.calls if c.kind == "yes_no")
    assert result.findings[0].explanation == "The cat's tail ends abruptly."
    assert result.findings[0].p_yes is None and result.findings[0].detail == "tail"
    # the follow-up was asked in its own round after the inference
    assert ans.calls[-1].kind == "follow_up" and "Which part of the cat" in ans.calls[-1].prompts[0]


def test_none_withdraws_the_finding(tmp_path):
    tree = _tree(tmp_path, SMALL)
    ans = ScriptedAnswerer({"a": "yes"}, follow_ups={"a3": "none"})
    result = TreeRunner(tree, ans).run(scope={"obj": "cat"})
    assert result.findings == []
    assert any(isinstance(e, FindingWithdrawn) and e.artifact == "Abruptly cut off objects" for e in result.events)


def test_applies_to_filters_by_class(tmp_path):
    tree = _tree(tmp_path, SMALL)
    ans = ScriptedAnswerer({"c": "yes"})
    result = TreeRunner(tree, ans).run(scope={"obj": "car"})
    assert ans.calls[0].node_ids == ("a", "b", "c")
    assert result.artifacts == {"Incorrect wheel geometry"}


def test_events_are_typed_and_serialisable(tmp_path):
    tree = _tree(tmp_path, SMALL)
    result = TreeRunner(tree, ScriptedAnswerer({"b": "yes"})).run(scope={"obj": "cat"})
    assert isinstance(result.events[-1], WalkFinished)
    q = next(e for e in result.events if isinstance(e, QuestionAnswered) and e.node_id == "a")
    assert q.prompt == "Is the cat odd? Answer yes or no." and q.branch == ()
    made = [e for e in result.events if isinstance(e, FindingMade)]
    assert [m.artifact for m in made] == ["Artificial smoothness"]
    blob = json.loads(json.dumps(result.to_dict()))
    assert blob["counts"]["yes_no"] == 2 and blob["events"][0]["event"] == "walk_started"


def test_step_limit_stops_a_runaway_walk(cifake):
    ans = ScriptedAnswerer({}, defaults={"yes_no": "yes", "choice": "first", "follow_up": "x"})
    result = TreeRunner(cifake, ans, max_steps=5).run()
    assert result.truncated
    assert any(isinstance(e, StepLimitReached) for e in result.events)
    assert result.steps <= 5


def test_unknown_class_is_refused(cifake):
    with pytest.raises(UsageError, match="class 'spaceship' is not one of the tree's classes"):
        TreeRunner(cifake, ScriptedAnswerer({})).run(scope={"obj": "spaceship"})


def test_default_tree_batches_every_region_gate_together(cifake):
    ans = ScriptedAnswerer({"class": "dog", "living_region": "background"})
    result = TreeRunner(cifake, ans).run()
    assert [c.kind for c in ans.calls] == ["choice", "choice", "yes_no"]
    assert set(ans.calls[2].node_ids) == {"shadows", "light_quality", "geometry", "focus", "style", "repetition",
                                           "grain", "colour", "rendering"}
    assert result.findings == [] and result.rounds == 3


def test_scripted_answers_file_errors(tmp_path):
    bad = tmp_path / "a.yaml"
    bad.write_text("answers: [1, 2]\n")
    with pytest.raises(UsageError, match="a.yaml: an answers file is a mapping"):
        ScriptedAnswerer.from_file(bad)
    with pytest.raises(UsageError, match="nope.yaml: answers file not found"):
        ScriptedAnswerer.from_file(tmp_path / "nope.yaml")
    strict = ScriptedAnswerer({}, defaults={"yes_no": "error"})
    tree = _tree(tmp_path, SMALL)
    with pytest.raises(UsageError, match="no scripted answer for yes/no node 'a'"):
        TreeRunner(tree, strict).run(scope={"obj": "cat"})


def test_preamble_is_rendered_once_and_not_repeated_in_prompts(tmp_path):
    from explainer.answerers.base import AnswererBase, YesNoAnswer
    from explainer.engine import WalkStarted

    class Recorder(AnswererBase):
        def begin_image(self, context):
            super().begin_image(context)
            self.preambles = getattr(self, "preambles", []) + [context.preamble]

        def yes_no(self, queries):
            return [YesNoAnswer(0.0) for _ in queries]

    tree = _tree(tmp_path, SMALL.replace("start: region", "preamble: Look at {{ roi }} of this {{ obj }}.\n    start: region"))
    rec = Recorder()
    result = TreeRunner(tree, rec).run(scope={"obj": "cat"})
    assert rec.preambles == ["Look at the region inside the red box of this cat."]
    assert result.events[0] == WalkStarted("small", "", {"obj": "cat"}, "Look at the region inside the red box of this cat.")
    assert all("Look at" not in q.prompt for q in result.questions)


def test_preamble_may_only_use_what_is_known_before_the_walk(tmp_path):
    from explainer.trees import TreeError

    body = SMALL.replace("    inputs: [obj]\n", "").replace("start: region", "preamble: A {{ region }}.\n    start: region")
    with pytest.raises(TreeError, match="preamble: template uses 'region', which the tree never provides before the first question"):
        _tree(tmp_path, body)
