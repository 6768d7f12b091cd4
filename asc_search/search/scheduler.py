"""How the search's trials are scheduled: ASHA on validation macro accuracy that never stops a reference arm, and
the check that the cluster can give each trial what it asks for.

``search.asha.unit`` says what the grace period and the rungs count: ``epochs`` (the default) or ``steps``
(optimiser steps; the trainable reports the cumulative ``steps`` with every epoch), so that one search file behaves
alike on 255 clips (4 steps an epoch) and on 3,000 (50 steps an epoch). Reference trials (trial config
``kind: reference``) are never stopped: their results still set the rungs (:meth:`on_trial_result` calls ASHA
first), so the sampled trials are judged against them.

Both schedulers choose the next trial to start from the run's live trials (:class:`LiveTrialsFIFO`), not from
every trial it ever had: Ray's ``FIFOScheduler.choose_trial_to_run`` scans the whole run, twice, on every step of
Tune's loop, which grew with the run (a 10,000-proposal search hands Tune thousands of trials).
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from ..training.config import TrainConfig, steps_per_epoch
from .references import REFERENCE
from .spec import SearchSpec

__all__ = ["LiveTrialsFIFO", "ReferenceAwareASHA", "make_scheduler", "time_horizon"]


class LiveTrialsFIFO(FIFOScheduler):
    """Ray's FIFO choice, from the live trials only: the PENDING trial added first, else the PAUSED one added first
    (the order of ``on_trial_add``; a trial Tune re-queues after an error is added again, at the end, as Ray's list
    has it). Trials that are not live are TERMINATED, never chosen by Ray's scan either; should a PENDING or
    PAUSED trial not have been seen added, Ray's own scan decides."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._added: dict[str, int] = {}  # trial id -> its place in the order trials were (last) added
        self._n_added = 0

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        self._added[trial.trial_id] = self._n_added
        self._n_added += 1

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        live = tune_controller.get_live_trials()
        for status in (Trial.PENDING, Trial.PAUSED):
            waiting = [t for t in live if t.status == status]
            if waiting:
                if any(t.trial_id not in self._added for t in waiting):
                    return super().choose_trial_to_run(tune_controller)
                return min(waiting, key=lambda t: self._added[t.trial_id])
        return None


class ReferenceAwareASHA(LiveTrialsFIFO, ASHAScheduler):
    """:class:`ray.tune.schedulers.ASHAScheduler` that lets reference trials run to their last epoch."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if (trial.config or {}).get("kind") == REFERENCE:
            if decision == TrialScheduler.STOP:
                self._num_stopped -= 1  # ASHA counted it as stopped; it is not
            return TrialScheduler.CONTINUE
        return decision


def time_horizon(spec: SearchSpec, n_train: int) -> int:
    """The most epochs (``unit: epochs``) or optimiser steps (``unit: steps``) a sampled trial can run on
    ``n_train`` training clips (``epochs`` raised by ``min_steps``; the batch size that makes it longest)."""
    most = 1
    for bs in spec.train_values("batch_size"):
        for min_steps in spec.train_values("min_steps"):
            cfg = TrainConfig(epochs=spec.max_epochs, batch_size=int(bs), min_steps=int(min_steps))
            epochs = cfg.planned_epochs(n_train)
            most = max(most, epochs if spec.search.grace_unit == "epochs" else epochs * steps_per_epoch(n_train, bs))
    return most


def make_scheduler(spec: SearchSpec, n_train: int) -> Any:
    """ASHA as the search file sets it (never stopping references), or FIFO when ``search.asha.enabled`` is false."""
    s = spec.search
    if not s.asha_enabled:
        return LiveTrialsFIFO()
    horizon = time_horizon(spec, n_train)
    # stop_last_trials=False: a trial ends itself after its planned epochs (min_steps may make them more than
    # train.epochs), never because it reached the horizon
    return ReferenceAwareASHA(time_attr="epoch" if s.grace_unit == "epochs" else "steps", metric="val_macro_accuracy",
                              mode="max", max_t=horizon, grace_period=min(s.grace_period, horizon),
                              reduction_factor=s.reduction_factor, stop_last_trials=False)
