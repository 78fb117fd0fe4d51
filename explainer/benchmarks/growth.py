"""How the tree's cost grows with the catalogue: generated trees of the cifake tree's shape for 70, 140, 280 artifacts.

Shape: one region question (face / body / background, like the shipped tree's),
then per region gates of ``branching`` related artifacts, nested one level deeper
each time the region's top level would exceed ``top`` gates, an ``at_least_one``
under every gate (all members but the last asked, the last inferred), one
question per artifact. The catalogue is synthetic ("Synthetic artifact 017").

What is held fixed as the catalogue grows is the number of artifacts an image
carries (2.4 on average, the seed team's published mean): p per applicable
artifact is 2.4 / applicable, so a bigger catalogue means rarer artifacts, not
more of them per image. Under that assumption a tree's cost grows with its depth;
with p fixed instead, every extra artifact would add findings and no tree could
stay flat (the entropy floor grows with the catalogue).
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


def generate_tree(folder: str | Path, n_artifacts: int, branching: int = 4, top: int = 6) -> Path:
    """Write ``catalogue.yaml`` and ``tree.yaml`` for ``n_artifacts`` into ``folder``; return the tree's path."""
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
    per_region = [names[i::len(REGIONS)] for i in range(len(REGIONS))]
    for region, members in zip(REGIONS, per_region):
        level = []
        for name in members:
            node_id = "a" + name.rsplit(" ", 1)[1]
            nodes[node_id] = {"ask": f"Does the {region} show {name.lower()}? {{{{ yn }}}}", "artifact": name}
            level.append((node_id, [name]))
        depth = 0
        while len(level) > top:
            depth += 1
            grouped = []
            for g in range(0, len(level), branching):
                chunk = level[g : g + branching]
                if len(chunk) == 1:
                    grouped.append(chunk[0])
                    continue
                covered = [n for _, ns in chunk for n in ns]
                gate = f"{region}_g{depth}_{g // branching}"
                nodes[gate] = {"ask": f"Does the {region} show any of {', '.join(n.lower() for n in covered[:3])}"
                                      f"{' or related defects' if len(covered) > 3 else ''}? {{{{ yn }}}}",
                               "if_yes": {"at_least_one": [c for c, _ in chunk]}}
                grouped.append((gate, covered))
            level = grouped
        nodes[f"{region}_root"] = {"all": [c for c, _ in level]}
    tree = {"tree": f"generated-{n_artifacts}", "description": f"{n_artifacts} synthetic artifacts, gates of {branching}",
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
    seconds: float | None = None  # per image with the model (None: counted with the oracle only)
    timed_images: int = 0


def _sample_truth(tree, rng: random.Random) -> tuple[str, set[str]]:
    region = rng.choice(REGIONS)
    applicable = sorted(tree.leads_to((f"{region}_root",), {"region": region}))
    p = ARTIFACTS_PER_IMAGE / len(applicable)
    return region, {a for a in applicable if rng.random() < p}


def run_growth(folder: str | Path, sizes: Sequence[int] = (70, 140, 280), samples: int = 400, seed: int = 0,
               vlm: Any = None, timed_images: int = 0, on_progress=lambda msg: None) -> list[GrowthRow]:
    """Questions per image (oracle, ``samples`` images) and, with ``vlm``, seconds per image on ``timed_images``."""
    from explainer.bench import OracleDriven, synthetic_images
    from explainer.trees import compile_tree

    rows = []
    for n in sizes:
        on_progress(f"growth: {n} artifacts")
        tree = compile_tree(generate_tree(Path(folder) / f"generated-{n}", n))
        rng = random.Random(seed)
        walks = []
        for _ in range(samples):
            region, truth = _sample_truth(tree, rng)
            walks.append(TreeRunner(tree, OracleAnswerer(truth, facts={"region": region})).run(ImageContext(), {}))
        depth = max(w.rounds for w in walks)
        row = GrowthRow(artifacts=n, depth=depth,
                        questions=statistics.fmean(w.yes_no + w.choices + w.follow_ups for w in walks),
                        rounds=statistics.fmean(w.rounds for w in walks))
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
    return rows
