"""The searcher's working copy of the run's study: sampling reads (and proposals are drawn) in memory; every trial
is written to the run's SQLite study once it is decided, in one transaction where it can.

Why: through Optuna's RDB storage a proposal cost ~130 SQL statements in ~25 commits (one per suggested value and
attribute, plus re-reading the running trials on every ask): ~40 % of a rejected proposal's time. Here the
searcher asks, samples, costs and tells in an in-memory Optuna study (the same sampler, seeded as before, seeing the
same trials), and :meth:`StudyMirror.sync` then writes the trial to SQLite:

* a trial SQLite does not hold yet (every sampled proposal, rejected or handed to Tune) is inserted whole, with its
  parameters, attributes, values and state: ONE transaction of a few multi-row INSERTs;
* a trial SQLite already holds (an enqueued reference arm; a trial handed to Tune, when it ends) is brought up to
  date in one transaction too (its state and times; its values, epochs' scores, parameters and attributes
  rewritten).

What readers rely on is unchanged: optuna-dashboard, the run folder's tables and a resumed search read the SQLite
study, which holds every decided proposal with the same attributes as before; a trial handed to Tune is in SQLite
(RUNNING, with its config) before Tune hears of it, so a resumed search re-issues it. A driver killed between ask
and sync loses only the proposal it was drawing (never handed out, never shown). On open, the memory copy is
loaded from SQLite (the trials of a resumed run, the enqueued references): trial numbers agree in both.
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .spec import SearchSpec
from .study import make_sampler, make_storage, open_study

__all__ = ["StudyMirror"]


class StudyMirror:
    """The run's study in SQLite (:attr:`disk`) and its working copy in memory (:attr:`memory`, with the sampler)."""

    def __init__(self, spec: SearchSpec, storage_url: str, study_name: str) -> None:
        self._rdb = make_storage(storage_url)
        self.disk = open_study(spec, storage_url, study_name, storage=self._rdb)
        self.memory = optuna.create_study(directions=spec.search.directions, sampler=make_sampler(spec))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.memory.set_metric_names(list(spec.search.objectives))
        self._disk_storage = self.disk._storage
        self._disk_study_id = self.disk._study_id
        trials = self.disk.get_trials(deepcopy=False)
        for t in trials:
            self.memory._storage.create_new_trial(self.memory._study_id, template_trial=t)
        self._on_disk = len(trials)  # trials 0 .. _on_disk-1 are in SQLite
        self._disk_ids = {t.number: t._trial_id for t in trials}

    # ------------------------------------------------------------------ ids
    def memory_id(self, number: int) -> int:
        return self.memory._storage.get_trial_id_from_study_id_trial_number(self.memory._study_id, number)

    def disk_id(self, number: int) -> int:
        if number not in self._disk_ids:
            self._disk_ids[number] = self._disk_storage.get_trial_id_from_study_id_trial_number(self._disk_study_id,
                                                                                              number)
        return self._disk_ids[number]

    def trial(self, number: int) -> FrozenTrial:
        """The memory copy of trial ``number`` (what the searcher decided; SQLite follows on :meth:`sync`)."""
        return self.memory._storage.get_trial(self.memory_id(number))

    # ------------------------------------------------------------------ writes
    def set_user_attr(self, number: int, key: str, value: Any) -> None:
        """Set a trial's user attribute in memory (written to SQLite by the next :meth:`sync`)."""
        self.memory._storage.set_trial_user_attr(self.memory_id(number), key, value)

    def set_intermediate_value(self, number: int, step: int, value: float) -> None:
        """An epoch's score: in memory (TPE ranks pruned trials by it) and in SQLite at once (dashboard curves)."""
        self.memory._storage.set_trial_intermediate_value(self.memory_id(number), step, value)
        self._disk_storage.set_trial_intermediate_value(self.disk_id(number), step, value)

    def set_study_user_attr(self, key: str, value: Any) -> None:
        self.memory.set_user_attr(key, value)
        self.disk.set_user_attr(key, value)

    def sync(self, number: int) -> None:
        """Write trial ``number`` as it stands in memory to SQLite (see the module docstring)."""
        t = self.trial(number)
        if number >= self._on_disk:
            if number != self._on_disk:
                raise RuntimeError(f"trial {number} would be written after {self._on_disk - 1}: trials out of order")
            self._insert(t)
            self._on_disk += 1
            return
        self._update(number, t)

    def _insert(self, t: FrozenTrial) -> None:
        """Insert a whole trial in one transaction of a few multi-row INSERTs (Optuna's own
        ``create_new_trial(template_trial=...)`` makes ~80 single-row statements of it, as many as before).

        Through Optuna's ORM models of its schema (``optuna.storages._rdb.models``: not public API, the schema
        itself is versioned by Optuna with alembic; tests/test_mirror.py reads every field back through Optuna)."""
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        trials = models.TrialModel.__table__
        previous = self.disk_id(t.number - 1) if t.number else None
        with self._rdb.engine.begin() as conn:  # one transaction, committed on leaving the block
            tid = conn.execute(sa.insert(trials), {
                "study_id": self._disk_study_id, "number": t.number, "state": t.state.name,
                "datetime_start": _utc(t.datetime_start), "datetime_complete": _utc(t.datetime_complete),
            }).inserted_primary_key[0]
            # the row just before it in the study must be the previous trial's (one index step, not a count)
            before = conn.scalar(sa.select(sa.func.max(trials.c.trial_id)).where(
                trials.c.study_id == self._disk_study_id, trials.c.trial_id < tid))
            if before != previous:  # the run lock keeps a second driver out
                raise RuntimeError(f"trial {t.number} would not be trial {t.number} in {self._rdb.url}: another "
                                   "process added trials to the study")
            for model, rows in self._child_rows(tid, t):
                if rows:
                    conn.execute(sa.insert(model.__table__), rows)
        self._disk_ids[t.number] = tid  # committed

    @staticmethod
    def _child_rows(tid: int, t: FrozenTrial) -> list[tuple[Any, list[dict[str, Any]]]]:
        """A trial's rows in Optuna's tables other than ``trials``, as column dicts, per model."""
        from optuna.distributions import distribution_to_json
        from optuna.storages._rdb import models

        values, intermediate = [], []
        for objective, value in enumerate(t.values or []):
            stored, kind = models.TrialValueModel.value_to_stored_repr(value)
            values.append({"trial_id": tid, "objective": objective, "value": stored, "value_type": kind.name})
        for step, value in t.intermediate_values.items():
            stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(value)
            intermediate.append({"trial_id": tid, "step": step, "intermediate_value": stored,
                                 "intermediate_value_type": kind.name})
        params = [{"trial_id": tid, "param_name": name, "param_value": t.distributions[name].to_internal_repr(value),
                   "distribution_json": distribution_to_json(t.distributions[name])}
                  for name, value in t.params.items()]
        return [(models.TrialValueModel, values), (models.TrialIntermediateValueModel, intermediate),
                (models.TrialParamModel, params),
                (models.TrialUserAttributeModel, [{"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                                                  for k, v in t.user_attrs.items()]),
                (models.TrialSystemAttributeModel, [{"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                                                    for k, v in t.system_attrs.items()])]

    def _update(self, number: int, t: FrozenTrial) -> None:
        """Bring a trial SQLite already holds up to its memory copy (the truth) in one transaction: its state, start
        and end, and its other rows (values, epochs' scores, parameters, attributes) rewritten."""
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        tid = self.disk_id(number)
        trials = models.TrialModel.__table__
        with self._rdb.engine.begin() as conn:
            state = conn.scalar(sa.select(trials.c.state).where(trials.c.trial_id == tid))
            if state is None or TrialState[str(getattr(state, "name", state))].is_finished():
                return
            conn.execute(sa.update(trials).where(trials.c.trial_id == tid).values(
                state=t.state.name, datetime_start=_utc(t.datetime_start),
                datetime_complete=_utc(t.datetime_complete)))
            for model, rows in self._child_rows(tid, t):
                table = model.__table__
                conn.execute(sa.delete(table).where(table.c.trial_id == tid))
                if rows:
                    conn.execute(sa.insert(table), rows)


def _utc(moment: Any) -> Any:
    """A local naive datetime as the naive UTC Optuna's RDB schema stores (its TrialModel setters do the same)."""
    return None if moment is None else moment.astimezone(_dt.timezone.utc).replace(tzinfo=None)
