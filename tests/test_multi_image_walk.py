"""Walking K images together gives every image the walk it gets alone; refills happen as images finish."""

from __future__ import annotations

import dataclasses

import pytest

from explainer.answerers import ImageContext, PerImageAnswerers, supports_many_images
from explainer.answerers.oracle import OracleAnswerer
from explainer.bench import _truths
from explainer.engine import RoundFinished, TreeRunner, WalkFinished
from explainer.errors import UsageError
from explainer.trees import compile_tree
from explainer.trees.compiler import default_tree_path


@pytest.fixture(scope="module")
def tree():
    return compile_tree(default_tree_path())


def _items(tree, n, seed=3):
    out = []
    for i, (facts, truth) in enumerate(_truths(tree, n, seed)):
        ctx = ImageContext(image_id=f"img{i}", facts={**facts, "artifacts": sorted(truth)})
        scope = {"roi": "the whole image"} if i % 2 else {"roi": "the region inside the red box", "region": "background"}
        out.append((ctx, scope))
    return out


def _timeless(events):
    """Events without wall-clock fields (everything else must match exactly)."""
    out = []
    for e in events:
        d = e.to_dict()
        d.pop("seconds", None)
        out.append(d)
    return out


class Recording(PerImageAnswerers):
    """Remembers which slots every call covered and how many images were open."""

    def __init__(self, max_images):
        super().__init__(lambda ctx: OracleAnswerer(), max_images=max_images)
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        self.peak_open = 0
        self.opened: list[tuple[int, ...]] = []

    def begin_images(self, contexts):
        super().begin_images(contexts)
        self.opened.append(tuple(sorted(c.image_id for c in contexts.values())))
        self.peak_open = max(self.peak_open, len(self.open))

    def _by_slot(self, method, queries):  # method: "yes_no", "choose" or "follow_up"
        self.calls.append((method, tuple(sorted({s for s, _ in queries}))))
        return super()._by_slot(method, queries)


@pytest.mark.parametrize("k", [2, 3, 8])
def test_walks_together_equal_walks_alone(tree, k):
    items = _items(tree, 11)
    alone = [TreeRunner(tree, OracleAnswerer()).run(ctx, scope) for ctx, scope in items]
    multi = Recording(max_images=k)
    got = dict(TreeRunner(tree, multi).run_many(items, batch_images=k))
    assert sorted(got) == list(range(len(items)))
    for i, want in enumerate(alone):
        walk = got[i]
        assert walk.image_id == f"img{i}"
        assert _timeless(walk.events) == _timeless(want.events)
        assert walk.artifacts == want.artifacts and walk.yes_no == want.yes_no and walk.rounds == want.rounds
        assert isinstance(walk.events[-1], WalkFinished)
    # questions of several images really went out in one call, and never more images than K were open
    assert max(len(slots) for _, slots in multi.calls) == min(k, len(items))
    assert multi.peak_open == min(k, len(items))
    assert not multi.open  # every image closed


def test_finished_images_are_replaced_before_the_next_round(tree):
    items = _items(tree, 6)
    rounds = [TreeRunner(tree, OracleAnswerer()).run(ctx, scope).rounds for ctx, scope in items]
    assert len(set(rounds)) > 1  # walks of different lengths, or this test shows nothing
    multi = Recording(max_images=2)
    got = list(TreeRunner(tree, multi).run_many(items, batch_images=2))
    order = [i for i, _ in got]
    # after the first pair, images open one by one as others finish
    assert multi.opened[0] == ("img0", "img1")
    assert sum(len(o) for o in multi.opened) == 6 and len(multi.opened) == 5
    # rounds run (one RoundFinished, with one shared time, per round and image) = the greedy schedule of the
    # walks on 2 slots, fewer than fixed pairs that wait for their slower image
    rounds_run = len({e.seconds for _, w in got for e in w.events if isinstance(e, RoundFinished)})
    busy = [0, 0]
    for r in rounds:
        busy[busy.index(min(busy))] += r
    assert rounds_run == max(busy)
    fixed = sum(max(rounds[i], rounds[i + 1]) for i in range(0, 6, 2))
    assert rounds_run <= fixed
    assert sorted(order) == list(range(6))


def test_answerers_without_the_protocol_walk_one_at_a_time(tree):
    items = _items(tree, 3)
    oracle = OracleAnswerer()
    assert not supports_many_images(oracle)
    got = list(TreeRunner(tree, oracle).run_many(items, batch_images=8))
    assert [i for i, _ in got] == [0, 1, 2]
    assert _timeless(got[1][1].events) == _timeless(TreeRunner(tree, OracleAnswerer()).run(*items[1]).events)


def test_a_bad_scope_closes_what_was_opened(tree):
    items = _items(tree, 3)
    items.insert(2, (ImageContext(image_id="bad"), {"obj": "unicorn"}))
    multi = Recording(max_images=2)
    runs = TreeRunner(tree, multi).run_many(items, batch_images=2)
    with pytest.raises(UsageError, match="unicorn"):
        list(runs)
    assert not multi.open


def test_a_wrong_number_of_answers_is_an_error(tree):
    class Short(Recording):
        def yes_no_images(self, queries):
            return super().yes_no_images(queries)[:-1]

    multi = Short(max_images=2)
    with pytest.raises(RuntimeError, match="answers for"):
        list(TreeRunner(tree, multi).run_many(_items(tree, 2), batch_images=2))
    assert not multi.open


def test_round_events_share_the_round_time(tree):
    multi = Recording(max_images=3)
    walks = [w for _, w in TreeRunner(tree, multi).run_many(_items(tree, 3), batch_images=3)]
    first = [next(e for e in w.events if isinstance(e, RoundFinished)) for w in walks]
    assert len({dataclasses.astuple(e) for e in first}) == 1  # one forward pass served all three images' round 1
