"""``asc-search demo``: the whole method on built-in synthetic data in one command."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ._args import positive_int
from ._render import output_console
from .search import SearchPrinter

__all__ = ["register", "DemoPrinter"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole method on built-in synthetic data (synth, features, teacher, embed, search, export)",
        description="synth -> features (quick profile) -> teacher train -> embed -> search (search_spaces/quick.yaml)"
        " -> export, on local Ray, in under 10 minutes on 2 CPU cores; ends with a summary and where every file is.",
    )
    p.add_argument("--out", dest="out_dir", metavar="DIR", default=str(Path("results") / "demo"),
                   help="output folder (default: results/demo)")
    p.add_argument("--clips", type=positive_int, default=None, help="synthetic clips in all (default 3000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, split, teacher and search (default 0)")
    p.add_argument("--teacher-epochs", type=positive_int, default=None, help="teacher epochs (default 12)")
    p.add_argument("--num-samples", type=positive_int, default=None, help="trained search trials (default: the space's)")
    p.add_argument("--student-epochs", type=positive_int, default=None, help="epochs per trial (default: the space's)")
    p.add_argument("--space", default=None, help="search file (default: search_spaces/quick.yaml)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="device (default auto)")
    p.add_argument("--force", action="store_true", help="replace an existing demo folder")
    p.set_defaults(func=_cmd_demo)


class DemoPrinter:
    """The demo's own events, with the time since it started: each step (bold), teacher epochs; the search's trial
    events go to a :class:`SearchPrinter`. The ``other=`` handler of a :class:`~asc_search.cli._render.Renderer`."""

    def __init__(self, console: Console | None = None) -> None:
        self.search = SearchPrinter(console)
        self.console = self.search.console
        self.start = time.perf_counter()

    def _line(self, text: str, style: str) -> None:
        elapsed = time.perf_counter() - self.start
        self.console.print(f"[{style}]{elapsed:6.1f}s  {text}[/{style}]", highlight=False, soft_wrap=True)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "step":
            self._line(f"[{info['n']}/{info['of']}] {info['text']}", "bold")
        elif event == "epoch":
            nan = float("nan")
            self._line(f"    {info.get('task')} epoch {info.get('epoch')}/{info.get('epochs')}: train loss "
                       f"{info.get('train_loss', nan):.3f}, val macro acc {info.get('val_macro_accuracy', nan):.3f}",
                       "dim")
        else:
            self.search(event, info)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import DemoSettings, run_demo
    from ._render import Renderer

    console = output_console()
    kw = {"seed": args.seed, "device": args.device}
    for key, value in (("clips", args.clips), ("teacher_epochs", args.teacher_epochs),
                       ("num_samples", args.num_samples), ("student_epochs", args.student_epochs)):
        if value is not None:
            kw[key] = value
    if args.space is not None:
        kw["space"] = Path(args.space)
    settings = DemoSettings(**kw)
    printer = DemoPrinter()
    with Renderer(console=printer.console, other=printer) as render:
        s = run_demo(args.out_dir, settings, force=args.force, on_event=render)

    table = Table(title="asc-search demo: summary")
    table.add_column("")
    table.add_column("params", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("MACs", justify="right")
    table.add_column("val macro acc", justify="right")
    table.add_column("test macro acc", justify="right")

    def f(v, kind="int"):
        if v is None:
            return "-"
        return f"{int(v):,}" if kind == "int" else f"{float(v):.4f}"

    t, st = s.teacher, s.student
    table.add_row(f"teacher ({t.get('preset')})", f(t.get("params")), f"{f(t.get('params') and t['params'] * 4)} (fp32)",
                  f(t.get("macs")), f(t.get("val_macro_accuracy"), "acc"), f(t.get("test_macro_accuracy"), "acc"))
    table.add_row(f"best student (trial {st.get('trial_id')})", f(st.get("params")),
                  f"{f(st.get('param_bytes'))} ({st.get('param_dtype')})", f(st.get("macs")),
                  f(st.get("val_macro_accuracy"), "acc"), f(st.get("test_macro_accuracy"), "acc"))
    console.print(table)
    b = s.budget
    if b:
        console.print(f"budget: {b['max_param_bytes']:,} bytes at {b['param_dtype']}, {b['max_macs']:,} MACs")
    counts = s.proposals
    console.print(
        f"proposals: {counts.get('total', 0)} in all, {counts.get('rejected_budget', 0)} rejected over budget before "
        f"training, {counts.get('completed', 0)} completed (reference arms included), "
        f"{counts.get('early_stopped', 0)} stopped early by ASHA, "
        f"{counts.get('failed', 0)} failed"
    )
    if st.get("deployed_weights_bytes") is not None:
        console.print(f"student deployed as {st['deployed_precision']}: {st['deployed_weights_bytes']:,} bytes of "
                      f"weights measured from student.onnx; test macro accuracy {f(st.get('test_macro_accuracy'), 'acc')}"
                      f" ({st['deployed_precision']}, onnxruntime), {f(st.get('test_macro_accuracy_fp32'), 'acc')} "
                      "(float32)")
    if st.get("against_reference"):
        console.print(f"best student against the search's reference arms: {st['against_reference']}")
    if st.get("unseen_macro_accuracy") is not None:
        console.print(f"student test macro accuracy: seen devices {st.get('seen_macro_accuracy'):.4f}, "
                      f"unseen devices {st.get('unseen_macro_accuracy'):.4f}")
    files = Table(title="where every file is", show_header=False)
    files.add_column("what")
    files.add_column("path")
    labels = {
        "data": "synthetic data set (TAU layout)",
        "cache": "feature cache (quick profile)",
        "teacher": "teacher (weights, metrics)",
        "teacher_cache": "teacher cache (embeddings + logits)",
        "run": "search run (trials.parquet, study.db, Ray experiment)",
        "plots": "plots (accuracy, Pareto front, budget plane)",
        "export": "exported student (yaml, safetensors, onnx, report)",
    }
    for key, label in labels.items():
        if key in s.paths:
            files.add_row(label, str(s.paths[key]))
    files.add_row("this summary", str(s.out_dir / "demo.json"))
    console.print(files)
    timing = ", ".join(f"{k} {v:.0f}s" for k, v in s.timings_s.items() if k != "total")
    console.print(f"done in {s.timings_s.get('total', 0):.0f}s ({timing})")
    run = s.paths.get("run")
    if run is not None:
        console.print(f"next: asc-search results {run}\n      asc-search dashboard {run}\n      "
                      f"asc-search predict {s.paths['export']} {s.paths['data'] / 'audio'}", soft_wrap=True)
    return 0
