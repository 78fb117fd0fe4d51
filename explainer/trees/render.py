"""A compiled tree as something to look at: a rich tree, Mermaid, or Graphviz dot."""

from __future__ import annotations

from rich.tree import Tree as RichTree

from explainer.trees.compiler import CompiledTree

_EDGE_LABEL = {"yes": "yes", "no": "no", "all": "", "option": "{label}", "case": "{label}"}


def _title(tree: CompiledTree, node_id: str, max_len: int | None = None) -> str:
    node = tree.node(node_id)
    if node.kind == "ask":
        text = node.label or (node.prompt or "").replace("{{ intro }}", "").replace("{{ yn }}", "").strip()
        text = text if max_len is None or len(text) <= max_len else text[:max_len - 3] + "..."
        return f"[{node.artifact}] ← {node.label or node.id}" if node.artifact else f"? {text}"
    if node.kind == "probe":
        cmp = f"> {node.above:g}" if node.above is not None else f"< {node.below:g}"
        head = f"probe {node.probe} on {node.on} {cmp}"
        return f"[{node.artifact}] ← {head}" if node.artifact else head
    if node.kind == "choose":
        return f"choose {node.sets or ''}: {node.label or node.id}".replace(":  ", ": ")
    if node.kind == "switch":
        return f"switch on {node.on}"
    if node.kind == "all":
        return node.label or node.id
    return f"[{node.artifact}]"


MAX_SHOWN_DEPTH = 200  # deeper levels are cut (rich indents every level): use --format mermaid or dot


def to_rich(tree: CompiledTree, max_len: int | None = 90) -> RichTree:
    """Nested view from the start node; a node shown once is referenced after that (the graph is a DAG).

    ``max_len`` shortens long questions for a terminal; None shows them whole (piped output).
    """
    root = RichTree(f"[bold]{tree.name}[/] ({len(tree.spec.nodes)} nodes, {len(tree.artifacts())} artifacts)")
    shown: set[str] = set()
    styles = {"ask": "", "choose": "cyan", "switch": "magenta", "all": "bold", "artifact": "green", "probe": "blue"}
    stack: list[tuple[RichTree, str, str, int]] = [(root, tree.start, "", 0)]  # iterative: long chains do not recurse
    while stack:
        parent, node_id, via, depth = stack.pop()
        node = tree.node(node_id)
        prefix = f"[dim]{via}[/] " if via else ""
        extra = f" [dim](only {', '.join(node.applies_to)})[/]" if node.applies_to else ""
        if node_id in shown:
            parent.add(f"{prefix}[dim]→ {node_id} (see above)[/]")
            continue
        if depth >= MAX_SHOWN_DEPTH:
            parent.add(f"{prefix}[dim]… {node_id} and below: more than {MAX_SHOWN_DEPTH} levels (see --format mermaid)[/]")
            continue
        shown.add(node_id)
        style = styles[node.kind]
        label = _title(tree, node_id, max_len).replace("[", "\\[")
        branch = parent.add(f"{prefix}[{style}]{label}[/]{extra}" if style else f"{prefix}{label}{extra}")
        edges = list(tree.graph.out_edges(node_id, data=True))
        for _, child, data in reversed(edges):  # reversed: the stack pops them in file order
            label = data["label"] if data["kind"] in ("option", "case") else data["kind"] if data["kind"] in ("yes", "no") else ""
            if data.get("mode") == "at_least_one":
                label = "yes (≥1)"
            stack.append((branch, child, label, depth + 1))
    return root


def _quote(text: str) -> str:
    return text.replace('"', "'")


def to_mermaid(tree: CompiledTree) -> str:
    lines = ["flowchart TD"]
    ids = {n: f"n{i}" for i, n in enumerate(tree.spec.nodes)}
    for node_id, node in tree.spec.nodes.items():
        text = _quote(_title(tree, node_id))
        shape = ("{{\"%s\"}}" if node.kind in ("choose", "switch") else "[\"%s\"]") % text
        lines.append(f"  {ids[node_id]}{shape}")
    for a, b, data in tree.graph.edges(data=True):
        label = data["label"] or ("yes" if data["kind"] == "yes" else "")
        if data.get("mode") == "at_least_one":
            label = "yes, at least one"
        lines.append(f"  {ids[a]} -->|{_quote(label)}| {ids[b]}" if label else f"  {ids[a]} --> {ids[b]}")
    return "\n".join(lines) + "\n"


def to_dot(tree: CompiledTree) -> str:
    lines = [f'digraph "{_quote(tree.name)}" {{', "  rankdir=LR;", "  node [fontname=Helvetica, fontsize=10];"]
    shapes = {"ask": "box", "choose": "diamond", "switch": "diamond", "all": "oval", "artifact": "note", "probe": "hexagon"}
    for node_id, node in tree.spec.nodes.items():
        lines.append(f'  "{node_id}" [shape={shapes[node.kind]}, label="{_quote(_title(tree, node_id))}"];')
    for a, b, data in tree.graph.edges(data=True):
        label = data["label"] or ("yes" if data["kind"] == "yes" else "")
        lines.append(f'  "{a}" -> "{b}"' + (f' [label="{_quote(label)}"];' if label else ";"))
    lines.append("}")
    return "\n".join(lines) + "\n"
