"""`explain tree show|walk|stats|schema` through the real entry point."""

from __future__ import annotations

import json

import jsonschema
import yaml

from explainer.cli import main
from explainer.trees.parse import ALL_NODE_KEYS, FOLLOW_UP_KEYS, TOP_KEYS

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TREE = ROOT / "question_trees" / "cifake.yaml"


def test_show_text_mermaid_and_dot(capsys):
    assert main(["tree", "show", str(DEFAULT_TREE)]) == 0
    text = capsys.readouterr().out
    assert "cifake" in text and "switch on obj" in text and "[Texture repetition patterns]" in text
    assert main(["tree", "show", str(DEFAULT_TREE), "--format", "mermaid"]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart TD") and "-->|yes, at least one|" in mermaid
    assert main(["tree", "show", str(DEFAULT_TREE), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "cifake"') and '"kind" -> "living_region" [label="living"];' in dot


def test_walk_with_answers_file(tmp_path, capsys):
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump({
        "answers": {"class": "cat", "living_region": "body", "outline_shape": True, "jagged": False,
                    "boundaries": False, "surfaces": False},
        "follow_ups": {"cut_off": "tail"},
    }))
    assert main(["tree", "walk", str(DEFAULT_TREE), "--answers", str(answers)]) == 0
    out = capsys.readouterr().out
    assert "Abruptly cut off objects: The cat's tail is abruptly cut off inside the image." in out
    assert "inferred" in out  # cut_off was the last of its group
    assert main(["tree", "walk", str(DEFAULT_TREE), "--answers", str(answers), "--json"]) == 0
    blob = json.loads(capsys.readouterr().out)
    assert [f["artifact"] for f in blob["findings"]] == ["Abruptly cut off objects"]
    assert blob["scope"]["obj"] == "cat"


def test_walk_needs_answers_or_interactive(capsys):
    try:
        main(["tree", "walk", str(DEFAULT_TREE)])
    except SystemExit as exc:
        assert exc.code == 2
    else:  # pragma: no cover
        raise AssertionError("argparse should refuse")


def test_walk_interactive(monkeypatch, capsys):
    import io

    # cat (4th option), face; gates: eyes n, features y, texture n, detail n; then teeth n,
    # exaggerated n -> ears inferred; its follow-up: left-ear
    replies = "4\nface\nn\ny\nn\nn\nn\nn\nleft-ear\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(replies))
    code = main(["tree", "walk", str(DEFAULT_TREE), "--interactive"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Misshapen ears or appendages: The cat's left-ear has an impossible shape." in out


def test_stats_json_meets_targets(capsys):
    assert main(["tree", "stats", str(DEFAULT_TREE), "--json", "--samples", "60"]) == 0
    blob = json.loads(capsys.readouterr().out)
    assert blob["direct"]["yes_no"] == 70
    assert blob["catalogue_covered"] == 70
    assert len(blob["classes"]) == 10
    assert blob["mean"]["yes_no"] <= 16 and blob["mean"]["ratio_to_floor"] <= 1.5


def test_stats_table_and_bad_p(capsys):
    assert main(["tree", "stats", str(DEFAULT_TREE), "--samples", "20", "--p-artifact", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "p = 0.050" in out and "Catalogue covered: 70 of 70" in out
    assert main(["tree", "stats", str(DEFAULT_TREE), "--p-artifact", "2"]) == 2
    assert "--p-artifact must be between 0 and 1" in capsys.readouterr().err


def test_stats_priors_file(tmp_path, capsys):
    priors = tmp_path / "p.yaml"
    priors.write_text("Texture repetition patterns: 0.5\n")
    assert main(["tree", "stats", str(DEFAULT_TREE), "--samples", "20", "--priors", str(priors), "--json"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("Glowing thing: 0.5\n")
    capsys.readouterr()
    assert main(["tree", "stats", str(DEFAULT_TREE), "--priors", str(bad)]) == 2
    assert "'Glowing thing' is not a catalogue artifact" in capsys.readouterr().err



def test_stats_priors_file_is_read_like_any_hostile_input(tmp_path, capsys):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it would block forever
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse
    broken = tmp_path / "broken.yaml"
    broken.write_text("Texture repetition patterns: 0.5\n  - not: [closed\n")
    for path, problem in ((fifo, "priors file is not a regular file"), (big, "over the limit"),
                          (broken, f"{broken}:2: not valid YAML"), (tmp_path / "none.yaml", "priors file not found")):
        assert main(["tree", "stats", str(DEFAULT_TREE), "--priors", str(path)]) == 2
        err = capsys.readouterr().err
        assert problem in err and err.count("\n") == 1, err


def test_schema_accepts_shipped_trees_and_matches_the_parser(capsys):
    assert main(["tree", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    for path in sorted((ROOT / "question_trees").rglob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    assert set(schema["properties"]) == set(TOP_KEYS)
    node_keys = set()
    for variant in schema["$defs"]["node"]["oneOf"]:
        node_keys |= set(variant["properties"])
    node_keys.discard("follow_up")
    assert node_keys | {"follow_up"} == ALL_NODE_KEYS
    fu = next(v for v in schema["$defs"]["node"]["oneOf"] if "follow_up" in v["properties"])["properties"]["follow_up"]
    assert set(fu["properties"]) == FOLLOW_UP_KEYS


def test_schema_rejects_a_misspelt_key():
    schema = json.loads((ROOT / "explainer" / "schema" / "question-tree.schema.json").read_text())
    bad = {"start": "q", "nodes": {"q": {"ask": "x?", "iff_yes": "a"}}}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:  # pragma: no cover
        raise AssertionError("schema accepted an unknown key")


def test_stats_markdown(capsys):
    assert main(["tree", "stats", str(DEFAULT_TREE), "--samples", "20", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| class | artifacts reachable |")
    assert "| **mean** |" in out and "| direct prompting | 70 |" in out and "| probes |" in out
    assert len([l for l in out.splitlines() if l.startswith("| ") and "cat" in l.split("|")[1]]) == 1


def test_worked_example_in_the_docs_walks_as_described(tmp_path, capsys):
    import re

    doc = (ROOT / "docs" / "question-trees.md").read_text()
    tree = tmp_path / "pets.yaml"
    tree.write_text(re.search(r"```yaml\n(# pets.yaml.*?)```", doc, re.S).group(1))
    answers = tmp_path / "a.yaml"
    answers.write_text("answers: {class: cat, face: yes, outline: yes, eyes: yes, teeth: no}\nfollow_ups: {outline: tail}\n")
    assert main(["tree", "walk", str(tree), "--answers", str(answers), "--json"]) == 0
    blob = json.loads(capsys.readouterr().out)
    assert sorted(f["artifact"] for f in blob["findings"]) == ["Abruptly cut off objects", "Unrealistic eye reflections"]
    assert blob["counts"]["rounds"] == 4
    cut = next(f for f in blob["findings"] if f["artifact"] == "Abruptly cut off objects")
    assert cut["explanation"] == "The cat's tail is cut off in the middle of the image."


def test_schema_lists_every_probe():
    from explainer.probes import PROBES

    schema = json.loads((ROOT / "explainer" / "schema" / "question-tree.schema.json").read_text())
    probe = next(v for v in schema["$defs"]["node"]["oneOf"] if "probe" in v["properties"])
    assert probe["properties"]["probe"]["enum"] == list(PROBES)


def test_walk_prints_tree_text_literally(tmp_path, capsys):
    """A shared tree's prompts, artifacts and explanations may hold rich markup: printed as text, never a MarkupError."""
    tree = tmp_path / "markup.yaml"
    tree.write_text(
        "tree: markup\n"
        "catalogue:\n"
        "  - name: Odd [/] seams\n"
        "    description: seams [bold]where[/bold] [/] parts meet\n"
        "start: gate\n"
        "nodes:\n"
        "  gate:\n"
        "    ask: Is there a [/] seam or a [red]mark? Answer yes or no.\n"
        "    if_yes: {at_least_one: [seam]}\n"
        "  seam:\n"
        "    ask: Is the [/] seam odd? Answer yes or no.\n"
        "    artifact: Odd [/] seams\n")
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump({"answers": {"gate": True}}))
    assert main(["tree", "walk", str(tree), "--answers", str(answers)]) == 0
    out = capsys.readouterr().out
    assert "Is there a [/] seam or a [red]mark?" in out
    assert "inferred" in out and "Odd [/] seams" in out
