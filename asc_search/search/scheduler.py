"""How the search's trials are scheduled: ASHA on validation macro accuracy that never stops a reference arm, and
the check that the cluster can give each trial what it asks for.

``search.asha.unit`` says what the grace period and the rungs count: ``epochs`` (the default) or ``steps``
(optimiser steps; the trainable reports the cumulative ``steps`` with every epoch), so that one search file behaves
alike on 255 clips (4 steps an epoch) and on 3,000 (50 steps an epoch). Reference trials (trial config
``kind: reference``) are never stopped: their results still set the rungs (:meth:`on_trial_result` calls ASHA
first), so the sampled trials are judged against them.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from ..training.config import TrainConfig, steps_per_epoch
from .references import REFERENCE
from .spec import SearchSpec

__all__ = ["ReferenceAwareASHA", "make_scheduler", "time_horizon"]


class ReferenceAwareASHA(ASHAScheduler):
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
        return FIFOScheduler()
    horizon = time_horizon(spec, n_train)
    # stop_last_trials=False: a trial ends itself after its planned epochs (min_steps may make them more than
    # train.epochs), never because it reached the horizon
    return ReferenceAwareASHA(time_attr="epoch" if s.grace_unit == "epochs" else "steps", metric="val_macro_accuracy",
                              mode="max", max_t=horizon, grace_period=min(s.grace_period, horizon),
                              reduction_factor=s.reduction_factor, stop_last_trials=False)
