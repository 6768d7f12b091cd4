"""The ``asc-search`` command. Each sub-module registers its subcommands; this module only dispatches.

Errors a user can cause (:class:`asc_search.errors.AscSearchError`) end the command with a one-line message and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import AscSearchError

__all__ = ["main", "build_parser"]

# One module per area; each has ``register(subparsers)`` which adds its subcommands and sets ``func``.
_COMMAND_MODULES = ("data", "models", "teacher", "search", "results", "bench", "demo")


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except AscSearchError as exc:
        print(f"asc-search {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"asc-search {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
