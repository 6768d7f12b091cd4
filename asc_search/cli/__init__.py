"""The ``asc-search`` command. Each sub-module registers its subcommands; this module only dispatches.

Errors a user can cause (:class:`asc_search.errors.AscSearchError`) end the command with a one-line message and a
non-zero exit code, never a traceback. Library messages name the parameters of the call (``num_samples``); the
first mention of each parameter an error names (``exc.params``) is shown as the option that sets it
(``--num-samples``): an option's ``dest`` is the library parameter it sets.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Iterator, Sequence

from ..errors import AscSearchError, bound_message

__all__ = ["main", "build_parser", "cli_message"]

# One module per area; each has ``register(subparsers)`` which adds its subcommands and sets ``func``.
_COMMAND_MODULES = ("data", "models", "teacher", "search", "results", "compare", "bench", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asc-search",
        description="Budgeted Ray Tune + Optuna search for distilled low-complexity acoustic scene classifiers.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"asc-search {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    for leaf in _leaf_parsers(parser):
        leaf.set_defaults(cli_parser=leaf)
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for sub in subs:
        for child in dict.fromkeys(sub.choices.values()):
            yield from _leaf_parsers(child)


def cli_message(exc: AscSearchError, parser: argparse.ArgumentParser | None) -> str:
    """The error's message with the first mention of each parameter it names replaced by its option."""
    message = str(exc)
    if parser is None:
        return message
    options = {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}
    for param in exc.params:
        if param in options:
            message = re.sub(rf"(?<![\w./-]){re.escape(param)}(?![\w/-])", options[param], message, count=1)
    return message


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except AscSearchError as exc:
        message = bound_message(cli_message(exc, getattr(args, "cli_parser", None)))
        print(f"asc-search {args.command}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except ImportError as exc:  # a broken installation, not a mistake in the input: say which library
        name = getattr(exc, "name", None) or "a library"
        print(f"asc-search {args.command}: error: cannot import {name} ({bound_message(str(exc), 300)}); the "
              "installation is broken: reinstall asc-search's dependencies (pip install -e .)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"asc-search {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
