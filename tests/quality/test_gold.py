"""Gold files: both formats read, and every malformed input refused with its line, one case at a time."""

from __future__ import annotations

import json
import os

import pytest

from explainer.cli.main import main
from explainer.errors import UsageError
from explainer.quality.gold import load_gold
from explainer.trees.catalogue import builtin_catalogue

CAT = builtin_catalogue()
A, B = "Texture repetition patterns", "Unnatural Lighting Gradients"


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_task2_json_with_an_empty_explanation_is_an_image_with_nothing_labelled(tmp_path):
    p = _write(tmp_path, "gold.json", json.dumps([
        {"index": 1, "explanation": {A: "x", B: "y"}},
        {"index": 4, "explanation": {}},
    ], indent=1))
    gold = load_gold(p, CAT)
    assert gold.images[1].artifacts == {A, B}
    assert gold.images[4].artifacts == frozenset()
    assert gold.images[4].line == 9  # the line the entry starts on, for later messages


def test_jsonl_with_image_names_and_regions(tmp_path):
    p = _write(tmp_path, "gold.jsonl", "\n".join([
        json.dumps({"image": "fake/0017.png", "artifacts": [A], "regions": {A: "background"}}),
        "",
        json.dumps({"index": 3, "artifacts": []}),
    ]) + "\n")
    gold = load_gold(p, CAT)
    assert set(gold.images) == {17, 3}
    assert gold.images[17].regions == {A: "background"}
    assert gold.images[3].line == 3


CASES = [
    # (file name, content, line, words that must appear in the message)
    ("g.json", '[\n {"index": 1, "explanation": {}},\n {"index": 2 "explanation": {}}\n]', 3, ["malformed JSON"]),
    ("g.jsonl", json.dumps({"index": 1, "artifacts": []}) + "\n{not json\n", 2, ["malformed JSON line"]),
    ("g.json", '[\n 5\n]', 2, ["JSON object"]),
    ("g.jsonl", json.dumps({"artifacts": [A]}) + "\n", 1, ["missing 'index'"]),
    ("g.jsonl", json.dumps({"image": "cat.png", "artifacts": [A]}) + "\n", 1, ["no number", "cat.png"]),
    ("g.jsonl", json.dumps({"index": "7", "artifacts": [A]}) + "\n", 1, ["non-negative integer"]),
    ("g.jsonl", json.dumps({"index": True, "artifacts": [A]}) + "\n", 1, ["non-negative integer"]),
    ("g.jsonl", json.dumps({"index": 1}) + "\n", 1, ["missing 'artifacts'"]),
    ("g.json", json.dumps([{"index": 1}]), 1, ["missing 'explanation'"]),
    ("g.jsonl", json.dumps({"index": 1, "artifacts": A}) + "\n", 1, ["'artifacts' must be a list"]),
    ("g.json", json.dumps([{"index": 1, "explanation": [A]}]), 1, ["'explanation' must map"]),
    ("g.jsonl", json.dumps({"index": 1, "artifacts": ["Texture repetition pattern"]}) + "\n", 1,
     ["unknown artifact", "did you mean 'Texture repetition patterns'"]),
    ("g.jsonl", json.dumps({"index": 1, "artifacts": [3]}) + "\n", 1, ["artifact names are strings"]),
    ("g.jsonl", json.dumps({"index": 1, "artifacts": [A, A]}) + "\n", 1, ["listed twice"]),
    ("g.jsonl", json.dumps({"index": 1, "artifacts": [A]}) + "\n" + json.dumps({"image": "1.png", "artifacts": []}) + "\n",
     2, ["index 1 is labelled twice", "line 1"]),
    ("g.jsonl", json.dumps({"index": 1, "artifacts": [A], "regions": [A]}) + "\n", 1, ["'regions' must map"]),
    ("g.jsonl", json.dumps({"index": 1, "artifacts": [A], "regions": {B: "face"}}) + "\n", 1, ["not among"]),
    ("g.jsonl", json.dumps({"index": 1, "artifacts": [A], "regions": {A: ""}}) + "\n", 1, ["non-empty string"]),
]


@pytest.mark.parametrize("name,text,line,words", CASES)
def test_malformed_gold_is_refused_with_its_line(tmp_path, name, text, line, words):
    p = _write(tmp_path, name, text)
    with pytest.raises(UsageError) as err:
        load_gold(p, CAT)
    message = str(err.value)
    assert message.startswith(f"{p}:{line}:"), message
    for w in words:
        assert w in message, message


@pytest.mark.parametrize("text,words", [("", "empty"), ("  \n\n", "empty"), ("[]", "no entries")])
def test_empty_gold_is_refused(tmp_path, text, words):
    with pytest.raises(UsageError, match=words):
        load_gold(_write(tmp_path, "g.json", text), CAT)


def test_a_gold_that_is_not_a_regular_file_is_refused_before_reading(tmp_path):
    with pytest.raises(UsageError, match="is a directory"):
        load_gold(tmp_path, CAT)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        load_gold(fifo, CAT)
    with pytest.raises(UsageError, match="not found"):
        load_gold(tmp_path / "missing.json", CAT)


def test_the_command_exits_2_with_one_line(tmp_path, capsys):
    gold = _write(tmp_path, "g.jsonl", json.dumps({"index": 1, "artifacts": ["Nope"]}) + "\n")
    run = _write(tmp_path, "task2.json", "[]")
    assert main(["eval", "explanations", "--gold", str(gold), str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{gold}:1: unknown artifact 'Nope'" in err
