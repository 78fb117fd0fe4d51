"""The direct-prompting baseline tree stays in step with the catalogue."""

from __future__ import annotations

from pathlib import Path

from explainer.answerers.scripted import ScriptedAnswerer
from explainer.engine import TreeRunner
from explainer.trees import builtin_catalogue, compile_tree

DIRECT = Path(__file__).resolve().parents[1] / "question_trees" / "direct.yaml"


def test_direct_tree_asks_every_artifact_once_in_one_round():
    tree = compile_tree(DIRECT)
    questions = [n for n in tree.spec.nodes.values() if n.kind == "ask"]
    assert [q.artifact for q in questions] == builtin_catalogue().names
    ans = ScriptedAnswerer({}, defaults={"yes_no": "no"})
    result = TreeRunner(tree, ans).run()
    assert result.yes_no == 70 and result.rounds == 1
    assert len(ans.calls) == 1 and len(ans.calls[0].node_ids) == 70
    # each question names its artifact's catalogue description
    for q, prompt in zip(questions, ans.calls[0].prompts):
        assert builtin_catalogue()[q.artifact].description in prompt
