"""``asc-search compare``: references and exported students trained over seeds on any feature cache, one table."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from ._args import positive_int

__all__ = ["register", "comparison_table", "pm"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train the reference arms (and exported students) over seeds on a feature cache: mean ± sd",
        description="Train the search file's reference arms (default: the built-in search file of the cache's "
        "profile: the DCASE 2024 baseline family width-fitted to its budget, with cross-entropy, with KD, with KD + "
        "embedding matching) and, given export folders, their students with their own recipes, each with N seeds "
        "(one after another, all cores): best epoch on the validation part, test split scored once per seed. "
        "Prints params, bytes, MACs, within budget, validation / test / unseen-device macro accuracy as mean ± sd, "
        "and the paired difference (per seed) to the first row.",
    )
    p.add_argument("cache_dir", metavar="CACHE_DIR", help="feature cache (from `asc-search features`)")
    p.add_argument("--teacher-cache", metavar="DIR", default=None,
                   help="teacher cache (default: CACHE_DIR-teacher when it exists; without one, references that "
                   "distil are skipped)")
    p.add_argument("--space", metavar="FILE", default=None,
                   help="search file giving the budget, split and references (default: the built-in one of the "
                   "cache's profile)")
    p.add_argument("--seeds", metavar="N", type=positive_int, default=3, help="seeds per configuration (default 3)")
    p.add_argument("--first-seed", dest="first_seed", metavar="S", type=int, default=0,
                   help="the first seed (seeds S .. S+N-1; default 0)")
    p.add_argument("--export", dest="exports", metavar="DIR", action="append", default=[],
                   help="an export folder whose student to retrain with its recipe (repeatable)")
    p.add_argument("--no-references", dest="references", action="store_false",
                   help="compare only the exports given")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default auto)")
    p.add_argument("--threads", metavar="N", type=positive_int, default=None,
                   help="torch threads per run (default: all cores; 1 is faster on a busy machine)")
    p.add_argument("--dir-folder", metavar="DIR", default=None,
                   help="WAV device impulse responses for configurations that train with them (train.dir_p > 0; "
                   "default: the built-in generic bank)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the comparison to FILE as JSON")
    p.set_defaults(func=_cmd_compare)


def pm(stat: dict[str, Any] | None, points: bool = False) -> str:
    """``mean ± sd`` (``points``: a difference in percentage points, signed)."""
    if not stat or stat.get("mean") is None:
        return "-"
    if points:
        text = f"{100 * stat['mean']:+.1f}"
        return text if stat.get("sd") is None else f"{text} ± {100 * stat['sd']:.1f}"
    text = f"{stat['mean']:.3f}"
    return text if stat.get("sd") is None else f"{text} ± {stat['sd']:.3f}"


def comparison_table(result: dict[str, Any], title: str | None = None) -> Table:
    """The comparison as one rich table (also the bench's accuracy table)."""
    b = result["budget"]
    rows = result["rows"]
    n = len(result["seeds"])
    table = Table(title=title or f"Comparison on {result['cache_dir']} ({result['profile']} profile, "
                  f"{result['split_sizes']['test']} test clips, {n} seed(s); budget {b['max_param_bytes']:,} B at "
                  f"{b['param_dtype']}, {b['max_macs']:,} MACs)")
    first = rows[0]["name"] if rows else "-"
    for col in ("model", "params", "bytes", "MACs", "within budget", "val macro acc", "test macro acc",
                "unseen-device macro acc", f"test vs {first} (points)"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    for r in rows:
        s = r["summary"]
        table.add_row(r["name"], f"{r['params']:,}", f"{r['param_bytes']:,} ({r['param_dtype']})", f"{r['macs']:,}",
                      "yes" if r["within_budget"] else "no", pm(s["val_macro_accuracy"]), pm(s["test_macro_accuracy"]),
                      pm(s["test_unseen_macro_accuracy"]),
                      "-" if r is rows[0] else pm(r["paired_vs_first"]["test_macro_accuracy"], points=True))
    return table


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..compare import compare
    from ._render import Renderer

    if args.json:
        from pathlib import Path

        from ..errors import ConfigError

        if Path(args.json).is_dir():
            raise ConfigError(f"--json {args.json} is a folder; expected a file name")
    with Renderer() as render:
        result = compare(args.cache_dir, teacher_cache=args.teacher_cache, space=args.space, seeds=args.seeds,
                         first_seed=args.first_seed, exports=args.exports, references=args.references,
                         device=args.device, threads=args.threads, dir_folder=args.dir_folder, on_event=render)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(comparison_table(result))
    for r in result["rows"]:
        if r.get("paired_vs_best_reference"):
            console.print(f"{r['name']} vs the best reference ({r['best_reference']}, by validation): test macro "
                          f"accuracy {pm(r['paired_vs_best_reference']['test_macro_accuracy'], points=True)} points "
                          "(paired over seeds)")
    console.print(f"seeds {result['seeds']}, trained one after another ({result['threads']} torch threads); mean ± "
                  "sample sd over seeds; paired differences per seed, then mean ± sd")
    if args.json:
        from .._io import write_json_atomic

        write_json_atomic(args.json, result)
        console.print(f"wrote {args.json}")
    return 0
