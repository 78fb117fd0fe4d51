"""Each file in tests/trees/broken/ is a tree with known mistakes; its header says which.

A header line ``# expect: [FILE:]LINE: key.path: message`` means the compiler must
report a problem at that file and line, on that key path, whose message starts
with (or contains) that text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from explainer.cli import main
from explainer.trees import TreeError, compile_tree

BROKEN = Path(__file__).parent / "trees" / "broken"
CASES = sorted(BROKEN.glob("*.yaml"))
_EXPECT = re.compile(r"^# expect: (?:(?P<file>[^:\s]+\.yaml):)?(?P<line>\d+): (?P<path>\S+): (?P<msg>.+)$")


def expectations(path: Path) -> list[tuple[str, int, str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():  # a case may hold bad bytes on purpose
        m = _EXPECT.match(line)
        if m:
            file = str(path.parent / m["file"]) if m["file"] else str(path)
            out.append((file, int(m["line"]), m["path"], m["msg"]))
    return out


def test_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert all(expectations(c) for c in CASES), [c.name for c in CASES if not expectations(c)]


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_broken_tree_reports_expected_problem(case: Path):
    with pytest.raises(TreeError) as info:
        compile_tree(case)
    problems = info.value.problems
    rendered = [str(p) for p in problems]
    for file, line, path, msg in expectations(case):
        hits = [p for p in problems
                if Path(p.file).resolve() == Path(file).resolve() and p.line == line and p.path == path and msg in p.message]
        assert hits, f"expected {file}:{line}: {path}: {msg!r}\n got:\n" + "\n".join(rendered)
    # Every problem is printed in the FILE:LINE: key.path: message form.
    assert all(re.match(r"^.+\.yaml:\d+: \S+: .+", r) for r in rendered)


def test_validate_command_exits_2_and_lists_every_problem(capsys):
    case = BROKEN / "many_problems.yaml"
    assert main(["tree", "validate", str(case)]) == 2
    err = capsys.readouterr().err
    for file, line, path, msg in expectations(case):
        assert f"{case}:{line}: {path}: {msg}" in err
    assert "3 problems found" in err


def test_validate_mixed_good_and_bad(capsys):
    good = Path(__file__).parents[1] / "question_trees" / "cifake.yaml"
    assert main(["tree", "validate", str(good), str(BROKEN / "cycle.yaml")]) == 2
    out = capsys.readouterr()
    assert "cifake.yaml: ok" in out.out
    assert "cycle: q -> r -> q" in out.err


def test_validate_missing_file(capsys):
    assert main(["tree", "validate", "does/not/exist.yaml"]) == 2
    assert "does/not/exist.yaml: file not found" in capsys.readouterr().err
