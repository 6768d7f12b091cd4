"""Phase II: the budgeted Ray Tune + Optuna search, one idea per module:

* :mod:`.spec`: what a search file is (SearchSpec, ParamSpec, SearchSettings); :mod:`.proposal`: a proposal and
  its cost;
* :mod:`.space`: reading and validating search files (:mod:`.rules`: what each key accepts);
* :mod:`.study`: the Optuna study (storage, sampler);
* :mod:`.searcher`: the Tune searcher that rejects over-budget proposals before training (:mod:`.channels`: how
  it and the Tune callbacks reach the driver's ``on_event``);
* :mod:`.references`: the reference arms every search trains (schema, defaults, their proposals);
* :mod:`.scheduler`: ASHA that never stops a reference (over epochs or optimiser steps);
* :mod:`.caveats`: the warnings a user needs before trusting a winner;
* :mod:`.trainable`: one trial (its data, training a proposal, the Tune trainable);
* :mod:`.driver`: ``run_search``;
* :mod:`.runfolder`: the run folder (file names, statuses, run.json, checkpoints, the trials table, the best trial).

Public names are imported on first use (the searcher pulls in Ray), so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module of this package that defines it
_EXPORTS: dict[str, str] = {
    "ParamSpec": "spec",
    "SearchSettings": "spec",
    "SearchSpec": "spec",
    "Proposal": "proposal",
    "Cost": "proposal",
    "OBJECTIVES": "spec",
    "SAMPLERS": "spec",
    "EMBED_BLOCK_CHOICES": "spec",
    "resolve_embed_block": "spec",
    "load_space": "space",
    "resolve_space": "space",
    "builtin_spaces": "space",
    "builtin_spaces_dir": "space",
    "parse_space": "space",
    "Reference": "references",
    "DEFAULT_REFERENCES": "references",
    "reference_proposal": "references",
    "plan_references": "references",
    "ReferenceAwareASHA": "scheduler",
    "make_scheduler": "scheduler",
    "make_sampler": "study",
    "make_storage": "study",
    "open_study": "study",
    "BudgetedSearcher": "searcher",
    "register_sink": "channels",
    "unregister_sink": "channels",
    "RetryReporter": "channels",
    "prepare_trial_data": "trainable",
    "fit_proposal": "trainable",
    "train_trial": "trainable",
    "DEFAULT_RESULTS_DIR": "runfolder",
    "SearchResult": "driver",
    "run_search": "driver",
    "Status": "runfolder",
    "RunRecord": "runfolder",
    "build_trials_table": "runfolder",
    "write_trials_table": "runfolder",
    "load_trials": "runfolder",
    "best_trial": "runfolder",
    "status_counts": "runfolder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
