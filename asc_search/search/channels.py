"""How Tune-side objects reach the driver's ``on_event``: a registry of event sinks by channel name (the run folder).

The searcher and the callbacks hold a channel name, not the sink, so that they stay picklable and a restored searcher
reports to whatever sink the resuming process registered. :class:`RetryReporter` is the Tune callback that reports
retried trials there.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from .._progress import OnEvent, emit

__all__ = ["register_sink", "unregister_sink", "sink_for", "RetryReporter"]

#: Event sinks by channel name (driver-side only).
_SINKS: dict[str, OnEvent] = {}


def register_sink(channel: str, sink: OnEvent) -> None:
    """Route the events of searchers and callbacks on ``channel`` to ``sink(event, info)``."""
    _SINKS[channel] = sink


def unregister_sink(channel: str) -> None:
    _SINKS.pop(channel, None)


def sink_for(channel: str | None) -> OnEvent | None:
    """The sink registered for ``channel`` (None: nobody listens)."""
    return _SINKS.get(channel) if channel else None


class RetryReporter(Callback):
    """A Tune callback that reports a trial Tune retries (its worker died: a lost node, a killed process) as a
    ``retried`` event on ``channel``: ``trial_id``, ``attempt`` (1 = the first retry), ``max_failures``, ``epoch``
    (the last reported; the retry continues from that epoch's checkpoint) and ``error`` (the last line of the
    failure, at most 200 characters)."""

    def __init__(self, channel: str, max_failures: int) -> None:
        self.channel = channel
        self.max_failures = max_failures

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = ""
        try:
            path = getattr(trial, "error_file", None)
            if path:
                lines = [line.strip() for line in open(path, encoding="utf-8", errors="replace") if line.strip()]
                error = lines[-1][:200] if lines else ""
        except OSError:
            pass
        last = getattr(trial, "last_result", None) or {}
        emit(sink_for(self.channel), "retried", trial_id=(trial.config or {}).get("trial_id"),
             attempt=int(getattr(trial, "num_failures", 0) or 0), max_failures=self.max_failures,
             epoch=last.get("epoch"), error=error)
