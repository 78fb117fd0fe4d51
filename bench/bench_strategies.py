"""Tree engine vs direct prompting, naive vs cached (pytest-benchmark).

Default suite: each strategy once on the tiny offline model (a smoke test that
also checks the counts). ``-m slow --benchmark-enable``: the SmolVLM-256M-sized
model with random weights. ``explain bench strategies`` prints the full table.
"""

from __future__ import annotations

import importlib.util

import pytest

from explainer.bench import STRATEGIES, run_bench


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from explainer.testing import build_tiny_vlm

    return str(build_tiny_vlm("idefics3", tmp_path_factory.mktemp("bench-tiny")))


# tree-server needs a server: it runs against the scripted HTTP server in tests/server/test_bench_server.py
# and against vLLM in `BENCH=1 scripts/test-vllm.sh`; here it must say it is not available.
IN_PROCESS = [s for s in STRATEGIES if STRATEGIES[s][1] != "server"]


def test_tree_server_without_a_server_is_not_available(tiny_path):
    report = run_bench(tiny_path, strategies=["tree-server"], n_images=1)
    assert report.summaries == [] and "--vlm-server" in report.settings["unavailable"]["tree-server"]


@pytest.mark.parametrize("strategy", IN_PROCESS)
def test_strategy_smoke(benchmark, tiny_path, strategy):
    benchmark.group = "strategies-tiny"
    report = benchmark.pedantic(run_bench, args=(tiny_path,), kwargs=dict(strategies=[strategy], n_images=1),
                                rounds=1, iterations=1)
    tree, mode = STRATEGIES[strategy]
    if mode == "decision" and importlib.util.find_spec("transformers.decision") is None:
        # transformers before 5.23 has no pipeline("decision"): the peer is listed as not available, not faked
        assert report.summaries == [] and "no pipeline('decision')" in report.settings["unavailable"][strategy]
        return
    (s,) = report.summaries
    if tree == "direct":
        assert s.yes_no == 70 and s.rounds == 1
    else:
        assert 2 <= s.yes_no <= 40 and 2 <= s.rounds <= 6
    assert not report.settings["unavailable"]
    if mode in ("cached", "cached-exact"):
        assert s.forward_passes < s.yes_no + s.choices  # batched (or packed) over the cached prefix
        assert s.encode_seconds > 0
    elif mode == "packed":
        assert s.forward_passes == 1  # the 70 questions in one sequence
        assert s.tokens > 70 * 5 and 0.0 <= s.packed_flipped <= 1.0 and s.packed_mean_abs >= 0.0
    else:
        assert s.forward_passes >= s.yes_no + s.choices  # one generation (or pipeline call) per question at least
        assert s.encode_seconds == 0
    assert s.ms_per_question > 0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", IN_PROCESS)
def test_strategy_smolvlm_256m(benchmark, tmp_path_factory, strategy):
    from explainer.testing import build_smolvlm_256m

    benchmark.group = "strategies-smolvlm-256m"
    path = str(build_smolvlm_256m(tmp_path_factory.getbasetemp() / "smolvlm-256m"))
    benchmark.pedantic(run_bench, args=(path,), kwargs=dict(strategies=[strategy], n_images=1),
                       rounds=1, iterations=1)
