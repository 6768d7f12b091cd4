"""How library code reports what it is doing: ONE callback type, ``OnEvent = Callable[[str, dict], None]``.

Library code never prints and never draws: a long job takes ``on_event`` and calls it with an event name and a dict
of plain values. The CLI renders them (:mod:`asc_search.cli._render`: rich progress bars on a terminal, lines in a
log); tests and scripts may collect them or pass nothing. Events every phase may send:

* ``"progress"`` ``{"task": str, "done": int, "total": int | None}``: ``done`` of ``total`` units of ``task`` are
  finished (sent once at 0 when the task starts, then as work finishes);
* ``"log"`` ``{"message": str}``: one line worth showing a person;
* ``"epoch"`` ``{"task": str, "epoch": int, "epochs": int, ...metrics}``: a training epoch ended;
* ``"warning"`` ``{"message": str}``: something a user should know that is not an error.

Phases add their own (the search: ``setup``, ``started``, ``rejected``, ``completed``, ...; documented where they are
sent). A renderer that raises never stops the work: :func:`emit` swallows display errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["OnEvent", "emit", "log", "warn", "progress"]

T = TypeVar("T")

#: The one progress callback type: ``on_event(event_name, info)``.
OnEvent = Callable[[str, dict[str, Any]], None]


def emit(on_event: OnEvent | None, event: str, **info: Any) -> None:
    """Send ``event`` with ``info`` to ``on_event`` (if any); a display problem never stops the work."""
    if on_event is None:
        return
    try:
        on_event(event, info)
    except Exception:  # noqa: BLE001 - rendering must never break a search, a cache build or an export
        pass


def log(on_event: OnEvent | None, message: str) -> None:
    """One line for a person (``"log"`` event)."""
    emit(on_event, "log", message=message)


def warn(on_event: OnEvent | None, message: str) -> None:
    """A warning for a person (``"warning"`` event): worth knowing, not an error."""
    emit(on_event, "warning", message=message)


def progress(items: Iterable[T], task: str, on_event: OnEvent | None, total: int | None = None,
             weight: Callable[[T], int] | None = None) -> Iterator[T]:
    """Yield ``items`` while sending ``"progress"`` events for ``task`` (after each item; ``weight(item)`` units
    each, default 1)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    done = 0
    emit(on_event, "progress", task=task, done=0, total=total)
    for item in items:
        yield item
        done += weight(item) if weight is not None else 1
        emit(on_event, "progress", task=task, done=done, total=total)
