"""How the tree's cost grows with the catalogue: generated trees for 70, 140, 280 artifacts.

Two shapes, each built by the same rule at every size:

- ``wide``, the shipped cifake tree's kind: one region question (face / body /
  background), then per region an ``all`` of ``top`` gates (6), and under every
  gate an ``at_least_one`` of ``fanout`` members (3): smaller gates while more
  than one artifact is left, then one question per artifact; chunk sizes differ
  by at most one at every level. The cifake tree is its two-level case; a bigger
  catalogue adds levels, not width. Few rounds (the members of a gate are asked
  together).
- ``cheapest``: the region question, then the gate hierarchy with the fewest
  expected questions under the engine's rules (``gate_plan``): two-way gates
  whose smaller part (about 38%) is asked first and whose larger part is inferred
  when the smaller says no. Fewer questions at every size, about 1.5x the rounds.

What is held fixed as the catalogue grows is the number of artifacts an image
carries (2.4 on average, the seed team's published mean): p per applicable
artifact is 2.4 / applicable, so a bigger catalogue means rarer artifacts, not
more of them per image. Under that assumption a tree's cost grows with its depth;
with p fixed instead, every extra artifact would add findings and no tree could
stay flat (the entropy floor grows with the catalogue).

Questions per image are given exactly (``gate_plan.expected_questions``) and
counted on oracle walks of the real engine, which must agree within sampling
error. An ideal yes/no tree would still need 2.4 x log2(4) = 4.8 more questions
for 4x the catalogue (the entropy of 2.4 findings among 4x as many), about 1.4x
its cost at 70; fixed gates pay about 1.4 questions per extra bit at best.
The catalogue is synthetic ("Synthetic artifact 017").
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from explainer.answerers.base import ImageContext
from explainer.answerers.oracle import OracleAnswerer
from explainer.benchmarks.gate_plan import Hierarchy, cheapest_hierarchy, expected_questions
from explainer.engine import TreeRunner

REGIONS = ("face", "body", "background")
ARTIFACTS_PER_IMAGE = 2.4
TOP_GATES = 6  # a region's `all`: the shipped tree's regions hold 4 to 11 gates
FANOUT = 3  # members per gate: the shipped tree's gates hold 2 to 5 artifacts, 3.3 on average
SHAPES = ("wide", "cheapest")
SHAPE_WORDS = {
    "wide": (f"a region question, {TOP_GATES} gates per region, every gate an at_least_one of {FANOUT} members "
             "(smaller gates, then artifacts): few rounds"),
    "cheapest": "a region question, then the hierarchy with the fewest expected questions "
                "(two-way gates, the smaller part asked first): more rounds",
}


def _split(items: list, parts: int) -> list[list]:
    """``items`` in ``parts`` consecutive chunks whose sizes differ by at most one (no empty chunk)."""
    parts = min(parts, len(items))
    size, extra = divmod(len(items), parts)
    chunks, at = [], 0
    for i in range(parts):
        step = size + (i < extra)
        chunks.append(items[at : at + step])
        at += step
    return chunks


def synthetic_names(n_artifacts: int) -> list[str]:
    """The generated catalogue's names, in order ("Synthetic artifact 017")."""
    return [f"Synthetic artifact {i:03d}" for i in range(1, n_artifacts + 1)]


def wide_hierarchy(members: list[str], top: int = TOP_GATES, fanout: int = FANOUT) -> list[Hierarchy]:
    """The shipped tree's kind: ``top`` balanced gates under the root, each splitting ``fanout`` ways down."""

    def gate(items: list[str]) -> Hierarchy:
        return items[0] if len(items) == 1 else tuple(gate(c) for c in _split(items, fanout))

    return [gate(chunk) for chunk in _split(members, top)]


def cheapest_tree_hierarchy(members: list[str]) -> list[Hierarchy]:
    """The hierarchy with the fewest expected questions for these members at 2.4 artifacts per image."""
    return cheapest_hierarchy(len(members), ARTIFACTS_PER_IMAGE / len(members)).build(members)


def region_hierarchies(n_artifacts: int, shape: str = "wide", fanout: int = FANOUT,
                       top: int = TOP_GATES) -> dict[str, list[Hierarchy]]:
    """Per region, the root's members: artifact names, or tuples of members (gates)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    if fanout < 2 or top < 1 or n_artifacts < len(REGIONS):
        raise ValueError(f"need fanout >= 2, top >= 1 and at least {len(REGIONS)} artifacts; "
                         f"got fanout {fanout}, top {top}, {n_artifacts} artifacts")
    names = synthetic_names(n_artifacts)
    per_region = {r: names[i::len(REGIONS)] for i, r in enumerate(REGIONS)}
    if shape == "cheapest":
        return {r: cheapest_tree_hierarchy(m) for r, m in per_region.items()}
    return {r: wide_hierarchy(m, top, fanout) for r, m in per_region.items()}


def expected_cost(n_artifacts: int, shape: str = "wide", fanout: int = FANOUT, top: int = TOP_GATES) -> float:
    """Exact expected questions per image (the region choice included) under the sampling model of ``run_growth``."""
    costs = [expected_questions(roots, ARTIFACTS_PER_IMAGE / len(_leaves(roots)))
             for roots in region_hierarchies(n_artifacts, shape, fanout, top).values()]
    return 1 + statistics.fmean(costs)  # regions are sampled uniformly


def _leaves(node) -> list[str]:
    if isinstance(node, (list, tuple)):
        return [leaf for child in node for leaf in _leaves(child)]
    return [node]


def generate_tree(folder: str | Path, n_artifacts: int, fanout: int = FANOUT, top: int = TOP_GATES,
                  shape: str = "wide") -> Path:
    """Write ``catalogue.yaml`` and ``tree.yaml`` for ``n_artifacts`` into ``folder``; return the tree's path.

    ``shape`` "wide": each region's ``all`` holds ``top`` gates, every gate an
    ``at_least_one`` of ``fanout`` members (smaller gates or artifact questions,
    sizes differing by at most one), down to the artifacts; a bigger catalogue
    adds levels, not width. "cheapest": the hierarchy with the fewest expected
    questions (``gate_plan.cheapest_hierarchy``): two-way gates, the smaller
    part asked first.
    """
    hierarchies = region_hierarchies(n_artifacts, shape, fanout, top)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = synthetic_names(n_artifacts)
    catalogue = [{"name": n, "description": f"the image shows synthetic defect number {i}"}
                 for i, n in enumerate(names, 1)]
    nodes: dict[str, Any] = {
        "region": {"choose": "Where is the region inside the red box: on the object's face, on its body, or on the "
                             "background? Answer with one word: face, body or background.",
                   "sets": "region", "options": {r: f"{r}_root" for r in REGIONS}},
    }

    def emit(region: str, node: Hierarchy, path: str) -> str:
        """The node id for ``node``: the artifact question itself, or a gate over its members."""
        if not isinstance(node, tuple):
            node_id = "a" + node.rsplit(" ", 1)[1]
            nodes[node_id] = {"ask": f"Does the {region} show {node.lower()}? {{{{ yn }}}}", "artifact": node}
            return node_id
        children = [emit(region, child, f"{path}_{i}") for i, child in enumerate(node)]
        members = _leaves(node)
        gate = f"{region}_g{path}"
        nodes[gate] = {"ask": f"Does the {region} show any of {', '.join(n.lower() for n in members[:3])}"
                              f"{' or related defects' if len(members) > 3 else ''}? {{{{ yn }}}}",
                       "if_yes": {"at_least_one": children}}
        return gate

    for region, roots in hierarchies.items():
        nodes[f"{region}_root"] = {"all": [emit(region, node, str(i)) for i, node in enumerate(roots)]}
    described = (f"{top} gates per region, balanced gates of {fanout}" if shape == "wide"
                 else "the fewest expected questions: two-way gates, the smaller part asked first")
    tree = {"tree": f"generated-{n_artifacts}", "description": f"{n_artifacts} synthetic artifacts, {described}",
            "catalogue": "catalogue.yaml", "preamble": "This image may be AI-generated.",
            "vars": {"yn": "Answer yes or no."}, "defaults": {"threshold": 0.5}, "start": "region", "nodes": nodes}
    (folder / "catalogue.yaml").write_text(yaml.safe_dump(catalogue, sort_keys=False))
    path = folder / "tree.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False, width=200))
    return path


@dataclass
class GrowthRow:
    artifacts: int
    depth: int  # most rounds any sampled image took
    questions: float  # per image, sampled walks: yes/no + the region choice
    rounds: float
    shape: str = "wide"
    # exact expectation of questions per image (gate_plan.expected_questions); the sampled mean converges to it
    expected: float = 0.0
    questions_se: float = 0.0  # standard error of the sampled mean
    ratio_to_smallest: float = 1.0  # expected / the same shape's smallest catalogue's expected
    sampled_ratio_to_smallest: float = 1.0
    # The fewest questions any tree could average here: the region choice plus the entropy of the artifact
    # set (sum of H(p) over the region's artifacts), since a yes/no answer carries at most one bit.
    floor: float = 0.0
    floor_ratio_to_smallest: float = 1.0
    seconds: float | None = None  # mean per image with the model (None: counted with the oracle only)
    timed_images: int = 0


def _floor(tree) -> float:
    from explainer.stats.tree_cost import entropy_bits

    bits = []
    for region in REGIONS:
        n = len(tree.leads_to((f"{region}_root",), {"region": region}))
        bits.append(n * entropy_bits(ARTIFACTS_PER_IMAGE / n))
    return 1 + statistics.fmean(bits)  # regions are sampled uniformly


def _sample_truth(tree, rng: random.Random) -> tuple[str, set[str]]:
    region = rng.choice(REGIONS)
    applicable = sorted(tree.leads_to((f"{region}_root",), {"region": region}))
    p = ARTIFACTS_PER_IMAGE / len(applicable)
    return region, {a for a in applicable if rng.random() < p}


def _time_walks(trees: dict[str, Any], vlm: Any, images: int, seed: int) -> dict[str, float]:
    """Mean seconds per image with the model answering (K=1), the oracle choosing the answers, per shape (the mean,
    not the median: throughput is total time over images, and the walks differ in length by design).

    The shapes walk the same images with the same artifacts, interleaved image by image (their order
    alternating), so a machine that speeds up or slows down during the run does not favour one shape.
    """
    from explainer.bench import OracleDriven, synthetic_images

    rng = random.Random(seed)
    first = next(iter(trees.values()))  # every shape covers the same artifacts per region
    secs: dict[str, list[float]] = {shape: [] for shape in trees}
    for i, img in enumerate(synthetic_images(images, seed)):
        region, truth = _sample_truth(first, rng)
        image = ImageContext(image=img.resize((128, 128)))
        for shape in (list(trees) if i % 2 == 0 else list(reversed(trees))):
            answerer = OracleDriven(vlm, OracleAnswerer(truth, facts={"region": region}))
            start = time.perf_counter()
            TreeRunner(trees[shape], answerer).run(image, {})
            secs[shape].append(time.perf_counter() - start)
    return {shape: statistics.fmean(v) for shape, v in secs.items()}


def run_growth(folder: str | Path, sizes: Sequence[int] = (70, 140, 280), samples: int = 400, seed: int = 0,
               vlm: Any = None, timed_images: int = 0, on_progress=lambda msg: None,
               fanout: int = FANOUT, top: int = TOP_GATES, shapes: Sequence[str] = SHAPES) -> list[GrowthRow]:
    """Per shape and catalogue size: exact expected questions per image, the same counted on ``samples`` oracle
    walks of the real engine, and, with ``vlm``, seconds per image on ``timed_images``."""
    from explainer.trees import compile_tree

    if samples < 2:
        raise ValueError(f"need at least 2 samples per size, got {samples}")
    rows: dict[tuple[str, int], GrowthRow] = {}
    trees: dict[int, dict[str, Any]] = {n: {} for n in sizes}
    for shape in shapes:
        for n in sizes:
            on_progress(f"growth: {shape} tree, {n} artifacts")
            path = generate_tree(Path(folder) / f"{shape}-{n}", n, fanout=fanout, top=top, shape=shape)
            tree = trees[n][shape] = compile_tree(path)
            rng = random.Random(seed)
            walks = []
            for _ in range(samples):
                region, truth = _sample_truth(tree, rng)
                walks.append(TreeRunner(tree, OracleAnswerer(truth, facts={"region": region})).run(ImageContext(), {}))
            counts = [w.yes_no + w.choices + w.follow_ups for w in walks]
            rows[shape, n] = GrowthRow(artifacts=n, depth=max(w.rounds for w in walks),
                                       questions=statistics.fmean(counts), rounds=statistics.fmean(w.rounds for w in walks),
                                       shape=shape, expected=expected_cost(n, shape, fanout, top),
                                       questions_se=statistics.stdev(counts) / len(counts) ** 0.5, floor=_floor(tree))
    if vlm is not None and timed_images:
        for n in sizes:
            on_progress(f"growth: timing {timed_images} images with the model, {n} artifacts")
            for shape, seconds in _time_walks(trees[n], vlm, timed_images, seed).items():
                rows[shape, n].seconds, rows[shape, n].timed_images = seconds, timed_images
    for shape in shapes:
        smallest = rows[shape, sizes[0]]
        for n in sizes:
            r = rows[shape, n]
            r.ratio_to_smallest = r.expected / smallest.expected
            r.sampled_ratio_to_smallest = r.questions / smallest.questions
            r.floor_ratio_to_smallest = r.floor / smallest.floor
    return [rows[shape, n] for shape in shapes for n in sizes]
