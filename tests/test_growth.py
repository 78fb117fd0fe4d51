"""Generated trees for the cost-growth benchmark: valid, the right catalogue, deeper as they grow."""

from __future__ import annotations

import random

import yaml

from explainer.benchmarks.growth import ARTIFACTS_PER_IMAGE, REGIONS, _sample_truth, generate_tree
from explainer.trees import compile_tree


def test_generated_trees_compile_and_cover_their_catalogue(tmp_path):
    depths = []
    for n in (70, 280):
        path = generate_tree(tmp_path / str(n), n)
        tree = compile_tree(path)  # the real compiler: every name verbatim from the generated catalogue
        assert len(tree.catalogue) == n
        covered = set()
        for region in REGIONS:
            covered |= tree.leads_to((f"{region}_root",), {"region": region})
        assert covered == set(tree.catalogue.names)
        spec = yaml.safe_load(path.read_text())
        gates = [k for k, v in spec["nodes"].items() if "if_yes" in v]
        assert all(1 < len(spec["nodes"][g]["if_yes"]["at_least_one"]) <= 4 for g in gates)
        assert all(len(spec["nodes"][f"{r}_root"]["all"]) <= 6 for r in REGIONS)
        depths.append(max(int(g.split("_g")[1].split("_")[0]) for g in gates))
    assert depths[1] > depths[0]  # a bigger catalogue nests deeper instead of widening the top


def test_artifacts_per_image_stay_fixed(tmp_path):
    tree = compile_tree(generate_tree(tmp_path, 280))
    rng = random.Random(1)
    counts = [len(_sample_truth(tree, rng)[1]) for _ in range(2000)]
    assert abs(sum(counts) / len(counts) - ARTIFACTS_PER_IMAGE) < 0.15
