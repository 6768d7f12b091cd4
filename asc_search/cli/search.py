"""``asc-search search``: the budgeted Ray Tune + Optuna search (Phase II)."""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ._render import output_console

__all__ = ["register", "SearchPrinter"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to ``sub``."""
    p = sub.add_parser(
        "search",
        help="budgeted Ray Tune + Optuna search over distilled students",
        description=(
            "Search student architectures and distillation weights on a feature cache (+ its teacher cache). "
            "Proposals over the search file's budget are rejected before any training. Results go to "
            "RESULTS_DIR/NAME/: trials.parquet, the Optuna study (study.db), search.yaml, run.json and the Ray "
            "experiment. Ctrl-C stops the search; --resume finishes it."
        ),
    )
    p.add_argument("cache_dir", metavar="CACHE_DIR", help="feature cache (from `asc-search features`)")
    p.add_argument("--space", metavar="FILE", help="search file, e.g. search_spaces/quick.yaml (not needed with --resume)")
    p.add_argument(
        "--teacher-cache", metavar="DIR", help="teacher cache (default: CACHE_DIR-teacher beside CACHE_DIR, or CACHE_DIR/teacher of an older cache; from `asc-search teacher embed`)"
    )
    p.add_argument("--name", metavar="NAME", help="run name (default: the search file's name + a timestamp)")
    p.add_argument("--results-dir", metavar="DIR", default="results", help="where runs go (default: ./results)")
    p.add_argument("--num-samples", metavar="N", type=int, help="trained trials (overrides search.num_samples)")
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="join this Ray cluster (e.g. 10.0.0.5:6379 or auto); default: start a local Ray (inside `ray job "
        "submit`, the job's cluster)",
    )
    p.add_argument("--resume", action="store_true", help="finish the interrupted run --name NAME")
    p.add_argument("--subset", metavar="PCT", type=int, help="train on the DCASE 2024 training subset of PCT %% "
                   "(split_setup/splitPCT.csv; 25 = the DCASE 2025 rule); overrides split.subset")
    p.add_argument("--dir-folder", metavar="DIR", help="WAV device impulse responses (any rate) for the train.dir_p "
                   "augmentation (default: the built-in generic bank of microphone-like responses)")
    p.set_defaults(func=_run)


class SearchPrinter:
    """Compact live progress of a search's events: one line per trial start/end, rejections summed up, the best
    score so far, a retried trial, and while trials train a line of their epochs at most every
    :attr:`heartbeat_s` seconds (none when other lines came meanwhile). The ``other=`` handler of a
    :class:`~asc_search.cli._render.Renderer`."""

    heartbeat_s = 15.0

    def __init__(self, console: Console | None = None, clock: Any = time.time) -> None:
        self.console = console or output_console(stderr=True)
        self.clock = clock
        self.t0 = clock()
        self.last_line = self.t0
        self.epochs: dict[int, tuple[int, int | None, float | None]] = {}  # running trial -> (epoch, of, acc)
        self.running: set[int] = set()
        self.done = 0
        self.rejected = 0
        self.rejected_since = 0
        self.best: tuple[float, int] | None = None
        self.num_samples = 0

    def _stamp(self) -> str:
        self.last_line = self.clock()
        s = int(self.last_line - self.t0)
        return f"[dim]{s // 60:02d}:{s % 60:02d}[/dim]"

    def _heartbeat(self) -> None:
        """One line of the running trials' epochs when nothing was printed for :attr:`heartbeat_s`."""
        if self.clock() - self.last_line < self.heartbeat_s or not self.epochs:
            return
        parts = []
        for number in sorted(self.epochs):
            epoch, of, acc = self.epochs[number]
            score = f" acc {acc:.3f}" if acc is not None else ""
            parts.append(f"trial {number} epoch {epoch}{f'/{of}' if of else ''}{score}")
        self.console.print(f"{self._stamp()} [dim]training: {' · '.join(parts)}[/dim]")

    def _state(self) -> str:
        best = f"best {self.best[0]:.3f} (trial {self.best[1]})" if self.best else "best -"
        return f"[dim]· {len(self.running)} running · {self.done}/{self.num_samples} trained · {self.rejected} rejected · {best}[/dim]"

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        c = self.console
        if event == "setup":
            counts = info.get("counts", {})
            references = list(info.get("references") or [])
            self.num_samples = int(info.get("num_samples", 0)) + len(references)
            self.done = int(counts.get("trained", 0))
            self.rejected = int(counts.get("rejected_budget", 0))
            self.running = set(int(n) for n in info.get("running", []))
            best = info.get("best")
            if best:
                self.best = (float(best["val_macro_accuracy"]), int(best["trial_id"]))
            verb = "resuming" if info.get("resume") else "searching"
            c.print(
                f"{self._stamp()} {verb} [bold]{info['name']}[/bold] -> {info['run_dir']} "
                f"({self.num_samples} trained trials, {info.get('max_concurrent')} at a time"
                + (f", of which {len(references)} reference arms: {', '.join(references)})" if references else ")")
            )
        elif event == "rejected":
            self.rejected += 1
            if info.get("reference"):
                c.print(f"{self._stamp()} trial {info['trial_id']:>4} reference {info['reference']}: over budget, "
                        "not trained")
            else:
                self.rejected_since += 1
        elif event == "started":
            self.running.add(int(info["trial_id"]))
            skipped = f" (+{self.rejected_since} rejected)" if self.rejected_since else ""
            self.rejected_since = 0
            what = "re-issued" if info.get("reissued") else "started"
            cost = f"{info['params']:,} params, {info['macs'] / 1e6:.2f} M MACs" if "params" in info else ""
            ref = f" (reference {info['reference']})" if info.get("reference") else ""
            c.print(f"{self._stamp()} trial {info['trial_id']:>4} {what}{ref}: {cost}{skipped}  {self._state()}")
        elif event == "result":
            if info.get("epoch") is not None and int(info["trial_id"]) in self.running:
                self.epochs[int(info["trial_id"])] = (int(info["epoch"]), info.get("epochs_planned"),
                                                      info.get("val_macro_accuracy"))
            self._heartbeat()
        elif event == "retried":
            since = f" from its epoch-{info['epoch']} checkpoint" if info.get("epoch") else ""
            why = f": {info['error']}" if info.get("error") else ""
            c.print(f"{self._stamp()} trial {info.get('trial_id')} [yellow]lost its worker[/yellow] (a node lost, a "
                    f"process killed?){why}; retry {info.get('attempt')} of {info.get('max_failures')}{since}")
        elif event in ("completed", "early_stopped", "failed"):
            number = int(info["trial_id"])
            self.running.discard(number)
            self.epochs.pop(number, None)
            self.done += 1
            acc, deployed = info.get("val_macro_accuracy"), info.get("val_macro_accuracy_deployed")
            ranked = deployed if deployed is not None else acc  # score_precision: deployed ranks by the graph
            if event == "completed" and ranked is not None and (self.best is None or ranked > self.best[0]):
                self.best = (ranked, number)
            style = {"completed": "green", "early_stopped": "yellow", "failed": "red"}[event]
            score = f"acc {acc:.3f}" if acc is not None else "no score"
            score += f", deployed {deployed:.3f}" if deployed is not None else ""
            extra = f" ({str(info['error'])[:80]})" if info.get("error") else ""
            c.print(
                f"{self._stamp()} trial {number:>4} [{style}]{event.replace('_', '-')}[/{style}] "
                f"@{info.get('epochs', 0)} ep: {score}{extra} {self._state()}"
            )
        elif event in ("exhausted", "error"):
            c.print(f"{self._stamp()} [red]stopped proposing:[/red] {info.get('message')}")


def _sigterm_as_ctrl_c() -> None:
    """SIGTERM (``kill PID``, a job scheduler stopping the command) raises SIGINT, so that the search stops as on
    Ctrl-C: running trials checkpointed, run.json ``interrupted``, exit 130 with the resume command. Without this,
    once Ray is connected its signal handler aborts the process with a C++ stack dump (``logging.cc``)."""
    import os
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))


@contextlib.contextmanager
def _restore_sigterm() -> Any:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _run(args: argparse.Namespace) -> int:
    import logging

    from ..results.views import ViewsPublisher
    from ..search.driver import run_search
    from ..search.runfolder import TRIALS_FILE
    from ._render import Renderer

    # Tune logs each trial failure with a traceback; the search records it (trials.parquet `error`, the Ray trial's
    # error.txt) and prints one line per failed trial instead.
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    printer = SearchPrinter()

    def other(event: str, info: dict[str, Any]) -> None:
        if event == "setup":  # Ray is connected: from now on SIGTERM stops the search as Ctrl-C does
            _sigterm_as_ctrl_c()
        printer(event, info)

    with Renderer(console=printer.console, other=other) as render, _restore_sigterm():
        result = run_search(
            args.cache_dir,
            args.space,
            teacher_cache=args.teacher_cache,
            name=args.name,
            results_dir=args.results_dir,
            num_samples=args.num_samples,
            address=args.address,
            resume=args.resume,
            dir_folder=args.dir_folder,
            subset=args.subset,
            on_event=render,
            views=ViewsPublisher,
        )
    out = output_console()
    counts = result.counts
    table = Table(title=f"search {result.name}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row(
        "proposals",
        f"{counts['total']}: {counts['completed']} completed, {counts['early_stopped']} early-stopped, "
        f"{counts['failed']} failed, {counts['rejected_budget']} rejected (over budget)",
    )
    if result.best:
        b = result.best
        deployed = b.get("val_macro_accuracy_deployed")
        ref = f" (reference {b['reference']})" if b.get("kind") == "reference" else ""
        table.add_row(
            "best trial",
            f"{b['trial_id']}{ref}: val macro accuracy {b['val_macro_accuracy']:.4f}"
            + (f" (deployed {deployed:.4f})" if deployed is not None else "") + f", log loss {b['val_log_loss']:.3f}, "
            f"{int(b['params']):,} params, {int(b['param_bytes']):,} bytes, {int(b['macs']):,} MACs",
        )
    if result.margin:
        table.add_row("against the references", result.margin["text"])
    table.add_row("run folder", str(result.run_dir))
    table.add_row("trials", str(Path(result.run_dir) / TRIALS_FILE))
    table.add_row("time", f"{result.duration_s:.0f} s")
    out.print(table)
    if result.interrupted:
        out.print(
            f"[yellow]interrupted[/yellow]: finish it with `asc-search search {args.cache_dir} --name {result.name} "
            f"--results-dir {args.results_dir} --resume`"
        )
        return 130
    out.print(f"next: `asc-search results {result.run_dir}` and `asc-search export {result.run_dir} --out DIR`")
    return 0
