"""TPE whose cost per proposal stays bounded in a long search: :class:`BoundedTPESampler`.

Optuna's TPE reads every trial of the study on each ask (the Parzen estimators of the good and the bad trials, and
the group decomposition of the search space), so a proposal's cost grows linearly with the study: ~200 ms at 1,300
trials on this machine, which would dominate a search of 10,000 mostly rejected proposals. This sampler hands TPE a
bounded, still correct view of the study:

* every RUNNING trial (``constant_liar``: at most ``max_concurrent`` of them);
* the ``keep_best`` best feasible COMPLETE trials (single objective; with several objectives every feasible complete
  trial, whose number the budget of trained trials bounds). TPE's "good" set is the best
  ``gamma(n) = min(ceil(0.1 n), 25)`` of them, so with ``keep_best >= 25`` TPE's good trials are exactly those of
  the full study once 25 feasible trials have completed;
* the ``keep_recent`` most recent of the other finished trials (rejected over-budget proposals, pruned trials, the
  worse feasible ones): the "bad" density is estimated from a recent window instead of the whole history.

The search space's group decomposition is fed each finished trial once (it only accumulates), not the whole study
on every ask. Below ``keep_best + keep_recent`` finished trials the view is the whole study: the proposals are those
of Optuna's TPE with the same seed.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BoundedTPESampler", "KEEP_BEST", "KEEP_RECENT"]

#: Defaults: the best feasible complete trials and the most recent others TPE sees (see the module docstring).
KEEP_BEST = 30
KEEP_RECENT = 150

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class _View:
    """A study as TPE reads it: its own trials replaced by ``trials``; everything else is the study's."""

    def __init__(self, study: Study, trials: list[FrozenTrial]) -> None:
        self._study = study
        self._trials = trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[FrozenTrial]:
        return [t for t in self._trials if states is None or t.state in states]

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)


def _feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


class BoundedTPESampler(optuna.samplers.TPESampler):
    """:class:`optuna.samplers.TPESampler` reading a bounded view of the study (see the module docstring).

    ``keep_best``: best feasible complete trials kept (>= 25 keeps TPE's good set exact); ``keep_recent``: most
    recent other finished trials kept. Other keyword arguments go to ``TPESampler``."""

    def __init__(self, *, keep_best: int = KEEP_BEST, keep_recent: int = KEEP_RECENT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if keep_best < 25 or keep_recent < 1:
            raise ValueError(f"keep_best must be >= 25 and keep_recent >= 1 (got {keep_best}, {keep_recent})")
        self.keep_best = keep_best
        self.keep_recent = keep_recent
        # finished trials never change: each is sorted into good / recent once, when first seen
        self._seen: set[int] = set()
        self._fed: set[int] = set()  # finished trials the search space's group decomposition has been given
        self._n_finished = 0
        self._good: list[tuple[float, int, FrozenTrial]] = []  # best feasible complete first (single objective)
        self._recent: deque[FrozenTrial] = deque(maxlen=keep_recent)
        self._view_key: tuple[int, int] | None = None
        self._view_trials: list[FrozenTrial] = []

    def _take(self, study: Study, finished: list[FrozenTrial]) -> list[FrozenTrial]:
        """Sort the finished trials not seen yet into the good and the recent ones; returns them."""
        new = [t for t in finished if t.number not in self._seen]
        if not new:
            return new
        self._seen.update(t.number for t in new)
        self._n_finished += len(new)
        single = not study._is_multi_objective()
        sign = -1.0 if single and study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        for t in new:
            if t.state == TrialState.COMPLETE and _feasible(t):
                self._good.append((sign * float(t.value) if single else 0.0, t.number, t))
            else:
                self._recent.append(t)
        if single and len(self._good) > self.keep_best:
            self._good.sort(key=lambda g: (g[0], g[1]))
            for _, _, t in self._good[self.keep_best:]:
                self._recent.append(t)  # no longer among the best: one of the others
            del self._good[self.keep_best:]
        return new

    def bounded_trials(self, study: Study, trial: FrozenTrial) -> list[FrozenTrial]:
        """The trials TPE sees while it samples ``trial`` (cached for that trial's proposal)."""
        trials = study._get_trials(deepcopy=False, states=(*_FINISHED, TrialState.RUNNING), use_cache=False)
        key = (trial.number, len(trials))
        if key == self._view_key:
            return self._view_trials
        self._take(study, [t for t in trials if t.state in _FINISHED])
        if self._n_finished <= self.keep_best + self.keep_recent:
            view = trials
        else:
            running = [t for t in trials if t.state == TrialState.RUNNING]
            view = sorted([*(g[2] for g in self._good), *self._recent, *running], key=lambda t: t.number)
        self._view_key, self._view_trials = key, view
        return view

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        # the decomposition accumulates: feeding each finished trial once is the same as feeding all on every ask
        new = [t for t in study._get_trials(deepcopy=False, states=_FINISHED, use_cache=False)
               if t.number not in self._fed]
        self._fed.update(t.number for t in new)
        return super().infer_relative_search_space(_View(study, new), trial)  # type: ignore[arg-type]

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
                        ) -> dict[str, Any]:
        return super().sample_relative(_View(study, self.bounded_trials(study, trial)), trial,  # type: ignore[arg-type]
                                       search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return super().sample_independent(_View(study, self.bounded_trials(study, trial)),  # type: ignore[arg-type]
                                          trial, param_name, param_distribution)
