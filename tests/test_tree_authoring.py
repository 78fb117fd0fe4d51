"""Authoring features of the tree language: catalogues (file, inline, extended), includes inside the tree's
folder, long chains without recursion, bounded templates, and what the CLI prints when piped."""

from __future__ import annotations

import pytest
import yaml

from explainer.cli import main
from explainer.engine import TreeRunner
from explainer.answerers.scripted import ScriptedAnswerer
from explainer.stats.tree_cost import longest_path, situations
from explainer.trees import TreeError, builtin_catalogue, compile_tree
from explainer.trees import templates
from explainer.trees.yaml_source import load_yaml


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


TREE = """tree: t
start: q
nodes:
  q:
    ask: Are the eyes odd in {{ roi }}?
    artifact: {artifact}
"""


def test_inline_catalogue_replaces_the_default(tmp_path):
    tree = write(tmp_path / "t.yaml", "catalogue:\n  - name: Eye glitch\n    description: the eyes are wrong\n"
                 + TREE.replace("{artifact}", "Eye glitch"))
    compiled = compile_tree(tree)
    assert compiled.catalogue.names == ["Eye glitch"]
    with pytest.raises(TreeError, match="unknown artifact 'Texture repetition patterns'"):
        compile_tree(write(tmp_path / "u.yaml", "catalogue: [Eye glitch]\n" + TREE.replace("{artifact}", "Texture repetition patterns")))


def test_catalogue_file_is_read_relative_to_the_tree(tmp_path):
    write(tmp_path / "faces.yaml", "- name: Eye glitch\n  description: the eyes are wrong\n- Plastic skin\n")
    compiled = compile_tree(write(tmp_path / "t.yaml", "catalogue: faces.yaml\n" + TREE.replace("{artifact}", "Plastic skin")))
    assert compiled.catalogue.names == ["Eye glitch", "Plastic skin"]
    assert compiled.catalogue["Plastic skin"].description == "Plastic skin"


def test_extended_catalogue_adds_and_rewords(tmp_path):
    default = builtin_catalogue()
    tree = write(tmp_path / "t.yaml", """catalogue:
  extends: default
  entries:
    - name: Eye glitch
      description: the eyes are wrong
    - name: Texture repetition patterns
      description: the same pore pattern repeats across the skin
""" + TREE.replace("{artifact}", "Eye glitch"))
    cat = compile_tree(tree).catalogue
    assert len(cat) == len(default) + 1
    assert cat.names[:len(default)] == default.names  # the 70 keep their order; new names come after
    assert cat["Eye glitch"].index == len(default) + 1
    assert cat["Texture repetition patterns"].description == "the same pore pattern repeats across the skin"
    assert default["Texture repetition patterns"].description != cat["Texture repetition patterns"].description


def test_catalogue_in_an_included_file_is_refused_not_ignored(tmp_path):
    write(tmp_path / "part.yaml", "catalogue: [Eye glitch]\nnodes:\n  r:\n    artifact: Texture repetition patterns\n")
    tree = write(tmp_path / "t.yaml", "include: [part.yaml]\ntree: t\nstart: q\nnodes:\n  q:\n    ask: Odd?\n    if_yes: r\n")
    with pytest.raises(TreeError) as info:
        compile_tree(tree)
    [problem] = info.value.problems
    assert problem.file.endswith("part.yaml") and problem.line == 1 and "belongs in the main tree file" in problem.message
    assert f"included from {tree}:1" in problem.message


def test_include_outside_the_folder_is_refused_without_reading_it(tmp_path):
    secret = write(tmp_path / "secret.yaml", "SECRET-CONTENT: 1\n")
    (tmp_path / "trees").mkdir()
    tree = write(tmp_path / "trees" / "t.yaml", "include: [../secret.yaml]\n" + TREE.replace("{artifact}", "Texture repetition patterns"))
    with pytest.raises(TreeError) as info:
        compile_tree(tree)
    text = str(info.value)
    assert "is outside the tree's folder" in text and "SECRET-CONTENT" not in text
    # ... and allowed once the folder is named explicitly
    secret.write_text("nodes:\n  extra:\n    artifact: Texture repetition patterns\n")
    with pytest.raises(TreeError, match="unreachable"):  # now read: its node is unreachable, which proves it was included
        compile_tree(tree, include_paths=(tmp_path,))


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    outside = write(tmp_path / "outside.yaml", "nodes: {}\n")
    (tmp_path / "trees").mkdir()
    (tmp_path / "trees" / "link.yaml").symlink_to(outside)
    tree = write(tmp_path / "trees" / "t.yaml", "include: [link.yaml]\n" + TREE.replace("{artifact}", "Texture repetition patterns"))
    with pytest.raises(TreeError, match="outside the tree's folder"):
        compile_tree(tree)


def test_follow_up_allowed_must_be_a_list(tmp_path):
    base = ("tree: t\nstart: q\nnodes:\n  q:\n    artifact: Misshapen ears or appendages\n"
            "    follow_up:\n      ask: Which part?\n      allowed: {allowed}\n")
    with pytest.raises(TreeError, match="must be a list of strings, not str 'ear'"):
        compile_tree(write(tmp_path / "a.yaml", base.format(allowed="ear")))
    compiled = compile_tree(write(tmp_path / "b.yaml", base.format(allowed="[ear, tail]")))
    assert compiled.node("q").follow_up.allowed == ("ear", "tail")


def _chain(tmp_path, n: int):
    lines = ["tree: chain", "start: n0", "nodes:"]
    for i in range(n - 1):
        lines += [f"  n{i}:", f"    ask: Question {i} about {{{{ roi }}}}?", f"    if_yes: n{i + 1}", f"    if_no: n{i + 1}"]
    lines += [f"  n{n - 1}:", "    artifact: Texture repetition patterns"]
    return write(tmp_path / "chain.yaml", "\n".join(lines) + "\n")


def test_a_long_chain_compiles_walks_and_counts_without_recursion(tmp_path):
    n = 3_000  # three times Python's recursion limit; 20,000 runs in bench/bench_trees.py
    tree = compile_tree(_chain(tmp_path, n))
    assert tree.leads_to(("n0",), tree.base_scope()) == {"Texture repetition patterns"}
    assert longest_path(tree, {}) == n - 1
    assert len(situations(tree)) == 1
    result = TreeRunner(tree, ScriptedAnswerer({}, {"yes_no": "no"}), max_steps=3 * n).run()
    assert result.yes_no == n - 1 and [f.artifact for f in result.findings] == ["Texture repetition patterns"]


def test_deep_yaml_nesting_is_capped_not_a_recursion_error(tmp_path):
    doc = load_yaml(write(tmp_path / "deep.yaml", "a: " + "[" * 500 + "]" * 500 + "\n"))
    assert doc.fatal and "nested more than 64 levels" in doc.problems[0].message
    doc = load_yaml(write(tmp_path / "deeper.yaml", "a: " + "[" * 50_000 + "]" * 50_000 + "\n"))
    assert doc.fatal and "nesting depth" in doc.problems[0].message  # libyaml's own cap comes first


def test_alias_bomb_is_stopped_while_loading(tmp_path):
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    doc = load_yaml(write(tmp_path / "bomb.yaml", "\n".join(rows) + "\n"))
    assert doc.fatal and "alias bomb" in doc.problems[0].message
    # a few aliases, as authors use them, are fine and keep their meaning
    doc = load_yaml(write(tmp_path / "ok.yaml", "base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\nlist: [*b, *b]\n"))
    assert not doc.problems and doc.data["use"] == {"x": 1, "y": 3} and doc.data["list"] == [{"x": 1, "y": 2}] * 2


def test_non_utf8_byte_reported_at_its_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"tree: t\nstart: q\nnodes:\n  q:\n    ask: caf\xe9?\n")
    [problem] = load_yaml(path).problems
    assert problem.line == 5 and "byte 0xe9 at column 13" in problem.message


@pytest.mark.parametrize("source, fragment", [
    ("{% for i in range(10**9) %}x{% endfor %}", "range()"),
    ("{{ 'x' * 10**9 }}", "repeating"),
    ("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}", "loop iterations"),
    ("{{ ('a' * 1000) | replace('a', 'a' * 1000) }}", "filter 'replace'"),
    ("{{ 'x'.center(10**9) }}", "center()"),
    ("{{ '%999999999s' % 'a' }}", "width"),
    ("{{ '{:>999999999}'.format(1) }}", "width"),
    ("{{ (((10 ** 64) ** 64) ** 64) ** 64 }}", "power"),
])
def test_template_limits(source, fragment):
    with pytest.raises(templates.TemplateLimitError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        templates.render(templates.compile_template(source), {})


@pytest.mark.parametrize("source, fragment", [
    ("{% include 'x' %}", "include"), ("{% import 'x' as y %}", "import"), ("{% from 'x' import y %}", "import"),
    ("{% extends 'x' %}", "extends"), ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "calls itself"),
    ("{% macro f() %}{{ g() }}{% endmacro %}{% macro g() %}{{ f() }}{% endmacro %}{{ f() }}", "calls macro"),
    ("{% macro a(x) %}{{ x(x) }}{% endmacro %}{{ a(a) }}", "not passed as a value"),
    ("{% for x in y recursive %}{{ loop(x) }}{% endfor %}", "recursive loops"),
    ("{% call f() %}x{% endcall %}", "call"),
])
def test_template_constructs_refused(source, fragment):
    with pytest.raises(templates.TemplateSyntaxError, match=fragment):
        templates.undeclared_variables(source)


def test_templates_that_stay_within_limits_render_as_jinja_does():
    scope = {"obj": "cat", "roi": "the box", "n": 3}
    for source, expected in [
        ("Is the {{ obj }} in {{ roi }} odd?", "Is the cat in the box odd?"),
        ("{% macro tell(x) %}<{{ x }}>{% endmacro %}{{ tell(obj) }}", "<cat>"),
        ("{% for i in range(n) %}{{ i }}{% endfor %}", "012"),
        ("{{ obj | upper }} {{ '%5s' % obj }}", "CAT cat"),
    ]:
        assert templates.render(templates.compile_template(source), scope) == expected
    with pytest.raises(templates.UndefinedError):
        templates.render(templates.compile_template("{{ missing }}"), scope)


def test_show_and_stats_are_not_cut_when_piped(tmp_path, capsys):
    long_question = "Does " + "the very long description of a part " * 4 + "look wrong?"
    tree = write(tmp_path / "t.yaml", f"tree: t\nstart: q\nnodes:\n  q:\n    label: {long_question}\n"
                 "    ask: Odd?\n    if_yes: a\n  a:\n    artifact: Texture repetition patterns\n")
    assert main(["tree", "show", str(tree)]) == 0  # capsys: stdout is not a terminal
    assert long_question in capsys.readouterr().out


def test_walk_renders_roi_as_explain_does(tmp_path, capsys):
    tree = write(tmp_path / "t.yaml", TREE.replace("{artifact}", "Texture repetition patterns"))
    answers = write(tmp_path / "a.yaml", yaml.safe_dump({"answers": {"q": "no"}}))
    for flags, wording in (([], templates.ROI_WITH_BOX), (["--no-box"], templates.ROI_WITHOUT_BOX)):
        assert main(["tree", "walk", str(tree), "--answers", str(answers), *flags]) == 0
        assert f"Are the eyes odd in {wording}?" in capsys.readouterr().out


def test_schema_matches_the_catalogue_forms_the_loader_accepts(tmp_path, capsys):
    import json

    import jsonschema

    assert main(["tree", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    body = yaml.safe_load(TREE.replace("{artifact}", "Eye glitch"))
    accepted = [["Eye glitch"], [{"name": "Eye glitch", "description": "eyes"}], "faces.yaml",
                {"extends": "default", "entries": [{"name": "Eye glitch", "description": "eyes"}]}]
    write(tmp_path / "faces.yaml", "- Eye glitch\n")
    for i, value in enumerate(accepted):
        jsonschema.validate({**body, "catalogue": value}, schema)
        compile_tree(write(tmp_path / f"t{i}.yaml", yaml.safe_dump({**body, "catalogue": value})))
    for value in (5, {"extends": "everything"}, [{"nam": "x"}]):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**body, "catalogue": value}, schema)
        with pytest.raises(TreeError):
            compile_tree(write(tmp_path / "bad.yaml", yaml.safe_dump({**body, "catalogue": value})))


def test_default_catalogue_descriptions_are_domain_neutral():
    import re

    for artifact in builtin_catalogue().artifacts:
        # names are the challenge's, verbatim; the explanations shown to users name no species
        assert not re.search(r"\b(animal|animals|cat|dog|mammal)s?\b", artifact.description, re.I), artifact


def test_tree_new_writes_a_starter_that_validates_and_walks(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["tree", "new", "faces"]) == 0
    starter = tmp_path / "faces.yaml"
    tree = compile_tree(starter)
    assert tree.name == "faces" and "Example artifact of my domain" in tree.catalogue
    assert starter.read_text().count("#") > 10  # commented for a first-time author
    answers = write(tmp_path / "a.yaml", "answers:\n  texture: yes\n  repeated: no\n  example: no\n")
    assert main(["tree", "walk", str(starter), "--answers", str(answers)]) == 0
    assert "Over-smoothing of natural textures" in capsys.readouterr().out  # inferred: the last of at_least_one
    assert main(["tree", "new", "faces"]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
    assert main(["tree", "new", "../escape"]) == 2


def test_answers_file_problems_at_their_lines(tmp_path, capsys):
    tree = write(tmp_path / "t.yaml", """tree: t
start: c
nodes:
  c:
    choose: Which?
    sets: part
    options: {eye: q, ear: q}
  q:
    ask: Odd?
    artifact: Misshapen ears or appendages
    follow_up:
      ask: Which part?
""")
    answers = write(tmp_path / "a.yaml", """answers:
  c: nose
  q: maybe
  qq: yes
follow_ups:
  c: tail
defaults:
  yes_no: 2
  choise: first
extra: 1
""")
    assert main(["tree", "walk", str(tree), "--answers", str(answers)]) == 2
    err = capsys.readouterr().err
    for expected in (f"{answers}:2: answers.c: must be one of eye, ear", f"{answers}:3: answers.q: a yes/no answer",
                     f"{answers}:4: answers.qq: no node 'qq' in tree 't' (did you mean 'q'?)",
                     f"{answers}:6: follow_ups.c: no node with a follow-up is called 'c'",
                     f"{answers}:8: defaults.yes_no: must be yes, no",
                     f"{answers}:9: defaults.choise: unknown key 'choise' (did you mean 'choice'?)",
                     f"{answers}:10: extra: unknown key 'extra'"):
        assert expected in err, (expected, err)
    assert "Traceback" not in err


def test_answers_schema_agrees_with_the_loader(tmp_path, capsys):
    import json

    import jsonschema

    assert main(["tree", "schema", "--answers"]) == 0
    schema = json.loads(capsys.readouterr().out)
    good = {"answers": {"q": "yes", "c": "eye"}, "follow_ups": {"q": "tail"}, "defaults": {"yes_no": "no", "choice": "first"}}
    jsonschema.validate(good, schema)
    for bad in ({"answer": {}}, {"defaults": {"choice": "maybe"}}, {"answers": {"q": 3}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_same_artifact_in_two_regions_keeps_both_in_task2():
    from explainer.outputs.results import challenge_entries

    record = {"index": 3, "verdict": "fake", "file": "3.png", "findings": [
        {"artifact": "Texture repetition patterns", "explanation": "The fur repeats.", "region": "body"},
        {"artifact": "Texture repetition patterns", "explanation": "The grass repeats.", "region": "background"},
        {"artifact": "Artificial smoothness", "explanation": "Too smooth.", "region": None},
    ]}
    _, task2 = challenge_entries([record])
    explanation = task2[0]["explanation"]
    assert explanation["Artificial smoothness"] == "Too smooth."
    both = explanation["Texture repetition patterns"]
    assert "In the body: The fur repeats." in both and "In the background: The grass repeats." in both
