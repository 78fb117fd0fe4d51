"""Generated trees for the cost-growth benchmark: valid, balanced, the right catalogue, deeper as they grow,
a cost that grows by a near-constant step per doubling of the catalogue (like the depth), exact expectations
that match the engine, and a planner whose trees are the cheapest there are."""

from __future__ import annotations

import itertools
import random

import pytest
import yaml

from explainer.answerers.base import AnswererBase, ChoiceAnswer, ImageContext, YesNoAnswer
from explainer.answerers.oracle import OracleAnswerer
from explainer.benchmarks.gate_plan import cheapest_hierarchy, expected_questions
from explainer.benchmarks.growth import (
    ARTIFACTS_PER_IMAGE, FANOUT, REGIONS, TOP_GATES, _sample_truth, expected_cost, generate_tree, run_growth,
)
from explainer.engine import TreeRunner
from explainer.trees import compile_tree


def _leaf_depths(nodes: dict, node_id: str, depth: int = 0) -> list[int]:
    node = nodes[node_id]
    if "artifact" in node:
        return [depth]
    members = node["all"] if "all" in node else node["if_yes"]["at_least_one"]
    return [d for m in members for d in _leaf_depths(nodes, m, depth + 1)]


@pytest.mark.parametrize("n", [70, 280])
def test_generated_trees_are_balanced_and_cover_their_catalogue(tmp_path, n):
    path = generate_tree(tmp_path / str(n), n)
    tree = compile_tree(path)  # the real compiler: every name verbatim from the generated catalogue
    assert len(tree.catalogue) == n
    covered = set()
    for region in REGIONS:
        covered |= tree.leads_to((f"{region}_root",), {"region": region})
    assert covered == set(tree.catalogue.names)
    nodes = yaml.safe_load(path.read_text())["nodes"]
    gates = [v["if_yes"]["at_least_one"] for v in nodes.values() if "if_yes" in v]
    assert all(2 <= len(g) <= FANOUT for g in gates)
    for region in REGIONS:
        assert len(nodes[f"{region}_root"]["all"]) == TOP_GATES
        depths = _leaf_depths(nodes, f"{region}_root")
        assert max(depths) - min(depths) <= 1  # balanced: every artifact at the same depth, give or take one


def test_a_bigger_catalogue_adds_levels_not_width(tmp_path):
    deepest = []
    for n in (70, 280):
        nodes = yaml.safe_load(generate_tree(tmp_path / str(n), n).read_text())["nodes"]
        deepest.append(max(_leaf_depths(nodes, "face_root")))
        assert len(nodes["face_root"]["all"]) == TOP_GATES
    assert deepest[1] > deepest[0]


def test_cheapest_trees_cover_their_catalogue_with_two_way_gates_smaller_part_first(tmp_path):
    path = generate_tree(tmp_path, 280, shape="cheapest")
    tree = compile_tree(path)
    covered = set()
    for region in REGIONS:
        covered |= tree.leads_to((f"{region}_root",), {"region": region})
    assert covered == set(tree.catalogue.names)
    nodes = yaml.safe_load(path.read_text())["nodes"]

    def size(node_id):
        node = nodes[node_id]
        return 1 if "artifact" in node else sum(size(m) for m in node["if_yes"]["at_least_one"])

    gates = [v["if_yes"]["at_least_one"] for v in nodes.values() if "if_yes" in v]
    assert gates and all(len(g) == 2 for g in gates)
    assert all(size(asked) <= size(held_back) for asked, held_back in gates)
    # deeper than the wide tree: it trades rounds for questions
    wide = yaml.safe_load(generate_tree(tmp_path / "wide", 280).read_text())["nodes"]
    assert max(_leaf_depths(nodes, "face_root")) > max(_leaf_depths(wide, "face_root"))


def test_generator_refuses_degenerate_shapes(tmp_path):
    for kwargs in ({"fanout": 1}, {"top": 0}, {"shape": "tall"}):
        with pytest.raises(ValueError):
            generate_tree(tmp_path, 70, **kwargs)
    with pytest.raises(ValueError):
        generate_tree(tmp_path, 2)


def test_artifacts_per_image_stay_fixed(tmp_path):
    tree = compile_tree(generate_tree(tmp_path, 280))
    rng = random.Random(1)
    counts = [len(_sample_truth(tree, rng)[1]) for _ in range(2000)]
    assert abs(sum(counts) / len(counts) - ARTIFACTS_PER_IMAGE) < 0.15


def test_cost_grows_like_the_depth():
    """Exact expectations (no sampling). 4x the catalogue must cost far less than 4x the questions, and each
    doubling must add about the same number of questions (a log-like curve; a cost linear in the catalogue would
    double the step each time). The issue's target, at most 1.5x at 280 vs 70, is met by the cheapest fixed tree
    (1.4998x, computed), which is as low as a fixed gate tree goes; the wide shape is at 1.52x."""
    for shape, bound in (("wide", 1.53), ("cheapest", 1.5)):
        q = [expected_cost(n, shape) for n in (70, 140, 280)]
        assert q[2] / q[0] <= bound, shape
        assert q[2] - q[1] <= 1.15 * (q[1] - q[0]), shape
    for n in (70, 140, 280):
        assert expected_cost(n, "cheapest") < expected_cost(n, "wide")


@pytest.mark.parametrize("shape", ["wide", "cheapest"])
def test_exact_expectation_matches_the_engine_on_every_truth(tmp_path, shape):
    """The closed form against the real engine walked by the oracle on every artifact set of a small catalogue,
    each weighted by its probability: equal to rounding, so the formula is the engine's rules."""
    n = 18  # 6 per region: 64 artifact sets each
    tree = compile_tree(generate_tree(tmp_path, n, shape=shape, top=2))
    total = 0.0
    for region in REGIONS:
        applicable = sorted(tree.leads_to((f"{region}_root",), {"region": region}))
        p = ARTIFACTS_PER_IMAGE / len(applicable)
        for present in itertools.product((False, True), repeat=len(applicable)):
            truth = {a for a, yes in zip(applicable, present) if yes}
            walk = TreeRunner(tree, OracleAnswerer(truth, facts={"region": region})).run(ImageContext(), {})
            weight = p ** len(truth) * (1 - p) ** (len(applicable) - len(truth))
            total += weight * (walk.yes_no + walk.choices + walk.follow_ups) / len(REGIONS)
    assert total == pytest.approx(expected_cost(n, shape, top=2), abs=1e-9)


def test_sampled_walks_agree_with_the_exact_expectation(tmp_path):
    rows = run_growth(tmp_path, (70, 280), samples=300, seed=3)
    assert [(r.shape, r.artifacts) for r in rows] == [("wide", 70), ("wide", 280), ("cheapest", 70), ("cheapest", 280)]
    for r in rows:
        assert 0 < r.questions_se < 1
        assert abs(r.questions - r.expected) <= 4 * r.questions_se, (r.shape, r.artifacts)
        assert r.ratio_to_smallest == pytest.approx(r.expected / next(
            x.expected for x in rows if x.shape == r.shape and x.artifacts == 70))


def _all_hierarchies(m: int):
    """Every ordered gate hierarchy over m exchangeable artifacts (as nested tuples of sizes)."""
    if m == 1:
        yield 0
        return
    for parts in _compositions(m):
        if len(parts) >= 2:
            for kids in itertools.product(*(list(_all_hierarchies(k)) for k in parts)):
                yield tuple(kids)


def _compositions(m: int):
    if m == 0:
        yield ()
        return
    for first in range(1, m + 1):
        for rest in _compositions(m - first):
            yield (first,) + rest


@pytest.mark.parametrize("p", [0.1, 0.3, 0.6])
def test_the_planner_finds_the_cheapest_hierarchy_by_brute_force(p):
    """Against every hierarchy with any fan-out (and every cut of the root) for up to 6 artifacts."""
    for m in range(1, 7):
        plan = cheapest_hierarchy(m, p)
        assert expected_questions(plan.build(list(range(m))), p) == pytest.approx(plan.expected, abs=1e-12)
        best = min(sum(expected_questions([h], p) for h in forest)
                   for parts in _compositions(m)
                   for forest in itertools.product(*(list(_all_hierarchies(k)) for k in parts)))
        assert plan.expected == pytest.approx(best, abs=1e-12), m


def test_the_planner_refuses_nonsense():
    with pytest.raises(ValueError):
        cheapest_hierarchy(0, 0.1)
    with pytest.raises(ValueError):
        cheapest_hierarchy(5, 1.0)
    with pytest.raises(ValueError):
        expected_questions([(1,)], 0.1)  # a gate of one member
    with pytest.raises(ValueError):
        cheapest_hierarchy(4, 0.1).build([1, 2, 3])


def test_growth_rows_carry_the_entropy_floor(tmp_path):
    """The floor is the region choice plus sum H(p) over the region's artifacts; no tree averages fewer questions."""
    from explainer.stats.tree_cost import entropy_bits

    rows = run_growth(tmp_path, (70, 280), samples=200, seed=0)
    per_region = [len(chunk) for chunk in (list(range(70))[i::len(REGIONS)] for i in range(len(REGIONS)))]
    expected = 1 + sum(n * entropy_bits(ARTIFACTS_PER_IMAGE / n) for n in per_region) / len(REGIONS)
    assert rows[0].floor == pytest.approx(expected)
    assert rows[1].floor > rows[0].floor
    assert rows[1].floor_ratio_to_smallest == pytest.approx(rows[1].floor / rows[0].floor)
    for r in rows:
        assert r.expected > r.floor  # the bound holds, exactly
        assert r.questions >= 0.97 * r.floor  # and on the walks (200 samples of sampling noise allowed)


class _CountingModel(AnswererBase):
    """Stands in for the VLM in the timed walks: answers anything and logs which image each walk saw."""

    def __init__(self):
        super().__init__()
        self.walks: list[list] = []  # per walk: [image bytes, yes/no questions asked]

    def begin_image(self, context):
        super().begin_image(context)
        self.walks.append([context.image.tobytes(), 0])

    def yes_no(self, queries):
        self.walks[-1][1] += len(queries)
        return [YesNoAnswer(0.5, 1.0, 1, 0.0) for _ in queries]

    def choose(self, queries):
        return [ChoiceAnswer({o: 1 / len(q.options) for o in q.options}, 1, 0.0) for q in queries]


def test_timed_walks_interleave_the_shapes_on_the_same_images(tmp_path):
    model = _CountingModel()
    rows = run_growth(tmp_path, (9, 18), samples=10, vlm=model, timed_images=3)
    assert all(r.seconds is not None and r.seconds > 0 and r.timed_images == 3 for r in rows)
    assert len(model.walks) == 2 * 2 * 3  # sizes x shapes x images
    pairs = [model.walks[i : i + 2] for i in range(0, len(model.walks), 2)]
    assert all(a[0] == b[0] for a, b in pairs)  # the two shapes walk one image back to back
    assert len({a[0] for a, _ in pairs[:3]}) == 3  # three different images per size
    assert all(a[1] >= 1 and b[1] >= 1 for a, b in pairs)  # the model answered every walk's questions
