"""How the tree's cost grows with the catalogue: generated trees of the cifake tree's kind for 70, 140, 280 artifacts.

Shape (a balanced hierarchy): one region question (face / body / background,
like the shipped tree's), then per region an ``all`` of ``top`` gates (6), and
under every gate an ``at_least_one`` of ``fanout`` members (3): smaller gates
while more than one artifact is left, then one question per artifact; chunk
sizes differ by at most one at every level. The shipped cifake tree is the
two-level case of this kind (a region's ``all`` of 4 to 11 gates, each an
``at_least_one`` of 2 to 5 artifacts); a bigger catalogue adds levels, not width.
The catalogue is synthetic ("Synthetic artifact 017").

What is held fixed as the catalogue grows is the number of artifacts an image
carries (2.4 on average, the seed team's published mean): p per applicable
artifact is 2.4 / applicable, so a bigger catalogue means rarer artifacts, not
more of them per image. Under that assumption a tree's cost grows with its depth;
with p fixed instead, every extra artifact would add findings and no tree could
stay flat (the entropy floor grows with the catalogue).

Each doubling of the catalogue adds about log_fanout(2) levels, and every found
artifact pays about ``fanout`` questions per level, so the cost grows by a
near-constant step per doubling (logarithmically). An ideal yes/no tree would
still need 2.4 × log2(4) = 4.8 more questions for 4× the catalogue (the entropy
of 2.4 findings among 4× as many), about 1.4× its cost at 70.
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
from explainer.engine import TreeRunner

REGIONS = ("face", "body", "background")
ARTIFACTS_PER_IMAGE = 2.4
TOP_GATES = 6  # a region's `all`: the shipped tree's regions hold 4 to 11 gates
FANOUT = 3  # members per gate: the shipped tree's gates hold 2 to 5 artifacts, 3.3 on average
SHAPE = (f"balanced: a region question, {TOP_GATES} gates per region, every gate an at_least_one of "
         f"{FANOUT} members (smaller gates, then artifacts)")


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


def generate_tree(folder: str | Path, n_artifacts: int, fanout: int = FANOUT, top: int = TOP_GATES) -> Path:
    """Write ``catalogue.yaml`` and ``tree.yaml`` for ``n_artifacts`` into ``folder``; return the tree's path.

    Each region's artifacts form a balanced hierarchy: the region's ``all`` holds
    ``top`` gates, every gate an ``at_least_one`` of ``fanout`` members (smaller
    gates or artifact questions, sizes differing by at most one), down to the
    artifacts; a bigger catalogue adds levels, not width.
    """
    if fanout < 2 or top < 1 or n_artifacts < len(REGIONS):
        raise ValueError(f"need fanout >= 2, top >= 1 and at least {len(REGIONS)} artifacts; "
                         f"got fanout {fanout}, top {top}, {n_artifacts} artifacts")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"Synthetic artifact {i:03d}" for i in range(1, n_artifacts + 1)]
    catalogue = [{"name": n, "description": f"the image shows synthetic defect number {i}"}
                 for i, n in enumerate(names, 1)]
    nodes: dict[str, Any] = {
        "region": {"choose": "Where is the region inside the red box: on the object's face, on its body, or on the "
                             "background? Answer with one word: face, body or background.",
                   "sets": "region", "options": {r: f"{r}_root" for r in REGIONS}},
    }

    def build(region: str, members: list[str], path: str) -> str:
        """The node id that covers ``members``: the artifact question itself, or a gate over balanced chunks."""
        if len(members) == 1:
            node_id = "a" + members[0].rsplit(" ", 1)[1]
            nodes[node_id] = {"ask": f"Does the {region} show {members[0].lower()}? {{{{ yn }}}}",
                              "artifact": members[0]}
            return node_id
        children = [build(region, chunk, f"{path}_{i}") for i, chunk in enumerate(_split(members, fanout))]
        gate = f"{region}_g{path}"
        nodes[gate] = {"ask": f"Does the {region} show any of {', '.join(n.lower() for n in members[:3])}"
                              f"{' or related defects' if len(members) > 3 else ''}? {{{{ yn }}}}",
                       "if_yes": {"at_least_one": children}}
        return gate

    per_region = [names[i::len(REGIONS)] for i in range(len(REGIONS))]
    for region, members in zip(REGIONS, per_region):
        top_ids = [build(region, chunk, str(i)) for i, chunk in enumerate(_split(members, top))]
        nodes[f"{region}_root"] = {"all": top_ids}
    tree = {"tree": f"generated-{n_artifacts}",
            "description": f"{n_artifacts} synthetic artifacts, {top} gates per region, balanced gates of {fanout}",
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
    questions: float  # per image: yes/no + the region choice
    rounds: float
    ratio_to_smallest: float = 1.0
    # The fewest questions any tree could average here: the region choice plus the entropy of the artifact
    # set (sum of H(p) over the region's artifacts), since a yes/no answer carries at most one bit.
    floor: float = 0.0
    floor_ratio_to_smallest: float = 1.0
    seconds: float | None = None  # per image with the model (None: counted with the oracle only)
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


def run_growth(folder: str | Path, sizes: Sequence[int] = (70, 140, 280), samples: int = 400, seed: int = 0,
               vlm: Any = None, timed_images: int = 0, on_progress=lambda msg: None,
               fanout: int = FANOUT, top: int = TOP_GATES) -> list[GrowthRow]:
    """Questions per image (oracle, ``samples`` images) and, with ``vlm``, seconds per image on ``timed_images``."""
    from explainer.bench import OracleDriven, synthetic_images
    from explainer.trees import compile_tree

    rows = []
    for n in sizes:
        on_progress(f"growth: {n} artifacts")
        tree = compile_tree(generate_tree(Path(folder) / f"generated-{n}", n, fanout=fanout, top=top))
        rng = random.Random(seed)
        walks = []
        for _ in range(samples):
            region, truth = _sample_truth(tree, rng)
            walks.append(TreeRunner(tree, OracleAnswerer(truth, facts={"region": region})).run(ImageContext(), {}))
        depth = max(w.rounds for w in walks)
        row = GrowthRow(artifacts=n, depth=depth,
                        questions=statistics.fmean(w.yes_no + w.choices + w.follow_ups for w in walks),
                        rounds=statistics.fmean(w.rounds for w in walks), floor=_floor(tree))
        if vlm is not None and timed_images:
            rng = random.Random(seed)
            secs = []
            for img in synthetic_images(timed_images, seed):
                region, truth = _sample_truth(tree, rng)
                answerer = OracleDriven(vlm, OracleAnswerer(truth, facts={"region": region}))
                start = time.perf_counter()
                TreeRunner(tree, answerer).run(ImageContext(image=img.resize((128, 128))), {})
                secs.append(time.perf_counter() - start)
            row.seconds, row.timed_images = statistics.median(secs), timed_images
        rows.append(row)
    for r in rows:
        r.ratio_to_smallest = r.questions / rows[0].questions
        r.floor_ratio_to_smallest = r.floor / rows[0].floor
    return rows
