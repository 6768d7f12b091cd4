"""Hyperparameter importance over the TRAINED trials of a run's study only.

A rejected proposal is an Optuna trial too (COMPLETE, with a placeholder score and a positive constraint: that is
how the samplers learn the budget), and Optuna's importance evaluators read every COMPLETE trial. Over a whole study
they rank what predicts being over budget, not what makes a good student. Here the study's feasible COMPLETE trials
(in a search: the ones trained to the end) are copied into an in-memory study and scored with optuna-dashboard's own
evaluator (PED-ANOVA), so ``asc-search dashboard`` can serve them in place of its importance panel and the study note
can list them.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = ["feasible_complete_trials", "trained_importances"]


def feasible_complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials whose constraints all hold (<= 0): in a search, the trials trained for all their epochs."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if all(v <= 0 for v in t.constraints.values())]


def _distribution_name(name: str, trials: list[FrozenTrial]) -> str:
    return next(type(t.distributions[name]).__name__ for t in trials if name in t.distributions)


def trained_importances(study: optuna.Study) -> list[list[dict[str, Any]]]:
    """Per objective, ``[{name, importance, distribution}, ...]`` (most important first) over
    :func:`feasible_complete_trials`: the shape of optuna-dashboard's ``/api/studies/<id>/param_importances``.

    Fewer than two such trials: an empty list per objective (as the dashboard). When PED-ANOVA finds nothing to
    separate (e.g. every value equal), every parameter gets the same share (as the dashboard)."""
    import optuna

    trials = feasible_complete_trials(study)
    directions = study.directions
    if len(trials) <= 1:
        return [[] for _ in directions]
    copy = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=0))  # in memory
    copy.add_trials(trials)
    names = sorted({n for t in trials for n in t.distributions})
    out = []
    for i, direction in enumerate(directions):
        sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA warns whenever a target is given (we pass one per objective)
            scores = optuna.importance.get_param_importances(
                copy, target=lambda t, i=i, sign=sign: sign * t.values[i],
                evaluator=optuna.importance.PedAnovaImportanceEvaluator())
        if not scores:
            scores = {n: 1.0 / len(names) for n in names}
        out.append([{"name": n, "importance": float(v), "distribution": _distribution_name(n, trials)}
                    for n, v in scores.items()])
    return out
