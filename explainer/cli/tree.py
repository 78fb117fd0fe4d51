"""``explain tree validate|show|walk|stats|schema``: commands for people who write trees."""

from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from explainer.outputs.tables import Table

from explainer.errors import UsageError
from explainer.safe_io import atomic_write_text
from explainer.trees import TreeError, compile_tree
from explainer.trees.compiler import CompiledTree
from explainer.trees.templates import ROI_WITHOUT_BOX

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    """The terminal's width on a terminal; piped output is not cut at 80 columns (the reader decides how to wrap)."""
    return _out if sys.stdout.isatty() else Console(highlight=False, soft_wrap=True, width=100_000)


def _compile(path: str, args: argparse.Namespace | None = None) -> CompiledTree:
    if not Path(path).exists():
        raise UsageError(f"{path}: file not found")
    return compile_tree(path, include_paths=tuple(getattr(args, "include_path", None) or ()))


def _print_tree_error(exc: TreeError) -> int:
    for problem in exc.problems:
        print(str(problem), file=sys.stderr)
    n = len(exc.problems)
    print(f"{n} problem{'s' if n != 1 else ''} found", file=sys.stderr)
    return 2


# -- validate ------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    worst = 0
    for path in args.paths:
        try:
            tree = _compile(path, args)
        except TreeError as exc:
            worst = max(worst, _print_tree_error(exc))
            continue
        except UsageError as exc:
            print(str(exc), file=sys.stderr)
            worst = 2
            continue
        covered = len(tree.artifacts())
        print(f"{path}: ok ({len(tree.spec.nodes)} nodes, {covered} of {len(tree.catalogue)} catalogue artifacts, "
              f"{len(tree.spec.files)} file{'s' if len(tree.spec.files) != 1 else ''})")
    return worst


# -- show ------------------------------------------------------------------------------
def cmd_show(args: argparse.Namespace) -> int:
    from explainer.trees.render import to_dot, to_mermaid, to_rich

    try:
        tree = _compile(args.path, args)
    except TreeError as exc:
        return _print_tree_error(exc)
    if args.format == "mermaid":
        sys.stdout.write(to_mermaid(tree))
    elif args.format == "dot":
        sys.stdout.write(to_dot(tree))
    else:
        _stdout().print(to_rich(tree, max_len=90 if sys.stdout.isatty() else None))
    return 0


# -- walk ------------------------------------------------------------------------------
def cmd_walk(args: argparse.Namespace) -> int:
    from explainer.answerers.interactive import InteractiveAnswerer
    from explainer.answerers.scripted import ScriptedAnswerer
    from explainer.engine import AnswerInferred, FindingWithdrawn, QuestionAnswered, RegionLocated, TreeRunner

    try:
        tree = _compile(args.path, args)
    except TreeError as exc:
        return _print_tree_error(exc)
    if args.answers:
        from explainer.trees.answers_file import load_answers

        try:
            script = load_answers(args.answers, tree)  # checked against the tree, every problem at its line
        except TreeError as exc:
            return _print_tree_error(exc)
        answerer = ScriptedAnswerer(script["answers"], script["defaults"], str(args.answers), script["follow_ups"],
                                    script["regions"])
    else:
        answerer = InteractiveAnswerer()
    scope = {"roi": ROI_WITHOUT_BOX} if args.no_box else {}
    if args.obj:
        scope["obj"] = args.obj
    if args.region:
        scope["region"] = args.region
    runner = TreeRunner(tree, answerer, max_steps=args.max_steps)
    result = runner.run(scope=scope)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    # Node ids, prompts, artifact names and explanations come from a possibly shared tree:
    # escaped, so `[/]` in a prompt prints as text instead of raising rich's MarkupError.
    for ev in result.events:
        if isinstance(ev, QuestionAnswered):
            detail = f"P(yes)={ev.p_yes:.2f}" if ev.p_yes is not None else ev.kind
            _out.print(f"[dim]round {ev.round}[/] {escape(ev.node_id)}: {escape(ev.prompt)} → [bold]{escape(str(ev.answer))}[/] "
                       f"[dim]({escape(detail)})[/]")
        elif isinstance(ev, AnswerInferred):
            _out.print(f"[dim]round {ev.round}[/] {escape(ev.node_id)}: [bold]yes[/] [dim](inferred: {escape(ev.reason)})[/]")
        elif isinstance(ev, FindingWithdrawn):
            _out.print(f"[yellow]withdrawn[/] {escape(ev.artifact)} (answer '{escape(str(ev.answer))}')")
        elif isinstance(ev, RegionLocated):
            from explainer.engine.regions import describe

            info = {"locate": ev.locate, "located": ev.located, "used": ev.used, "box": ev.box}
            _out.print(f"[dim]region[/] {escape(describe(ev.region, info))}")
            for note in ev.notes:
                _out.print(f"[yellow]note:[/] {escape(note)}")
    _out.print()
    if result.findings:
        _out.print(f"[bold]Artifacts found ({len(result.findings)}):[/]")
        for f in result.findings:
            _out.print(f"  • [green]{escape(f.artifact)}[/]: {escape(f.explanation)}")
    else:
        _out.print("[bold]No artifacts found.[/]")
    _out.print(f"[dim]{result.yes_no} yes/no questions, {result.choices} choices, {result.follow_ups} follow-ups, "
               f"{result.inferred} inferred, {result.rounds} rounds[/]")
    if result.truncated:
        _err.print(f"[red]stopped after {args.max_steps} steps (step limit)[/]")
        return 1
    return 0


# -- stats -----------------------------------------------------------------------------
def cmd_stats(args: argparse.Namespace) -> int:
    from explainer.stats.tree_cost import load_priors, tree_stats

    try:
        tree = _compile(args.path, args)
    except TreeError as exc:
        return _print_tree_error(exc)
    if args.p_artifact is not None and not 0.0 < args.p_artifact < 1.0:
        raise UsageError(f"--p-artifact must be between 0 and 1, not {args.p_artifact}")
    if args.samples < 2:
        raise UsageError("--samples must be at least 2")
    priors = load_priors(args.priors, tree) if args.priors else None
    stats = tree_stats(tree, p=args.p_artifact, priors=priors, samples=args.samples, seed=args.seed)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
        return 0
    table = _stats_table(stats)
    if args.markdown:
        print(table.markdown())
    else:
        _stdout().print(table.rich())
        _stdout().print(table.footer)
    return 0


def _stats_table(stats) -> Table:
    table = Table(
        title=f"{stats.tree}: cost per image",
        headers=["class", "artifacts reachable", "longest path", "yes/no questions", "follow-ups", "probes",
                 "rounds (mean / max)", "entropy floor (bits)", "questions / floor"],
        footer=f"p = {stats.p_artifact:.3f} per applicable artifact; {stats.samples} oracle walks per class and region "
               f"(seed {stats.seed}). Catalogue covered: {stats.catalogue_covered} of {stats.catalogue_size}.")
    for c in stats.classes:
        table.add(c.name, c.artifacts_reachable, c.longest_path, f"{c.yes_no:.2f} ± {c.yes_no_se:.2f}",
                  f"{c.follow_ups:.2f}", f"{c.probes:.2f}", f"{c.rounds:.2f} / {c.max_rounds}", f"{c.entropy_bits:.2f}",
                  f"{c.ratio_to_floor:.2f}" if c.entropy_bits else "n/a")
    mean_q, mean_h = stats.mean("yes_no"), stats.mean("entropy_bits")
    table.add("mean", "", "", f"{mean_q:.2f}", f"{stats.mean('follow_ups'):.2f}", f"{stats.mean('probes'):.2f}",
              f"{stats.mean('rounds'):.2f} / {max(c.max_rounds for c in stats.classes)}", f"{mean_h:.2f}",
              f"{mean_q / mean_h:.2f}" if mean_h else "n/a", bold=True)
    n = stats.direct_questions
    table.add("direct prompting", n, n, n, 0, 0, f"{n} / {n}", "", "")
    return table


# -- schema ------------------------------------------------------------------------------
def cmd_schema(args: argparse.Namespace) -> int:
    name = "answers.schema.json" if args.answers else "question-tree.schema.json"
    sys.stdout.write(resources.files("explainer").joinpath(f"schema/{name}").read_text(encoding="utf-8"))
    return 0


# -- new ---------------------------------------------------------------------------------
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def cmd_new(args: argparse.Namespace) -> int:
    """A commented starter tree that validates; never overwrites a file."""
    if not _NAME.match(args.name):
        raise UsageError(f"{args.name!r}: a tree name is a letter followed by letters, digits, '_' or '-' (at most 64)")
    out = Path(args.out) if args.out else Path(f"{args.name}.yaml")
    if out.exists() or out.is_symlink():
        raise UsageError(f"{out}: already exists; choose another name or --out")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: folder not found")
    text = resources.files("explainer").joinpath("data/starter-tree.yaml").read_text(encoding="utf-8")
    atomic_write_text(out, text.replace("tree: NAME", f"tree: {args.name}", 1))
    print(f"{out}: written; next: explain tree validate {out}")
    return 0


def _include_path(p: argparse.ArgumentParser) -> None:
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="a folder the tree's include: and catalogue: files may also come from (repeatable; "
                        "by default only the tree's own folder)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check trees; exit 0 when valid, 2 with every problem otherwise")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _include_path(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("show", help="print a tree (rich text, Mermaid or Graphviz dot)")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--format", choices=("text", "mermaid", "dot"), default="text")
    _include_path(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("walk", help="walk a tree with scripted or interactive answers")
    p.add_argument("path", metavar="PATH")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--answers", metavar="FILE", help="YAML/JSON answers by node id")
    how.add_argument("--interactive", action="store_true", help="answer each question in the terminal")
    p.add_argument("--class", dest="obj", metavar="NAME", help="the image's class (skips the class question)")
    p.add_argument("--region", metavar="NAME", help="the region (skips the region question)")
    p.add_argument("--max-steps", type=int, default=2000, help="stop a runaway walk after this many nodes")
    p.add_argument("--no-box", action="store_true",
                   help="render {{ roi }} as explain does when the detector drew no box (default: as with a box)")
    p.add_argument("--json", action="store_true", help="print the full event trace as JSON")
    _include_path(p)
    p.set_defaults(func=cmd_walk)

    p = sub.add_parser("stats", help="questions, follow-ups and rounds per image, beside the entropy floor")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--p-artifact", type=float, default=None,
                   help="probability of each applicable artifact (default: 2.4 artifacts per image on average)")
    p.add_argument("--priors", metavar="FILE", help="YAML/JSON: catalogue name -> probability (overrides --p-artifact)")
    p.add_argument("--samples", type=int, default=400, help="oracle walks per class and region (default 400)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (for READMEs)")
    _include_path(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("schema", help="print the JSON Schema of the tree language (for editors)")
    p.add_argument("--answers", action="store_true", help="the schema of `tree walk --answers` files instead")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("new", help="write a commented starter tree NAME.yaml that validates")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--out", metavar="PATH", help="where to write it (default: NAME.yaml here)")
    p.set_defaults(func=cmd_new)
