"""``asc-search bench``: every area's figures and the accuracy table, side by side in one run."""

from __future__ import annotations

import argparse
import math
from typing import Any

from rich.table import Table

from ._args import positive_int
from ._render import output_console


def register(sub: argparse._SubParsersAction) -> None:
    from ..bench.runner import AREAS

    p = sub.add_parser(
        "bench",
        help="measure features, complexity, teacher and search figures, and the accuracy table, in one run",
        description="Runs the per-area benchmarks (asc_search/bench/*.py) one after the other, then the "
        "accuracy table on the built-in data: `asc-search compare` on the demo's cache (the reference arms: the "
        "DCASE 2024 baseline family fitted to the budget with cross-entropy, KD, KD + embedding matching; the best "
        "searched student retrained with its recipe; each over --seeds seeds, mean ± sd) and the teacher. Without "
        "--demo-dir the demo runs first. Prints tables; --json writes everything to a file.",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="write all figures to FILE as JSON")
    p.add_argument("--quick", action="store_true", help="small sizes everywhere (a smoke run, minutes)")
    p.add_argument("--areas", default=",".join(AREAS), help=f"comma-separated areas to run (default: {','.join(AREAS)})")
    p.add_argument("--no-accuracy", action="store_true", help="skip the accuracy table")
    p.add_argument("--demo-dir", default=None, help="take the accuracy table's inputs from this finished demo folder")
    p.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary folder, removed after)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default auto)")
    p.add_argument("--seeds", metavar="N", type=positive_int, default=3,
                   help="seeds per row of the accuracy table (default 3; --quick uses 2)")
    p.add_argument("--threads", metavar="N", type=positive_int, default=None,
                   help="torch threads per accuracy-table run (default: all cores)")
    p.set_defaults(func=_cmd_bench)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench.runner import run_bench, write_json
    from ..errors import ConfigError
    from ._render import Renderer
    from .demo import DemoPrinter

    areas = tuple(a.strip() for a in args.areas.split(",") if a.strip())
    if args.json:
        from pathlib import Path

        if Path(args.json).is_dir():
            raise ConfigError(f"--json {args.json} is a folder; expected a file name")
    console = output_console()
    printer = DemoPrinter()  # the bench may run the demo first
    with Renderer(console=printer.console, other=printer) as render:
        result = run_bench(
            quick=args.quick,
            areas=areas,
            accuracy=not args.no_accuracy,
            demo_dir=args.demo_dir,
            work_dir=args.work_dir,
            device=args.device,
            seeds=args.seeds,
            threads=args.threads,
            on_event=render,
        )
    from ..bench.runner import flatten

    for area, entry in result["areas"].items():
        title = f"{area} ({entry.get('seconds', 0)} s)"
        if "error" in entry:
            console.print(f"[bold]{title}[/bold]: [red]not measured[/red]: {entry['error']}")
            continue
        table = Table(title=title, show_header=False)
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in flatten(entry["result"]):
            table.add_row(key, _fmt(value))
        console.print(table)
    acc = result.get("accuracy")
    if acc:
        from .compare import comparison_table, pm

        b = acc["budget"]
        console.print(comparison_table(acc, title=f"Accuracy on the built-in data ({acc['profile']} profile, "
                                       f"{acc['split_sizes']['test']} test clips, {len(acc['seeds'])} seeds; budget "
                                       f"{b['max_param_bytes']:,} B at {b['param_dtype']}, {b['max_macs']:,} MACs)"))
        for r in acc["rows"]:
            if r.get("paired_vs_best_reference"):
                console.print(f"{r['name']} vs the best reference ({r['best_reference']}): test macro accuracy "
                              f"{pm(r['paired_vs_best_reference']['test_macro_accuracy'], points=True)} points "
                              "(paired over seeds)")
        t = acc["teacher"]
        console.print(f"{t['model']}: {t['params']:,} params, {t['macs']:,} MACs, val macro acc "
                      f"{_fmt(t['val_macro_accuracy'])}, test macro acc {_fmt(t['test_macro_accuracy'])}, "
                      f"unseen-device {_fmt(t['test_unseen_macro_accuracy'])} (scored once, not retrained)")
    if args.json:
        write_json(result, args.json)
        console.print(f"wrote {args.json}")
    console.print(f"bench done in {result['seconds']:.0f}s")
    return 0
