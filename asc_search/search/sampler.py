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

Two things TPE recomputes are computed once instead (same results, same random draws): the split of the view into
good and bad trials, which Optuna redoes for every parameter group of a proposal although it depends only on the
trials (reading each trial's constraints from its system attributes each time: a third of an ask), and a finished
trial's parameters in TPE's internal representation, which never change.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers._tpe import sampler as _tpe
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
        self._seen_from = self._fed_from = 0  # watermarks of the two (see _unseen)
        self._n_finished = 0
        self._good: list[tuple[float, int, FrozenTrial]] = []  # best feasible complete first (single objective)
        self._recent: deque[FrozenTrial] = deque(maxlen=keep_recent)
        self._view_key: tuple[int, int] | None = None
        self._view_trials: list[FrozenTrial] = []
        self._split_key: tuple[int, int, int] | None = None
        self._split: tuple[list[FrozenTrial], list[FrozenTrial]] = ([], [])
        # finished trial's parameters in TPE's internal representation, per parameter group: {group: {number: row}}
        self._reprs: dict[tuple[tuple[str, BaseDistribution], ...], dict[int, tuple[float, ...] | None]] = {}

    def _unseen(self, trials: list[FrozenTrial], mark: str, seen: set[int]) -> list[FrozenTrial]:
        """The COMPLETE / PRUNED trials of ``trials`` (the whole study, in trial order) not in ``seen``, read from the
        watermark ``mark``: every trial below it is finished and was read before, so that an ask does not read the
        whole study again. Moves the watermark past the finished trials that follow it."""
        start = getattr(self, mark)
        if start > len(trials) or (start and trials[start - 1].number != start - 1):
            start = 0  # not numbered by position in the study (Optuna's storages always are): read it all
        new, prefix = [], True
        for t in trials[start:]:
            finished = t.state.is_finished()
            if finished and t.state in _FINISHED and t.number not in seen:
                new.append(t)
            if prefix and finished:
                start = t.number + 1
            else:
                prefix = False
        setattr(self, mark, start)
        seen.update(t.number for t in new)
        return new

    def _take(self, study: Study, new: list[FrozenTrial]) -> None:
        """Sort finished trials seen for the first time into the good and the recent ones."""
        if not new:
            return
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

    def bounded_trials(self, study: Study, trial: FrozenTrial) -> list[FrozenTrial]:
        """The trials TPE sees while it samples ``trial`` (cached for that trial's proposal)."""
        trials = study._get_trials(deepcopy=False, use_cache=False)
        key = (trial.number, len(trials))
        if key == self._view_key:
            return self._view_trials
        self._take(study, self._unseen(trials, "_seen_from", self._seen))
        if self._n_finished <= self.keep_best + self.keep_recent:
            view = [t for t in trials if t.state in _FINISHED or t.state == TrialState.RUNNING]
        else:  # every RUNNING trial is at or after the watermark
            running = [t for t in trials[self._seen_from:] if t.state == TrialState.RUNNING]
            view = sorted([*(g[2] for g in self._good), *self._recent, *running], key=lambda t: t.number)
        self._view_key, self._view_trials = key, view
        return view

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        # the decomposition accumulates: feeding each finished trial once is the same as feeding all on every ask
        new = self._unseen(study._get_trials(deepcopy=False, use_cache=False), "_fed_from", self._fed)
        return super().infer_relative_search_space(_View(study, new), trial)  # type: ignore[arg-type]

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
                        ) -> dict[str, Any]:
        return super().sample_relative(_View(study, self.bounded_trials(study, trial)), trial,  # type: ignore[arg-type]
                                       search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return super().sample_independent(_View(study, self.bounded_trials(study, trial)),  # type: ignore[arg-type]
                                          trial, param_name, param_distribution)

    # ------------------------------------------------------------------ TPE's own steps, computed once
    def _sample(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """Optuna 5's ``TPESampler._sample`` step for step, with the good / bad split made once per proposal."""
        below_trials, above_trials = self._split_once(study, trial)
        mpe_below = self._build_parzen_estimator(study, search_space, below_trials, handle_below=True)
        mpe_above = self._build_parzen_estimator(study, search_space, above_trials, handle_below=False)
        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        ret = optuna.samplers.TPESampler._compare(samples_below, acq_func_vals)
        for param_name, dist in search_space.items():
            ret[param_name] = dist.to_external_repr(ret[param_name])
        return ret

    def _split_once(self, study: Study, trial: FrozenTrial) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
        """TPE's good and bad trials for ``trial``'s proposal: Optuna's split of the view, once per proposal (every
        parameter group of one proposal sees the same trials)."""
        states = [TrialState.COMPLETE, TrialState.PRUNED] + ([TrialState.RUNNING] if self._constant_liar else [])
        trials = study._get_trials(deepcopy=False, states=states, use_cache=not self._constant_liar)
        if self._constant_liar:
            trials = [t for t in trials if t.number != trial.number]
        key = (trial.number, len(trials), trials[-1].number if trials else -1)
        if key != self._split_key:
            if self._gamma is None:
                self._gamma = _tpe.default_gamma if len(study.directions) <= 1 else _tpe.default_gamma_multiobjective
            n = sum(t.state != TrialState.RUNNING for t in trials)
            self._split_key, self._split = key, _tpe._split_trials(study, trials, self._gamma(n))
        return self._split

    def _get_internal_repr(self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution],
                           study: Study) -> dict[str, np.ndarray]:
        """Optuna's observations of ``search_space`` in ``trials``, finished trials' rows converted once."""
        cache = self._reprs.setdefault(tuple(search_space.items()), {})
        if len(cache) > 4 * (self.keep_best + self.keep_recent) + 64:
            cache.clear()  # rows of trials that left the view: made again if one comes back
        rows = []
        for t in trials:
            finished = t.state.is_finished()
            if finished and t.number in cache:
                row = cache[t.number]  # None: the trial lacks a parameter of this group
            else:
                params = self._get_params(t, study)
                row = (tuple(d.to_internal_repr(params[name]) for name, d in search_space.items())
                       if search_space.keys() <= params.keys() else None)
                if finished:
                    cache[t.number] = row
            if row is not None:
                rows.append(row)
        columns = list(zip(*rows)) if rows else [() for _ in search_space]
        return {name: np.asarray(col) for name, col in zip(search_space, columns)}
