"""The tree-validation benchmark at its small size (5,000 nodes); 50k and 200k run in bench/bench_trees.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from explainer.answerers.oracle import OracleAnswerer
from explainer.engine import TreeRunner
from explainer.trees import compile_tree

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_trees", ROOT / "bench" / "bench_trees.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_tree_is_valid_and_walks(tmp_path):
    bench = _bench()
    path = tmp_path / "t.yaml"
    path.write_text(bench.generate_tree(500))
    tree = compile_tree(path)
    assert len(tree.spec.nodes) >= 500
    truth = {tree.node("s0g3m1").artifact, tree.node("s1g0m2").artifact}
    result = TreeRunner(tree, OracleAnswerer(truth)).run(scope={"obj": "cat"})
    assert result.artifacts == truth


def test_small_benchmark_writes_its_table_and_json(tmp_path):
    rows = _bench().run([5_000], repeat=1, out_dir=tmp_path)
    assert rows[0]["nodes"] >= 5_000 and rows[0]["seconds"] > 0
    assert json.loads((tmp_path / "trees.json").read_text())[0]["nodes"] == rows[0]["nodes"]
    assert f"| {rows[0]['nodes']:,} |" in (tmp_path / "trees.md").read_text()


def test_compiling_leaves_the_collector_on_and_no_backlog_of_young_objects():
    """The collector is paused while a tree loads; afterwards the loaded objects must not sit in the youngest
    generation, where the next allocation would make the collector scan every one of them."""
    import gc

    from explainer.trees import compile_tree
    from explainer.trees.compiler import default_tree_path

    collections = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    assert gc.isenabled()
    gc.callbacks.append(count)
    try:
        compile_tree(default_tree_path())
    finally:
        gc.callbacks.remove(count)
    assert gc.isenabled()
    assert collections == []  # not even the one that re-enabling would start over the whole loaded tree
    gc.disable()
    try:
        compile_tree(default_tree_path())
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()
