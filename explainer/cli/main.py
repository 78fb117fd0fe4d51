"""The ``explain`` command line.

``explain IMAGE...`` explains images; ``explain tree|train|eval|bench ...`` are
sub-commands. Every sub-command module contributes its parsers through a
``register_*`` function and sets ``func`` (args -> exit code), so this file only
dispatches and turns :class:`ExplainerError` into one line and an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from explainer.errors import ExplainerError

# Sub-command name -> (module, registering function). Imported lazily so that
# `explain tree validate` does not pay for importing torch.
SUBCOMMANDS: dict[str, list[tuple[str, str]]] = {
    "tree": [("explainer.cli.tree", "register")],
    "train": [("detectors.cli", "register_train"), ("masks.cli", "register_train"), ("detectors.features.cli", "register_train")],
    "eval": [("detectors.cli", "register_eval"), ("explainer.cli.eval", "register"), ("detectors.features.cli", "register_eval")],
    "calibrate": [("explainer.cli.eval", "register_calibrate")],
    "bench": [("explainer.cli.bench", "register")],
}


def _print_error(message: str) -> None:
    from explainer.outputs.names import printable

    print(f"explain: error: {printable(message)}", file=sys.stderr)  # a file name may hold control characters


def _build_subcommand_parser(name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"explain {name}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    for module_name, func_name in SUBCOMMANDS[name]:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A component not installed yet must not break the others.
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        register: Callable[[argparse._SubParsersAction], None] = getattr(module, func_name)
        register(sub)
    return parser


def _run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return int(func(args) or 0)
    except ExplainerError as exc:
        if getattr(args, "debug", False):
            raise
        _print_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except BrokenPipeError:
        # `explain ... | head` closed stdout early: not an error of ours.
        try:
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - keep Python quiet at exit
        except OSError:
            pass
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench" and (len(argv) == 1 or argv[1].startswith("-") and argv[1] not in ("-h", "--help")):
        argv.insert(1, "strategies")  # `explain bench` alone runs the strategy comparison
    if argv and argv[0] in SUBCOMMANDS:
        parser = _build_subcommand_parser(argv[0])
        args = parser.parse_args(argv[1:])
        return _run(args.func, args)
    from explainer.cli.explain import build_parser, run_explain

    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # images may come after options too
    return _run(run_explain, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
