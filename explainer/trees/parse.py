"""YAML documents → :class:`TreeSpec`, checking keys and types and following includes.

Every problem is collected; nothing raises until the caller decides. Checks of
how nodes refer to each other belong to the compiler.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from explainer.trees.catalogue import catalogue_from_value
from explainer.trees.problems import Problem, format_path
from explainer.trees.spec import LOCATE_KINDS, FollowUpSpec, NodeSpec, RegionSpec, Target, TreeSpec, Where
from explainer.trees.yaml_source import YamlDocument, load_yaml

TOP_KEYS = {
    "tree": str, "description": str, "version": int, "include": list, "classes": list,
    "groups": dict, "vars": dict, "defaults": dict, "start": str, "nodes": dict, "catalogue": (str, list, dict),
    "inputs": list, "preamble": str, "regions": dict,
}
REGION_KEYS = ("locate", "prompt", "wording", "fallback")
DEFAULT_KEYS = {"threshold": (int, float)}
KIND_KEYS = ("ask", "choose", "switch", "all", "artifact", "probe")
COMMON_NODE_KEYS = {"label", "applies_to", "set", "note", "region"}
NODE_KEYS = {
    "ask": COMMON_NODE_KEYS | {"ask", "if_yes", "if_no", "threshold", "artifact", "explain", "follow_up"},
    "choose": COMMON_NODE_KEYS | {"choose", "options", "then", "sets"},
    "switch": COMMON_NODE_KEYS | {"switch", "cases", "default"},
    "all": COMMON_NODE_KEYS | {"all"},
    "artifact": COMMON_NODE_KEYS | {"artifact", "explain", "follow_up"},
    "probe": COMMON_NODE_KEYS | {"probe", "within", "above", "below", "if_yes", "if_no", "artifact", "explain"},
}
ALL_NODE_KEYS = set().union(*NODE_KEYS.values())
FOLLOW_UP_KEYS = {"ask", "var", "allowed", "withdraw"}
ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "a mapping", float: "a number"}


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return "a number" if set(t) <= {int, float} else " or ".join(_TYPE_NAMES.get(x, x.__name__) for x in t)
    return _TYPE_NAMES.get(t, t.__name__)


def _shown(value: Any) -> str:
    """A value's type and a short form of it, for messages (never a whole file's worth)."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _did_you_mean(word: str, choices: set[str] | list[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _FileParser:
    """Parses one YAML document into parts of a spec."""

    def __init__(self, doc: YamlDocument, problems: list[Problem]) -> None:
        self.doc = doc
        self.problems = problems

    def where(self, path: tuple) -> Where:
        return Where(self.doc.file, self.doc.line(path), path)

    def bad(self, path: tuple, message: str) -> None:
        self.problems.append(self.doc.problem(path, message))

    def bad_value(self, path: tuple, message: str) -> None:
        """A problem with the value itself (its type): reported where the value is, not at its key."""
        self.problems.append(Problem(self.doc.file, self.doc.value_line(path), format_path(path), message))

    def check_type(self, value: Any, expected: Any, path: tuple) -> bool:
        if isinstance(value, bool) or not isinstance(value, expected):
            self.bad_value(path, f"must be {_type_name(expected)}, not {_shown(value)}")
            return False
        return True

    def string_list(self, value: Any, path: tuple, single: bool = True) -> tuple[str, ...] | None:
        """A list of strings; with ``single``, one bare string stands for a list of one."""
        if isinstance(value, str) and single:
            return (value,)
        if not isinstance(value, list):
            self.bad_value(path, f"must be a list of strings, not {_shown(value)}")
            return None
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.bad_value(path + (i,), f"must be a string, not {_shown(item)}")
                ok = False
        return tuple(value) if ok else None

    # -- top level -------------------------------------------------------
    def top(self) -> dict[str, Any]:
        data = self.doc.data
        if data is None:
            if not self.doc.problems:
                self.bad((), "the file is empty; a tree needs at least 'nodes'")
            return {}
        if not isinstance(data, dict):
            self.bad((), f"a tree file must be a mapping of keys, not {type(data).__name__}")
            return {}
        out = {}
        for key, value in data.items():
            if key not in TOP_KEYS:
                self.bad((key,), f"unknown key '{key}'{_did_you_mean(str(key), set(TOP_KEYS))}")
                continue
            if self.check_type(value, TOP_KEYS[key], (key,)):
                out[key] = value
        return out

    # -- targets -----------------------------------------------------------
    def target(self, value: Any, path: tuple, allow_group: bool = False) -> Target | None:
        where = self.where(path)
        if isinstance(value, str):
            return Target((value,), "all", where)
        if isinstance(value, list):
            ids = self.string_list(value, path)
            if ids is None:
                return None
            if not ids:
                self.bad(path, "an empty list goes nowhere; leave the branch out instead")
                return None
            return Target(ids, "all", where)
        if isinstance(value, dict):
            keys = set(value)
            if keys != {"at_least_one"}:
                extra = sorted(str(k) for k in keys - {"at_least_one"})
                self.bad(path, f"a branch mapping takes only 'at_least_one', not {', '.join(extra) or 'nothing'}")
                return None
            if not allow_group:
                self.bad(path + ("at_least_one",), "'at_least_one' is only meaningful under if_yes (the question above must have said yes)")
                return None
            ids = self.string_list(value["at_least_one"], path + ("at_least_one",))
            if ids is None:
                return None
            if not ids:
                self.bad(path + ("at_least_one",), "'at_least_one' needs at least one node id")
                return None
            return Target(ids, "at_least_one", where)
        self.bad_value(path, f"a branch is a node id, a list of node ids or {{at_least_one: [...]}}, not {_shown(value)}")
        return None

    # -- nodes -------------------------------------------------------------
    def node(self, node_id: Any, body: Any) -> NodeSpec | None:
        path = ("nodes", node_id)
        if not isinstance(node_id, str) or not node_id or not set(node_id) <= ID_CHARS:
            self.bad(path, f"node id {node_id!r} must be letters, digits, '_', '-' or '.'")
            return None
        if not isinstance(body, dict):
            self.bad_value(path, f"a node must be a mapping, not {_shown(body)}")
            return None
        kinds = [k for k in KIND_KEYS if k in body]
        # An ask or probe node may carry an inline artifact; any other pair is ambiguous.
        if ("ask" in kinds or "probe" in kinds) and "artifact" in kinds:
            kinds.remove("artifact")
        if not kinds:
            self.bad(path, f"node has no kind: give one of {', '.join(KIND_KEYS)}")
            return None
        if len(kinds) > 1:
            self.bad(path, f"node has several kinds ({', '.join(kinds)}); give exactly one")
            return None
        kind = kinds[0]
        node = NodeSpec(id=node_id, kind=kind, where=self.where(path))
        for key in body:
            if key not in NODE_KEYS[kind]:
                if path + (key,) in self.doc.bool_keys:
                    continue
                if key in ALL_NODE_KEYS:
                    self.bad(path + (key,), f"'{key}' does not belong on a '{kind}' node")
                else:
                    self.bad(path + (key,), f"unknown key '{key}'{_did_you_mean(str(key), NODE_KEYS[kind])}")
            else:
                node.field_where[key] = self.where(path + (key,))
        getattr(self, f"_{kind}")(node, body, path)
        self._common(node, body, path)
        return node

    def _common(self, node: NodeSpec, body: dict, path: tuple) -> None:
        if "label" in body and self.check_type(body["label"], str, path + ("label",)):
            node.label = body["label"]
        if "note" in body:
            self.check_type(body["note"], str, path + ("note",))
        if "applies_to" in body:
            node.applies_to = self.string_list(body["applies_to"], path + ("applies_to",))
        if "set" in body and self.check_type(body["set"], dict, path + ("set",)):
            for var, value in body["set"].items():
                if not isinstance(value, str):
                    self.bad_value(path + ("set", var), f"must be a string, not {_shown(value)}")
                else:
                    node.set[str(var)] = value
        if "region" in body and self.check_type(body["region"], str, path + ("region",)):
            # `region: eyes` is the region this node and the nodes below it are about: it binds the scope's
            # `region` (findings record it, a walk visits a node once per region) and makes the walk locate it
            if "region" in node.set and node.set["region"] != body["region"]:
                self.bad(path + ("region",), "'region' and 'set: {region: ...}' disagree; give the region once")
            node.region = body["region"]
            node.set["region"] = body["region"]

    # -- regions -------------------------------------------------------------
    def region(self, name: Any, body: Any) -> RegionSpec | None:
        path = ("regions", name)
        if not isinstance(name, str) or not name or not set(name) <= ID_CHARS:
            self.bad(path, f"region name {name!r} must be letters, digits, '_', '-' or '.'")
            return None
        if not isinstance(body, dict):
            self.bad_value(path, f"a region must be a mapping with 'locate' (one of {', '.join(LOCATE_KINDS)}), "
                                 f"not {_shown(body)}")
            return None
        for key in body:
            if key not in REGION_KEYS:
                self.bad(path + (key,), f"unknown key '{key}'{_did_you_mean(str(key), set(REGION_KEYS))}")
        if "locate" not in body:
            self.bad(path, f"a region needs 'locate': one of {', '.join(LOCATE_KINDS)}")
            return None
        locate = body["locate"]
        if not self.check_type(locate, str, path + ("locate",)):
            return None
        if locate not in LOCATE_KINDS:
            self.bad_value(path + ("locate",), f"unknown way to locate '{locate}'{_did_you_mean(locate, set(LOCATE_KINDS))}; "
                                               f"known: {', '.join(LOCATE_KINDS)}")
            return None
        region = RegionSpec(name=name, locate=locate, where=self.where(path))
        for key in REGION_KEYS:
            if key in body:
                region.field_where[key] = self.where(path + (key,))
        for key in ("prompt", "wording", "fallback"):
            if key not in body:
                continue
            value = body[key]
            if not self.check_type(value, str, path + (key,)):
                continue
            if not value.strip():
                self.bad_value(path + (key,), "must not be empty")
                continue
            if key != "fallback" and ("{{" in value or "{%" in value):
                self.bad_value(path + (key,), "is plain text, not a template (it is what {{ roi }} says)")
                continue
            setattr(region, key, value.strip())
        if locate == "ask_vlm" and "prompt" not in body:
            self.bad(path, "a region located by 'ask_vlm' needs 'prompt': what the VLM is asked to find, e.g. \"the eyes\"")
        elif locate != "ask_vlm" and "prompt" in body:
            self.bad(path + ("prompt",), f"'prompt' is only for 'locate: ask_vlm'; a '{locate}' region is located without asking")
        return region

    def _template(self, body: dict, key: str, path: tuple) -> str | None:
        value = body.get(key)
        if value is None:
            return None
        if self.check_type(value, str, path + (key,)):
            if not value.strip():
                self.bad(path + (key,), "must not be empty")
                return None
            return value
        return None

    def _probe(self, node: NodeSpec, body: dict, path: tuple) -> None:
        from explainer.probes import REGIONS

        if self.check_type(body["probe"], str, path + ("probe",)):
            node.probe = body["probe"]
        # `within`, not `on`: YAML 1.1 reads a bare `on:` key as a boolean
        if "within" in body and self.check_type(body["within"], str, path + ("within",)):
            if body["within"] not in REGIONS:
                self.bad(path + ("within",), f"must be one of {', '.join(REGIONS)}, not {body['within']!r}")
            else:
                node.on = body["within"]
        given = [k for k in ("above", "below") if k in body]
        if len(given) != 1:
            self.bad(path, "a probe needs exactly one threshold: 'above: X' (yes when the value is above X) or 'below: X'")
        for key in given:
            if self.check_type(body[key], (int, float), path + (key,)):
                setattr(node, key, float(body[key]))
        self._branches(node, body, path, what="probe")

    def _ask(self, node: NodeSpec, body: dict, path: tuple) -> None:
        node.prompt = self._template(body, "ask", path)
        if "threshold" in body:
            value = body["threshold"]
            if self.check_type(value, (int, float), path + ("threshold",)):
                if not 0.0 < float(value) < 1.0:
                    self.bad(path + ("threshold",), f"must be between 0 and 1 (exclusive), not {value}")
                else:
                    node.threshold = float(value)
        self._branches(node, body, path, what="question")

    def _branches(self, node: NodeSpec, body: dict, path: tuple, what: str) -> None:
        if "if_yes" in body:
            node.if_yes = self.target(body["if_yes"], path + ("if_yes",), allow_group=True)
        if "if_no" in body:
            node.if_no = self.target(body["if_no"], path + ("if_no",))
        if "artifact" in body:
            self._finding(node, body, path)
            if "if_yes" in body:
                self.bad(path + ("if_yes",), f"a {what} with an inline 'artifact' already knows where yes leads; drop 'if_yes' or move the artifact to its own node")
        elif "explain" in body or "follow_up" in body:
            key = "explain" if "explain" in body else "follow_up"
            self.bad(path + (key,), f"'{key}' needs an 'artifact' on the same node")
        if "if_yes" not in body and "if_no" not in body and "artifact" not in body:
            self.bad(path, f"{what} has no branch: give 'if_yes', 'if_no' or an inline 'artifact'")

    def _finding(self, node: NodeSpec, body: dict, path: tuple) -> None:
        if self.check_type(body["artifact"], str, path + ("artifact",)):
            node.artifact = body["artifact"]
        node.explain = self._template(body, "explain", path)
        if "follow_up" in body:
            node.follow_up = self._follow_up(body["follow_up"], path + ("follow_up",))

    def _artifact(self, node: NodeSpec, body: dict, path: tuple) -> None:
        self._finding(node, body, path)

    def _follow_up(self, value: Any, path: tuple) -> FollowUpSpec | None:
        if not self.check_type(value, dict, path):
            return None
        for key in value:
            if key not in FOLLOW_UP_KEYS:
                self.bad(path + (key,), f"unknown key '{key}'{_did_you_mean(str(key), FOLLOW_UP_KEYS)}")
        prompt = self._template(value, "ask", path)
        if prompt is None and "ask" not in value:
            self.bad(path, "a follow-up needs 'ask' (the one-word question)")
        var = value.get("var", "detail")
        if not isinstance(var, str) or not var.isidentifier():
            self.bad(path + ("var",), f"must be a template variable name, not {var!r}")
            var = "detail"
        withdraw = value.get("withdraw", "none")
        if not isinstance(withdraw, str):
            self.bad_value(path + ("withdraw",), f"must be a string, not {_shown(withdraw)}")
            withdraw = "none"
        allowed = None
        if "allowed" in value:
            # a bare string would be matched character by character: it must be a list
            allowed = self.string_list(value["allowed"], path + ("allowed",), single=False)
            if allowed is not None:
                allowed = tuple(dict.fromkeys(a.lower() for a in allowed))
        if prompt is None:
            return None
        return FollowUpSpec(prompt, var, allowed, withdraw.lower(), self.where(path))

    def _choose(self, node: NodeSpec, body: dict, path: tuple) -> None:
        node.prompt = self._template(body, "choose", path)
        if "sets" in body and self.check_type(body["sets"], str, path + ("sets",)):
            if not body["sets"].isidentifier():
                self.bad(path + ("sets",), f"must be a template variable name, not {body['sets']!r}")
            else:
                node.sets = body["sets"]
        then = self.target(body["then"], path + ("then",)) if "then" in body else None
        options = body.get("options")
        if options is None:
            self.bad(path, "a choice needs 'options'")
            return
        if isinstance(options, list):
            names = self.string_list(options, path + ("options",))
            for name in names or ():
                node.options[name] = then
            if names is not None and len(set(names)) != len(names):
                self.bad(path + ("options",), "options must be distinct")
        elif isinstance(options, dict):
            if then is not None:
                self.bad(path + ("then",), "give 'then' only with a list of options; a mapping of options already says where each goes")
            for name, value in options.items():
                node.options[str(name)] = None if value is None else self.target(value, path + ("options", name))
        else:
            self.bad(path + ("options",), f"must be a list of options or a mapping option → node, not {type(options).__name__}")
            return
        if len(node.options) < 2:
            self.bad(path + ("options",), "a choice needs at least two options")
        if all(t is None for t in node.options.values()) and not node.sets:
            self.bad(path, "choice leads nowhere: give 'then', targets for its options, or 'sets'")

    def _switch(self, node: NodeSpec, body: dict, path: tuple) -> None:
        if self.check_type(body["switch"], str, path + ("switch",)):
            node.on = body["switch"]
        cases = body.get("cases")
        if cases is None:
            self.bad(path, "a switch needs 'cases'")
        elif self.check_type(cases, dict, path + ("cases",)):
            for name, value in cases.items():
                target = self.target(value, path + ("cases", name))
                if target is not None:
                    node.cases[str(name)] = target
        if "default" in body:
            node.default = self.target(body["default"], path + ("default",))

    def _all(self, node: NodeSpec, body: dict, path: tuple) -> None:
        node.then = self.target(body["all"], path + ("all",))


def _merge_named(into: dict, key: str, items: dict, parser: _FileParser, origin: dict, where_path: tuple) -> None:
    for name, value in items.items():
        if name in into and into[name] != value:
            first = origin[name]
            parser.bad(where_path + (name,), f"'{name}' is already defined in {first.file}:{first.line}")
            continue
        into[name] = value
        origin.setdefault(name, parser.where(where_path + (name,)))


def _inside(base: Path, name: str, roots: tuple[Path, ...], bad, what: str) -> Path | None:
    """``name`` resolved against ``base`` (then each include root), if it lands inside one of ``roots``.

    Nothing outside the roots is opened, and a refused file's content is never shown.
    """
    candidates = [(base / name).resolve()] + [(r / name).resolve() for r in roots[1:]]
    allowed = [c for c in candidates if any(c.is_relative_to(r) for r in roots)]
    if not allowed:
        bad(f"{what} '{name}' is outside the tree's folder {roots[0]}"
            + (" and the --include-path folders" if len(roots) > 1 else "")
            + "; files are read only there (add a folder with --include-path)")
        return None
    for c in allowed:
        if c.is_file():
            return c
        if c.exists():  # a folder, FIFO or device: never opened
            bad(f"{what} '{name}' is not a regular file")
            return None
    bad(f"{what} '{name}' not found")
    return None


def with_include_chain(problems: list[Problem], included_from: dict[str, str]) -> list[Problem]:
    """Problems in included files also say which include line(s) led there."""
    return [Problem(p.file, p.line, p.path, f"{p.message} (included from {included_from[p.file]})")
            if p.file in included_from and "(included from" not in p.message else p for p in problems]


def parse_tree(path: str | Path, *, display_root: Path | None = None,
               include_paths: tuple[str | Path, ...] = ()) -> tuple[TreeSpec | None, list[Problem]]:
    """Parse a tree file and everything it includes. Returns the spec (None if unusable) and problems.

    Includes and a catalogue file resolve inside the tree's folder, or inside one of ``include_paths``.
    """
    problems: list[Problem] = []
    main = Path(path)

    def shown(p: Path) -> str:
        try:
            return str(p.relative_to(display_root)) if display_root else str(p)
        except ValueError:
            return str(p)

    nodes: dict[str, NodeSpec] = {}
    node_origin: dict[str, Where] = {}
    groups: dict[str, tuple[str, ...]] = {}
    group_origin: dict[str, Where] = {}
    variables: dict[str, str] = {}
    var_origin: dict[str, Where] = {}
    classes: list[str] = []
    files: list[str] = []
    top_main: dict[str, Any] = {}
    top_where: dict[str, Where] = {}
    threshold = 0.5
    broken: set[str] = set()
    regions: dict[str, RegionSpec] = {}
    broken_regions: set[str] = set()  # declared but unparseable: references to them are not reported again
    fatal: set[str] = set()  # files that could not be read or built
    _catalogue_parsers: list[_FileParser] = []  # the main file's parser (its doc locates the catalogue's lines)

    def visit(file: Path, chain: tuple[Path, ...], is_main: bool) -> None:
        nonlocal threshold, top_main
        doc = load_yaml(file, shown(file))
        problems.extend(doc.problems)
        if doc.fatal:
            fatal.add(doc.file)
        files.append(doc.file)
        parser = _FileParser(doc, problems)
        top = parser.top()
        if is_main:
            _catalogue_parsers.append(parser)
            top_main = top
            top_where.update({k: parser.where((k,)) for k in top})
        else:
            for key in ("tree", "start"):
                if key in top:
                    parser.bad((key,), f"'{key}' belongs in the main tree file, not in an included file")
        for name, body in top.get("nodes", {}).items():
            node = parser.node(name, body)
            if node is None:
                broken.add(str(name))
                continue
            if name in nodes:
                first = node_origin[name]
                parser.bad(("nodes", name), f"duplicate node id '{name}' (first defined in {first.file}:{first.line})")
                continue
            nodes[name] = node
            node_origin[name] = node.where
        for name, body in top.get("regions", {}).items():
            region = parser.region(name, body)
            if region is None:
                broken_regions.add(str(name))
            elif name in regions:
                first = regions[name].where
                parser.bad(("regions", name), f"duplicate region '{name}' (first defined in {first.file}:{first.line})")
            else:
                regions[name] = region
        parsed_groups = {}
        for name, members in top.get("groups", {}).items():
            got = parser.string_list(members, ("groups", name))
            if got is not None:
                parsed_groups[str(name)] = got
        _merge_named(groups, "groups", parsed_groups, parser, group_origin, ("groups",))
        parsed_vars = {}
        for name, value in top.get("vars", {}).items():
            if not str(name).isidentifier():
                parser.bad(("vars", name), f"variable name {name!r} must be an identifier")
            elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
                parser.bad_value(("vars", name), f"must be a string or number, not {_shown(value)}")
            else:
                parsed_vars[str(name)] = str(value)
        _merge_named(variables, "vars", parsed_vars, parser, var_origin, ("vars",))
        if "classes" in top:
            got = parser.string_list(top["classes"], ("classes",))
            for c in got or ():
                if c in classes:
                    parser.bad(("classes",), f"class '{c}' is listed twice")
                else:
                    classes.append(c)
        for key, value in top.get("defaults", {}).items():
            if key not in DEFAULT_KEYS:
                parser.bad(("defaults", key), f"unknown key '{key}'{_did_you_mean(str(key), set(DEFAULT_KEYS))}")
            elif parser.check_type(value, DEFAULT_KEYS[key], ("defaults", key)):
                if not 0.0 < float(value) < 1.0:
                    parser.bad(("defaults", key), f"must be between 0 and 1 (exclusive), not {value}")
                else:
                    threshold = float(value)
        if "catalogue" in top and not is_main:
            parser.bad(("catalogue",), "'catalogue' belongs in the main tree file: an included file cannot change "
                                       "the catalogue of the tree that includes it")
        for i, inc in enumerate(top.get("include", [])):
            ipath = ("include", i)
            if not isinstance(inc, str):
                parser.bad_value(ipath, f"must be a file path, not {_shown(inc)}")
                continue
            target = _inside(file.parent, inc, roots, lambda msg: parser.bad_value(ipath, msg), "included file")
            if target is None:
                continue
            if target in chain:
                parser.bad(ipath, f"include cycle: {' -> '.join(shown(p) for p in chain + (target,))}")
                continue
            here = f"{doc.file}:{doc.line(ipath)}"
            included_from.setdefault(shown(target), f"{here} <- {included_from[doc.file]}" if doc.file in included_from else here)
            visit(target, chain + (target,), False)

    root = main.resolve() if main.exists() else main
    roots = (root.parent, *(Path(p).resolve() for p in include_paths))
    included_from: dict[str, str] = {}  # included file -> the include line(s) that led to it
    visit(root, (root,), True)
    if not files or shown(root) in fatal:
        return None, with_include_chain(problems, included_from)
    if "nodes" not in top_main and not nodes and not any(p.path == "nodes" for p in problems):
        problems.append(Problem(shown(root), 1, "(top)", "missing key 'nodes'"))
    if "start" not in top_main:
        problems.append(Problem(shown(root), 1, "(top)", "missing key 'start' (the id of the first node)"))
    inputs: list[str] = []
    for i, name in enumerate(top_main.get("inputs", [])):
        if not isinstance(name, str) or not name.isidentifier():
            problems.append(Problem(shown(root), top_where["inputs"].line, f"inputs[{i}]", f"must be a variable name, not {name!r}"))
        else:
            inputs.append(name)
    if "classes" in top_main and not classes:
        problems.append(Problem(shown(root), top_where["classes"].line, "classes", "must list at least one class"))
    catalogue = None
    if "catalogue" in top_main:
        main_doc_parser = _catalogue_parsers[0]

        def resolve_file(name: str, path: tuple):
            target = _inside(root.parent, name, roots, lambda msg: main_doc_parser.bad_value(path, msg), "catalogue file")
            return (target, shown(target)) if target is not None else (None, None)

        n_before = len(problems)
        catalogue = catalogue_from_value(main_doc_parser.doc, top_main["catalogue"], ("catalogue",), problems,
                                         shown(root), resolve_file=resolve_file)
        if catalogue is None and len(problems) == n_before:
            problems.append(Problem(shown(root), top_where["catalogue"].line, "catalogue", "cannot load the catalogue"))
    spec = TreeSpec(
        name=str(top_main.get("tree", Path(root).stem)),
        description=str(top_main.get("description", "")),
        preamble=top_main.get("preamble"),
        file=shown(root),
        start=top_main.get("start"),
        classes=tuple(classes),
        groups=groups,
        group_where=group_origin,
        vars=variables,
        inputs=tuple(inputs),
        threshold=threshold,
        nodes=nodes,
        catalogue=catalogue,
        files=tuple(files),
        where=top_where,
        broken=broken,
        incomplete=bool(fatal),
        included_from=included_from,
        regions=regions,
        broken_regions=broken_regions,
    )
    return spec, with_include_chain(problems, included_from)


__all__ = ["parse_tree", "format_path", "KIND_KEYS", "NODE_KEYS", "TOP_KEYS", "FOLLOW_UP_KEYS"]
