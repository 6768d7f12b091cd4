"""A Ray Tune searcher over Optuna's ask/tell that rejects over-budget proposals before they become trials.

Why not ``ray.tune.search.optuna.OptunaSearch``: it cannot reject inside ``suggest`` (every suggestion becomes a Ray
trial), and it tells trials stopped by ASHA to Optuna as COMPLETE with their low-fidelity value. This searcher:

* loops ``study.ask()`` -> :meth:`SearchSpec.sample` -> :meth:`SearchSpec.cost` until a proposal fits the budget;
  every proposal gets constraint values (``param_bytes``, ``macs``: relative excess over the limit, > 0 means over
  budget) via :func:`~asc_search.search.study.set_constraints` (``trial.set_constraint``, plus the list form
  optuna-dashboard reads), so TPE and NSGA-II learn where the feasible region is and the dashboard marks it;
* tells an over-budget proposal at once as COMPLETE with a placeholder objective (accuracy 0; the real MACs and
  bytes) and status ``rejected_budget``. COMPLETE (not PRUNED/FAIL) because NSGA-II only reads COMPLETE trials; the
  positive constraint makes both TPE and NSGA-II (and ``study.best_trial`` / ``best_trials``) treat it as
  infeasible, whatever its placeholder value;
* hands only feasible proposals to Tune; ``num_samples`` therefore counts trained trials;
* recognises an asked trial that the driver enqueued as a reference arm (user attributes ``kind: reference`` and
  ``reference: NAME``) and costs and hands out that reference's own proposal
  (:func:`~asc_search.search.references.reference_proposal`, never ``spec.sample``), recording its values that lie
  in the space as the trial's parameters; an over-budget reference is told as rejected but never counts towards
  ``max_consecutive_rejections``; the trial config says ``kind`` so that ASHA never stops a reference;
* tells a trial that ASHA stopped before its last epoch as PRUNED (status ``early_stopped``), a crashed or diverged
  one as FAIL (``failed``), a finished one as COMPLETE (``completed``);
* saves the Ray-trial -> Optuna-trial mapping with Tune's experiment state; on restore it re-issues feasible
  proposals that Optuna knows but Tune never heard of (asked after Tune's last checkpoint), so that no proposal is
  lost and none trains twice.

Each proposal's figures go into its Optuna trial's user attributes under the trials table's column names
(:mod:`asc_search.search.runfolder.trials`); its full config (JSON) into a system attribute
(:func:`~asc_search.search.study.set_trial_config`), out of optuna-dashboard's trial table. Tune's ``Searcher`` methods name Tune's trial id ``trial_id``; here it
is the ``ray_trial_id``, and ``trial_id`` in events and trial configs is the Optuna trial number.

Library code never prints: events go to an optional sink registered with :func:`register_sink`.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from .._progress import emit
from ..errors import AscSearchError, BudgetError, ConfigError
from .channels import sink_for
from .mirror import StudyMirror
from .references import REFERENCE, SEARCH, reference_proposal
from .runfolder import Status, trial_dirname
from .spec import Cost, Proposal, SearchSpec
from .study import set_constraints, set_trial_config, trial_config

__all__ = ["BudgetedSearcher"]

def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class BudgetedSearcher(Searcher):
    """Ray Tune ``Searcher`` over Optuna ask/tell with budget rejection before training.

    Args:
        spec: the validated search file.
        storage_url: SQLAlchemy URL of the Optuna storage (``sqlite:////abs/path/study.db``).
        study_name: name of the study in that storage.
        n_classes: classes of the student's head (from the feature cache's labels).
        channel: event channel (see :func:`register_sink`); None = no events.
    """

    METRIC = "val_macro_accuracy"

    def __init__(self, spec: SearchSpec, storage_url: str, study_name: str, n_classes: int = 10,
                 channel: str | None = None) -> None:
        super().__init__(metric=self.METRIC, mode="max")
        self.spec = spec
        self.storage_url = storage_url
        self.study_name = study_name
        self.n_classes = n_classes
        self.channel = channel
        self._live: dict[str, int] = {}  # Ray trial id -> trial id, handed to Tune and not yet told
        self._handed: dict[str, int] = {}  # every Ray trial id ever handed out -> trial id
        self._reissue: list[int] = []  # feasible Optuna trials Tune never heard of (found on restore)
        self._consecutive_rejections = 0
        self.exhausted: str | None = None  # why the searcher gave up (too many rejections in a row, broken space)
        self.exhausted_error: type[AscSearchError] = BudgetError
        self._mirror: StudyMirror | None = None

    # ------------------------------------------------------------------ plumbing
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mirror"] = None
        return state

    @property
    def mirror(self) -> StudyMirror:
        """The run's study in SQLite and the in-memory copy the searcher works on (:mod:`.mirror`)."""
        if self._mirror is None:
            self._mirror = StudyMirror(self.spec, self.storage_url, self.study_name)
        return self._mirror

    @property
    def study(self) -> optuna.Study:
        """The in-memory study the searcher asks and tells (every decided trial is also in SQLite)."""
        return self.mirror.memory

    def _emit(self, event: str, **info: Any) -> None:
        emit(sink_for(self.channel), event, **info)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        # The space comes from the search file, not from Tune's param_space; keep our metric and mode.
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return False

    # ------------------------------------------------------------------ proposing
    def suggest(self, trial_id: str) -> dict | None:
        """A feasible proposal for the Ray trial ``trial_id`` (re-issued, or asked until one fits the budget)."""
        if self.exhausted:
            return Searcher.FINISHED
        if self._reissue:
            return self._reissue_one(trial_id)
        while True:
            drawn = self._propose_one()
            if drawn is None:
                return Searcher.FINISHED
            trial, config, cost = drawn
            if cost.passed:
                return self._accept(trial_id, trial, config, cost)
            if self._reject(trial, cost):
                return Searcher.FINISHED

    def _reissue_one(self, ray_trial_id: str) -> dict:
        """Hand out again a feasible proposal Tune never heard of (found by :meth:`_reconcile`)."""
        number = self._reissue.pop(0)
        frozen = self.mirror.trial(number)
        self.mirror.set_user_attr(number, "ray_trial_id", ray_trial_id)
        self.mirror.sync(number)
        self._live[ray_trial_id] = self._handed[ray_trial_id] = number
        kind = frozen.user_attrs.get("kind", SEARCH)
        self._emit("started", trial_id=number, ray_trial_id=ray_trial_id, reissued=True, kind=kind,
                   reference=frozen.user_attrs.get("reference"))
        return self._trial_config(number, json.loads(trial_config(frozen)), frozen.user_attrs, kind)

    def _proposal(self, trial: optuna.Trial) -> Proposal:
        """The asked trial's proposal: a reference's own (enqueued by the driver), or drawn from the space."""
        seed = self.spec.search.seed + trial.number
        name = trial.user_attrs.get("reference")
        if trial.user_attrs.get("kind") != REFERENCE or name is None:
            trial.set_user_attr("kind", SEARCH)
            return self.spec.sample(trial, n_classes=self.n_classes, trial_seed=seed)
        ref = next((r for r in self.spec.references if r.name == name), None)
        if ref is None:
            raise ConfigError(f"reference {name!r} is not in the search file")
        proposal = reference_proposal(self.spec, ref, self.n_classes, trial_seed=seed)
        by_name = {p.name: p for p in self.spec.params}
        for pname in proposal.params:  # the enqueued values: recorded with their distributions for the sampler
            by_name["blocks_per_stage" if pname.startswith("blocks_s") else pname].suggest(trial, pname)
        return proposal

    def _propose_one(self) -> tuple[optuna.Trial, dict, Cost] | None:
        """Ask, sample and cost one proposal and record it on its Optuna trial; None when the space is broken."""
        t0 = time.perf_counter()
        trial = self.study.ask()
        try:
            proposal = self._proposal(trial)
            cost = self.spec.cost(proposal.student)
        except Exception as exc:
            # A proposal the configs refuse (e.g. an architecture the student factory cannot build) is a bug in the
            # space, not an infeasible point: record it and stop asking.
            trial.set_user_attr("status", Status.FAILED.value)
            trial.set_user_attr("error", f"proposal could not be built: {exc}"[:500])
            self.study.tell(trial, state=TrialState.FAIL)
            self.mirror.sync(trial.number)
            self._stop(f"{self.spec.source}: proposal {trial.number} could not be built: {exc}", ConfigError)
            self._emit("error", trial_id=trial.number, message=self.exhausted)
            return None
        config = proposal.to_dict()
        set_constraints(trial, cost.constraints)
        set_trial_config(trial, json.dumps(config))
        for key, value in (("params", cost.params), ("param_bytes", cost.param_bytes),
                           ("deployed_param_bytes", cost.deployed_param_bytes), ("macs", cost.macs),
                           ("cost_s", round(time.perf_counter() - t0, 4)), ("counter", cost.counter)):
            trial.set_user_attr(key, value)
        return trial, config, cost

    def _reject(self, trial: optuna.Trial, cost: Cost) -> bool:
        """Tell an over-budget proposal (infeasible); True when the consecutive-rejection cap is reached."""
        trial.set_user_attr("status", Status.REJECTED.value)
        self.study.tell(trial, values=self._placeholder_values(cost), state=TrialState.COMPLETE)
        self.mirror.sync(trial.number)  # one SQLite transaction
        reference = trial.user_attrs.get("reference") if trial.user_attrs.get("kind") == REFERENCE else None
        if reference is None:  # a reference over budget is reported by the driver, never counted here
            self._consecutive_rejections += 1
        self._emit("rejected", trial_id=trial.number, params=cost.params, param_bytes=cost.param_bytes, macs=cost.macs,
                   consecutive=self._consecutive_rejections, reference=reference)
        if reference is not None:
            return False
        limit = self.spec.search.max_consecutive_rejections
        if self._consecutive_rejections < limit:
            return False
        b = self.spec.budget
        self._stop(
            f"{limit} proposals in a row were over the budget ({b.max_param_bytes} bytes at {b.param_dtype}, "
            f"{b.max_macs} MACs) in {self.spec.source}, although its smallest student fits: most of the space is over "
            "the budget; narrow the student ranges (base_channels, channels_multiplier, expansion_rate, n_stages, "
            "blocks_per_stage) towards their low ends, or raise search.max_consecutive_rejections",
            BudgetError,
        )
        self._emit("exhausted", message=self.exhausted)
        return True

    def _accept(self, ray_trial_id: str, trial: optuna.Trial, config: dict, cost: Cost) -> dict:
        """Hand a feasible proposal to Tune as the Ray trial ``ray_trial_id``."""
        self._consecutive_rejections = 0
        trial.set_user_attr("status", Status.RUNNING.value)
        trial.set_user_attr("ray_trial_id", ray_trial_id)
        trial.set_user_attr("started_at", time.time())
        self.mirror.sync(trial.number)  # in SQLite (RUNNING, with its config) before Tune hears of it
        self._live[ray_trial_id] = self._handed[ray_trial_id] = trial.number
        kind = trial.user_attrs.get("kind", SEARCH)
        self._emit("started", trial_id=trial.number, ray_trial_id=ray_trial_id, params=cost.params, macs=cost.macs,
                   kind=kind, reference=trial.user_attrs.get("reference"))
        return self._trial_config(trial.number, config, cost.to_dict(), kind)

    @property
    def _deployed(self) -> bool:
        """Whether completed trials are ranked by their deployed graph (``search.score_precision: deployed``)."""
        return self.spec.search.score_precision == "deployed"

    def _stop(self, reason: str, error: type[AscSearchError]) -> None:
        """Stop proposing; keep why in the study itself (the driver reads it after Tune returns)."""
        self.exhausted, self.exhausted_error = reason, error
        self.mirror.set_study_user_attr("stop_reason", reason)
        self.mirror.set_study_user_attr("stop_error", error.__name__)

    def _trial_config(self, number: int, config: dict, figures: dict, kind: str = SEARCH) -> dict:
        """The config Tune carries to the trainable (see :mod:`asc_search.search.trainable`)."""
        cost = {k: int(figures[k]) for k in ("params", "param_bytes", "deployed_param_bytes", "macs")
                if figures.get(k) is not None}
        return {"trial_id": number, "kind": kind, "proposal": config, "cost": cost,
                "deploy": {"precision": self.spec.budget.param_dtype} if self._deployed else None}

    def _placeholder_values(self, cost: Cost) -> list[float]:
        return [0.0 if obj == self.METRIC else float(getattr(cost, obj)) for obj in self.spec.search.objectives]

    # ------------------------------------------------------------------ results
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        number = self._live.get(trial_id)
        if number is None:
            return
        acc = _finite(result.get(self.METRIC))
        epoch = result.get("epoch")
        if acc is not None and epoch is not None and not self.spec.search.multi_objective:
            # Intermediate values for the Optuna record (dashboard curves, PRUNED trial scores). Written through
            # the storage so that a resumed trial may report an epoch again.
            try:
                self.mirror.set_intermediate_value(number, int(epoch), acc)
            except Exception:  # noqa: BLE001 - e.g. the trial was told meanwhile
                pass
        self._emit("result", trial_id=number, epoch=epoch, epochs_planned=result.get("epochs_planned"),
                   val_macro_accuracy=acc, pid=result.get("pid"))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self._live.pop(trial_id, None)
        if number is None:
            return
        frozen = self.mirror.trial(number)
        if frozen.state.is_finished():  # told before the driver stopped (a resumed copy finishing again)
            return
        result = result or {}
        attrs = self._outcome(number, trial_id, frozen, result, error)
        status = attrs["status"]
        values = None
        if status == Status.COMPLETED:
            score = attrs["val_macro_accuracy_deployed" if self._deployed else "val_macro_accuracy"]
            values = [score if obj == self.METRIC else float(frozen.user_attrs[obj])
                      for obj in self.spec.search.objectives]
        for key, value in attrs.items():
            if value is not None:
                self.mirror.set_user_attr(number, key, value.value if isinstance(value, Status) else value)
        state = {Status.COMPLETED: TrialState.COMPLETE, Status.EARLY_STOPPED: TrialState.PRUNED}.get(status,
                                                                                                   TrialState.FAIL)
        self.study.tell(number, values=values, state=state)
        self.mirror.sync(number)
        self._emit(status.value, trial_id=number, val_macro_accuracy=attrs["val_macro_accuracy"],
                   val_macro_accuracy_deployed=attrs["val_macro_accuracy_deployed"], epochs=attrs["epochs"],
                   params=frozen.user_attrs.get("params"), macs=frozen.user_attrs.get("macs"), error=attrs.get("error"),
                   kind=frozen.user_attrs.get("kind", SEARCH), reference=frozen.user_attrs.get("reference"))

    def _outcome(self, number: int, ray_trial_id: str, frozen: Any, result: dict, error: bool) -> dict[str, Any]:
        """The trial's final user attributes: its status and scores (or why it failed)."""
        acc = _finite(result.get(self.METRIC))
        epoch = result.get("epoch")
        planned = result.get("epochs_planned")
        # training time over all attempts: Tune's time_total_s restarts with a retried attempt
        duration = _finite(result.get("train_time_s"))
        if duration is None:
            duration = _finite(result.get("time_total_s"))
        if duration is None and frozen.user_attrs.get("started_at") is not None:
            duration = time.time() - float(frozen.user_attrs["started_at"])
        attrs: dict[str, Any] = {"val_macro_accuracy": acc, "val_log_loss": _finite(result.get("val_log_loss")),
                                 "epochs": int(epoch) if epoch is not None else 0, "duration_s": duration,
                                 "finished_at": time.time(), "resumed_from_epoch": result.get("resumed_from_epoch"),
                                 "val_macro_accuracy_deployed": _finite(result.get("val_macro_accuracy_deployed")),
                                 "deploy_s": _finite(result.get("deploy_s"))}
        if error or result.get("diverged") or acc is None or epoch is None:
            attrs["status"] = Status.FAILED
            if error:
                where = f"ray/{trial_dirname(number, ray_trial_id)}/error.txt"
                attrs["error"] = f"the trial raised (see {where} in the run folder)"
            elif result.get("diverged"):
                attrs["error"] = f"loss diverged (NaN/inf) in epoch {int(epoch or 0) + 1}"
            else:
                attrs["error"] = "the trial ended without reporting a validation score"
        elif planned is not None and int(epoch) < int(planned):
            attrs["status"] = Status.EARLY_STOPPED
        elif self._deployed and attrs["val_macro_accuracy_deployed"] is None:
            attrs["status"] = Status.FAILED  # trained, but its deployed graph could not be made or scored
            attrs["error"] = str(result.get("deploy_error") or "the trial ended without its deployed score")[:500]
        else:
            attrs["status"] = Status.COMPLETED
        return attrs

    # ------------------------------------------------------------------ save / restore
    def get_state(self) -> dict[str, Any]:
        return {
            "live": dict(self._live),
            "handed": dict(self._handed),
            "reissue": list(self._reissue),
            "consecutive_rejections": self._consecutive_rejections,
            "exhausted": self.exhausted,
            "exhausted_error": self.exhausted_error.__name__,
            "study_name": self.study_name,
            "storage_url": self.storage_url,
            "space_sha256": self.spec.sha256,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("space_sha256") not in (None, self.spec.sha256):
            raise BudgetError("the saved searcher state belongs to another search file; resume with the run's own "
                              "search.yaml")
        self._live = dict(state["live"])
        self._handed = dict(state["handed"])
        self._reissue = list(state.get("reissue", []))
        self._consecutive_rejections = int(state.get("consecutive_rejections", 0))
        self.exhausted = state.get("exhausted")
        self.exhausted_error = ConfigError if state.get("exhausted_error") == "ConfigError" else BudgetError
        self._reconcile()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    def _reconcile(self) -> None:
        """After a restore: find Optuna trials still RUNNING that Tune does not know about."""
        known = set(self._live.values()) | set(self._reissue)
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number in known:
                continue
            if frozen.user_attrs.get("status") == Status.RUNNING and trial_config(frozen) is not None:
                self._reissue.append(frozen.number)  # feasible, asked after Tune's last checkpoint
            else:  # interrupted between ask and tell: never judged, never shown
                self.mirror.set_user_attr(frozen.number, "status", Status.DISCARDED.value)
                self.study.tell(frozen.number, state=TrialState.FAIL)
                self.mirror.sync(frozen.number)
        self._reissue.sort()
