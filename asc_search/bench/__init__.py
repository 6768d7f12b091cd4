"""``asc-search bench``: per-area benchmarks (one module each, with ``run() -> dict``) and the accuracy table."""

from .runner import AREAS, QUICK_OVERRIDES, accuracy_table, flatten, run_area, run_bench

__all__ = [
    "AREAS",
    "QUICK_OVERRIDES",
    "run_area",
    "accuracy_table",
    "run_bench",
    "flatten",
]
