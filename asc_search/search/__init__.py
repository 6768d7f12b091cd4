"""Phase II: the budgeted Ray Tune + Optuna search (space files, the searcher, the driver).

Public names are imported on first use (the searcher pulls in Ray and Optuna), so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module of this package that defines it
_EXPORTS: dict[str, str] = {
    "ParamSpec": "space",
    "SearchSettings": "space",
    "SearchSpec": "space",
    "Proposal": "space",
    "Cost": "space",
    "OBJECTIVES": "space",
    "SAMPLERS": "space",
    "EMBED_BLOCK_CHOICES": "space",
    "load_space": "space",
    "resolve_space": "space",
    "builtin_spaces": "space",
    "builtin_spaces_dir": "space",
    "parse_space": "space",
    "resolve_embed_block": "space",
    "BudgetedSearcher": "searcher",
    "make_sampler": "searcher",
    "make_storage": "searcher",
    "open_study": "searcher",
    "register_sink": "searcher",
    "unregister_sink": "searcher",
    "STATUS_COMPLETED": "searcher",
    "STATUS_EARLY_STOPPED": "searcher",
    "STATUS_FAILED": "searcher",
    "STATUS_REJECTED": "searcher",
    "STATUS_RUNNING": "searcher",
    "DEFAULT_RESULTS_DIR": "driver",
    "SearchResult": "driver",
    "prepare_trial_data": "driver",
    "fit_proposal": "driver",
    "train_trial": "driver",
    "run_search": "driver",
    "build_trials_table": "driver",
    "write_trials_table": "driver",
    "connect_ray": "driver",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
