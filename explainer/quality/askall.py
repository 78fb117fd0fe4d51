"""``explain --ask-all``: after the walk, ask the yes/no questions its gates skipped, and record them.

The walk itself is unchanged (its findings are the tree's); the extra answers
are recorded with ``"gated": true`` so that ``explain calibrate supervised`` and
the precision-recall curve see every question's P(yes) on every image, as they
would from ``--strategy direct``. They cost one more image encoding and one
batch per image.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from explainer.answerers.base import Answerer, ImageContext, YesNoQuery
from explainer.engine.events import QuestionAnswered
from explainer.engine.regions import unlocated_wording
from explainer.engine.runner import WalkResult
from explainer.quality.paths import TreePaths
from explainer.trees.compiler import CompiledTree
from explainer.trees.templates import render


def ask_skipped(tree: CompiledTree, answerer: Answerer, context: ImageContext, walk: WalkResult,
                scope: Mapping[str, str], calibration: Any = None) -> list[dict[str, Any]]:
    asked = {e.node_id for e in walk.events if isinstance(e, QuestionAnswered) and e.kind == "yes_no"}
    final = {**scope, **walk.scope}
    todo: dict[str, dict[str, str]] = {}
    for node_id, sc in TreePaths(tree).ask_nodes(final):
        if node_id not in asked and node_id not in todo:
            todo[node_id] = sc
    if not todo:
        return []
    queries = []
    for node_id, sc in todo.items():
        region = sc.get("region")
        if region in tree.regions:  # worded as the walk located it; never located: its words without a box
            located = walk.regions.get(region)
            sc = {**sc, "roi": located["wording"] if located else unlocated_wording(tree.regions[region], sc.get("roi", ""))}
        node = tree.node(node_id)
        leads = frozenset({node.artifact}) if node.artifact else tree.leads_to(node.if_yes.ids if node.if_yes else (), sc)
        queries.append(YesNoQuery(node_id, render(tree.templates[(node_id, "ask")], sc), leads))
    preamble = tree.templates.get(("(tree)", "preamble"))
    if preamble is not None:
        context = dataclasses.replace(context, preamble=render(preamble, {**tree.base_scope(), **scope}))
    answerer.begin_image(context)
    try:
        answers = answerer.yes_no(queries)
    finally:
        answerer.end_image()
    out = []
    for q, a in zip(queries, answers):
        node = tree.node(q.node_id)
        threshold = node.threshold if node.threshold is not None else tree.spec.threshold
        p_cal = None
        if calibration is not None:
            p_cal = calibration.adjust(q.node_id, a.p_yes)
            threshold = calibration.threshold(q.node_id, threshold)
        yes = (a.p_yes if p_cal is None else p_cal) >= threshold
        out.append({"round": None, "node_id": q.node_id, "kind": "yes_no", "prompt": q.prompt,
                    "answer": "yes" if yes else "no", "p_yes": a.p_yes, "p_calibrated": p_cal, "mass": a.mass,
                    "tokens": a.tokens, "seconds": a.seconds, "gated": True})
    return out
