"""What `asc-search search` prints while it runs (cli.search.SearchPrinter), driven by events and a fake clock: the
best so far of a resumed run, a line per retried trial, and the running trials' epochs when nothing else was said."""

from __future__ import annotations

import io

from rich.console import Console

from asc_search.cli.search import SearchPrinter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _printer():
    out = io.StringIO()
    clock = Clock()
    return SearchPrinter(Console(file=out, width=200, highlight=False, color_system=None), clock=clock), out, clock


def test_a_resumed_run_shows_its_best_so_far():
    printer, out, _ = _printer()
    printer("setup", {"name": "r", "run_dir": "/x/r", "resume": True, "num_samples": 4, "max_concurrent": 2,
                      "counts": {"trained": 1, "rejected_budget": 3}, "running": [],
                      "best": {"trial_id": 3, "val_macro_accuracy": 0.5}})
    printer("started", {"trial_id": 5, "params": 1000, "macs": 2e6})
    text = out.getvalue()
    assert "resuming r" in text and "best 0.500 (trial 3)" in text and "best -" not in text


def test_epochs_are_shown_when_nothing_else_was_said():
    printer, out, clock = _printer()
    printer("started", {"trial_id": 4, "params": 1000, "macs": 2e6})
    printer("result", {"trial_id": 4, "epoch": 1, "epochs_planned": 10, "val_macro_accuracy": 0.2})
    assert "training:" not in out.getvalue()  # a line was printed just now
    clock.t += 16
    printer("result", {"trial_id": 4, "epoch": 2, "epochs_planned": 10, "val_macro_accuracy": 0.41})
    lines = out.getvalue().splitlines()
    assert lines[-1].endswith("training: trial 4 epoch 2/10 acc 0.410") and lines[-1].startswith("00:16")
    printer("result", {"trial_id": 4, "epoch": 3, "epochs_planned": 10, "val_macro_accuracy": 0.45})
    assert len(out.getvalue().splitlines()) == len(lines)  # at most one such line per heartbeat
    printer("completed", {"trial_id": 4, "val_macro_accuracy": 0.5, "epochs": 10})
    clock.t += 60
    printer("result", {"trial_id": 4, "epoch": 10, "epochs_planned": 10, "val_macro_accuracy": 0.5})  # a late one
    assert "training: trial 4 epoch 10" not in out.getvalue()  # finished trials are not listed


def test_a_retried_trial_gets_a_line():
    printer, out, clock = _printer()
    clock.t += 75
    printer("retried", {"trial_id": 7, "attempt": 1, "max_failures": 2, "epoch": 3,
                        "error": "ray.exceptions.NodeDiedError: the node died"})
    line = out.getvalue().strip()
    assert line.startswith("01:15 trial 7 lost its worker") and "NodeDiedError" in line
    assert line.endswith("retry 1 of 2 from its epoch-3 checkpoint")
