"""Hostile trees and catalogues through the real command line, in a subprocess with a memory limit and a timeout.

Each case must end with exit 2, one line per problem in the ``FILE:LINE: key: message`` form, no
traceback, never the content of a file explain refused to read, and no hang.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEM_LIMIT_MB = 4096 + 1024  # importing torch maps ~3.2 GB of address space; a tree may add 1 GB at most
TIMEOUT_S = 120


def assert_refused(r, *fragments: str) -> str:
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr, r
    for fragment in fragments:
        assert fragment in r.stderr, (fragment, r)
    return r.stderr


@pytest.fixture
def explain(run_cli):
    """``explain(*args, cwd=None)``: the command line under this file's memory limit and timeout."""
    def run(*args: str, cwd: Path | None = None):
        return run_cli(list(args), mem_limit_mb=MEM_LIMIT_MB, timeout=TIMEOUT_S, cwd=cwd or ROOT)
    return run


TREE = "tree: t\nstart: q\nnodes:\n  q:\n    ask: Odd?\n    artifact: Texture repetition patterns\n"


def test_fifo_as_tree_is_refused_without_hanging(explain, tmp_path):
    fifo = tmp_path / "tree.yaml"
    os.mkfifo(fifo)
    assert_refused(explain("tree", "validate", str(fifo)), "not a regular file")


def test_dev_zero_as_tree_and_as_catalogue(explain, tmp_path):
    assert_refused(explain("tree", "validate", "/dev/zero"), "not a regular file")
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    tree = tmp_path / "t.yaml"
    tree.write_text("catalogue: zero.yaml\n" + TREE)
    # the link resolves to /dev, outside the tree's folder: refused before anything opens it
    assert_refused(explain("tree", "validate", str(tree)), f"{tree}:1: catalogue:", "outside the tree's folder")


def test_fifo_as_catalogue(explain, tmp_path):
    os.mkfifo(tmp_path / "cat.yaml")
    tree = tmp_path / "t.yaml"
    tree.write_text("catalogue: cat.yaml\n" + TREE)
    assert_refused(explain("tree", "validate", str(tree)), "not a regular file")


def test_alias_bomb_stays_within_memory(explain, tmp_path):
    rows = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    tree = tmp_path / "bomb.yaml"
    tree.write_text("\n".join(rows) + "\n" + TREE)
    assert_refused(explain("tree", "validate", str(tree)), "alias bomb")


def test_include_and_catalogue_outside_the_folder_never_echo_the_file(explain, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("password: TOP-SECRET-VALUE\n")
    (tmp_path / "trees").mkdir()
    tree = tmp_path / "trees" / "t.yaml"
    tree.write_text("include:\n  - ../secret.txt\n  - /etc/passwd\ncatalogue: ../secret.txt\n" + TREE)
    err = assert_refused(explain("tree", "validate", str(tree)), f"{tree}:2: include[0]:", f"{tree}:3: include[1]:",
                         f"{tree}:4: catalogue:", "outside the tree's folder")
    assert "TOP-SECRET-VALUE" not in err and "root:" not in err


def test_include_path_lets_a_named_folder_in(explain, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "part.yaml").write_text("nodes:\n  r:\n    artifact: Texture repetition patterns\n")
    (tmp_path / "trees").mkdir()
    tree = tmp_path / "trees" / "t.yaml"
    tree.write_text("include: [part.yaml]\ntree: t\nstart: q\nnodes:\n  q:\n    ask: Odd?\n    if_yes: r\n")
    assert_refused(explain("tree", "validate", str(tree)), "not found")
    r = explain("tree", "validate", str(tree), "--include-path", str(shared))
    assert r.returncode == 0 and "ok (2 nodes" in r.stdout, r.stderr


TEMPLATE_BOMBS = [
    ("{% for i in range(10**9) %}x{% endfor %}", "range()"),
    ("{{ 'x' * 10**9 }}", "repeating"),
    ("{% include '/etc/passwd' %}", "include"),
    ("{% import 'x' as y %}", "import"),
    ("{% extends 'x' %}", "extends"),
    ("{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}", "calls itself"),
]


def test_template_bombs_and_file_access_refused_at_their_line(explain, tmp_path):
    # one tree, one subprocess: every node carries one bomb and each is reported at its own line
    rows = ["tree: t", "start: q", "nodes:", "  q:", "    all: [" + ", ".join(f"b{i}" for i in range(len(TEMPLATE_BOMBS))) + "]"]
    for i, (template, _) in enumerate(TEMPLATE_BOMBS):
        rows += [f"  b{i}:", f'    ask: "{template}"', "    artifact: Texture repetition patterns"]
    tree = tmp_path / "t.yaml"
    tree.write_text("\n".join(rows) + "\n")
    err = assert_refused(explain("tree", "validate", str(tree)))
    for i, (_, fragment) in enumerate(TEMPLATE_BOMBS):
        line = next(ln for ln in err.splitlines() if ln.startswith(f"{tree}:{7 + 3 * i}: nodes.b{i}.ask:"))
        assert fragment in line, (fragment, line)
    assert "root:" not in err


def test_python_tags_refused_on_mappings_and_scalars(explain, tmp_path):
    tree = tmp_path / "t.yaml"
    tree.write_text("tree: t\nstart: q\nnodes:\n  q: !!python/object/apply:os.system\n    ask: Odd?\n"
                    "    artifact: Texture repetition patterns\n")
    assert_refused(explain("tree", "validate", str(tree)), f"{tree}:4: nodes.q:", "!!python/object/apply:os.system is refused")


def test_malformed_catalogue_is_one_line(explain, tmp_path):
    (tmp_path / "cat.yaml").write_text("- name: A\n  description: [unclosed\n")
    tree = tmp_path / "t.yaml"
    tree.write_text("catalogue: cat.yaml\n" + TREE)
    err = assert_refused(explain("tree", "validate", str(tree)), f"{tmp_path / 'cat.yaml'}:3: (yaml): YAML syntax error")
    assert len([line for line in err.splitlines() if line.strip()]) == 2  # the problem and the count


def test_explain_refuses_a_hostile_tree_before_loading_models(explain, tmp_path):
    tree = tmp_path / "t.yaml"
    tree.write_text("include: [/etc/passwd]\n" + TREE)
    image = ROOT / "examples"
    images = sorted(p for p in image.rglob("*.png"))[:1]
    assert images, "examples/ holds the README's sample images"
    r = explain(str(images[0]), "--tree", str(tree), "--no-vlm", "--out", str(tmp_path / "out"))
    assert_refused(r, "outside the tree's folder")
