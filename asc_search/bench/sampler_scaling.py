"""What one TPE proposal costs as the study grows: Optuna's ``TPESampler`` against the search's
:class:`~asc_search.search.sampler.BoundedTPESampler`, on studies of 1,000 / 5,000 / 10,000 trials.

``run()`` returns a dict (no printing); the driver benchmark (:mod:`asc_search.bench.driver`) reports it as
``sampler_scaling``. The studies hold synthetic proposals of the driver benchmark's space (drawn at random, costed
as the searcher costs them, told as it tells them: rejected ones with their constraints and a placeholder score,
feasible ones with the instant trials' score); both samplers (same settings: multivariate, group,
constant_liar, ``n_startup_trials``, seed) then make ``asks`` proposals on a copy of each study, timed from ask to
the last suggested value. In memory: no storage cost, only the sampler's.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

__all__ = ["run", "told_value"]


def told_value(spec: Any, trial: Any) -> float:
    """Sample ``trial`` from ``spec``, cost the proposal and set its constraints as the searcher does
    (:meth:`~asc_search.search.spec.SearchSpec.cost`); the value to tell: the instant trials' score when it fits the
    budget, the searcher's placeholder 0.0 when it does not."""
    from ..search.study import set_constraints
    from .driver import instant_score

    proposal = spec.sample(trial, n_classes=10, trial_seed=trial.number)
    cost = spec.cost(proposal.student)
    set_constraints(trial, cost.constraints)
    if not cost.passed:
        return 0.0
    return instant_score({"proposal": proposal.to_dict(), "cost": {"param_bytes": cost.param_bytes, "macs": cost.macs}})


def _synthetic_trials(spec: Any, n: int, seed: int = 0) -> list[Any]:
    """``n`` finished trials of random proposals of ``spec``, told as the searcher tells them."""
    import optuna

    study = optuna.create_study(directions=spec.search.directions, sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        study.tell(trial, values=[told_value(spec, trial)])
    return study.get_trials(deepcopy=False)


def _ask_ms(spec: Any, sampler: Any, trials: list[Any], asks: int) -> list[float]:
    import optuna

    study = optuna.create_study(directions=spec.search.directions, sampler=sampler)
    study.add_trials(trials)
    out = []
    for _ in range(asks):
        t0 = time.perf_counter()
        trial = study.ask()
        spec.sample(trial, n_classes=10, trial_seed=trial.number)
        out.append(1000 * (time.perf_counter() - t0))
        study.tell(trial, values=[0.0])
    return out


def run(sizes: tuple[int, ...] = (1000, 5000, 10000), asks: int = 10) -> dict[str, Any]:
    """ms per TPE proposal at each study size, for ``optuna_tpe`` and ``bounded_tpe`` (median and max of ``asks``)."""
    import warnings

    import optuna

    from ..search.sampler import BoundedTPESampler
    from ..search.space import parse_space
    from .driver import SPACE

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = parse_space(SPACE, source="driver-bench.yaml")
    s = spec.search
    t0 = time.perf_counter()
    trials = _synthetic_trials(spec, max(sizes))
    made_s = time.perf_counter() - t0
    kwargs = dict(seed=s.seed, n_startup_trials=s.n_startup_trials, multivariate=True, group=True, constant_liar=True)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for n in sizes:
            row: dict[str, Any] = {"trials": n, "feasible": sum(t.value > 0 for t in trials[:n])}
            for name, make in (("optuna_tpe", lambda: optuna.samplers.TPESampler(**kwargs)),
                               ("bounded_tpe", lambda: BoundedTPESampler(**kwargs))):
                ms = _ask_ms(spec, make(), trials[:n], asks)
                row[f"{name}_ms_median"] = statistics.median(ms)
                row[f"{name}_ms_max"] = max(ms)
            rows.append(row)
    return {"asks": asks, "synthetic_study_s": made_s, "sizes": rows}
