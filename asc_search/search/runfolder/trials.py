"""``trials.parquet``: one row per proposal of a run, built from the Optuna study; and the ONE rule that picks the
best trial and the ONE count of proposals per status.

A trial's id everywhere (the table, events, checkpoints, ``export --trial``) is ``trial_id``: the Optuna trial
number, which also orders proposals in time. ``ray_trial_id`` is Tune's id of the Ray trial that trained it.

Columns, in order (:data:`TRIAL_COLUMNS`; the study's trial user attributes carry them under the same names):
``trial_id``, ``status`` (:class:`~asc_search.search.runfolder.layout.Status`), ``kind`` (``reference``: a
reference arm, named in ``reference``; ``search``: a proposal the sampler drew), ``reference``, one ``p_<name>`` per searched
parameter (a conditional one a trial did not draw holds the file's ``default:``, else null), ``params``,
``param_bytes`` (the DCASE count: params x bytes of param_dtype), ``deployed_param_bytes`` (the deployed graph's
weights, BatchNorm folded; null in runs made before it was counted), ``macs``, ``val_macro_accuracy`` (float32),
``val_macro_accuracy_deployed`` (``search.score_precision: deployed``: the deployed graph's, completed trials only;
NaN otherwise), ``val_log_loss``, ``epochs`` (epochs trained), ``duration_s`` (training time; for a rejected
proposal the time to cost it), ``constraint_param_bytes`` (relative excess of the larger byte figure over
max_param_bytes), ``constraint_macs`` (> 0: over budget), ``cost_s``, ``deploy_s`` (the deployed scoring's time),
``counter`` (analytic | torchinfo), ``ray_trial_id``, ``checkpoint_path`` (relative to the run folder),
``resumed_from_epoch``, ``error``, ``started_at``, ``config`` (the proposal as JSON:
:meth:`asc_search.search.spec.Proposal.from_dict`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..._io import atomic_path
from ...config import Budget
from ...errors import DataError, NotFoundError
from .checkpoints import find_checkpoints, latest_checkpoint, trial_errors
from .layout import SEARCH_FILE, STATUSES, STUDY_FILE, TRAINED, TRIALS_FILE, WITH_WEIGHTS, Status, study_url
from .record import is_running, study_name

PARAM_PREFIX = "p_"
#: The columns every trials table has, in order, with their dtype (``p_<name>`` columns follow ``status``).
TRIAL_COLUMNS: dict[str, str] = {
    "trial_id": "Int64",
    "status": "object",
    "kind": "object",
    "reference": "object",
    "params": "Int64",
    "param_bytes": "Int64",
    "deployed_param_bytes": "Int64",
    "macs": "Int64",
    "val_macro_accuracy": "float64",
    "val_macro_accuracy_deployed": "float64",
    "val_log_loss": "float64",
    "epochs": "Int64",
    "duration_s": "float64",
    "constraint_param_bytes": "float64",
    "constraint_macs": "float64",
    "cost_s": "float64",
    "deploy_s": "float64",
    "counter": "object",
    "ray_trial_id": "object",
    "checkpoint_path": "object",
    "resumed_from_epoch": "Int64",
    "error": "object",
    "started_at": "float64",
    "config": "object",
}
#: What a table must hold to be read (a hand-made table may hold no more).
REQUIRED_COLUMNS: tuple[str, ...] = ("trial_id", "status", "params", "param_bytes", "macs", "val_macro_accuracy",
                                     "val_log_loss", "epochs", "duration_s")
#: THE ranking of completed trials: higher validation macro accuracy (:func:`score_column`: the deployed graph's in a
#: run with ``score_precision: deployed``), then lower log loss, then fewer MACs.
RANKING: tuple[tuple[str, bool], ...] = (("val_macro_accuracy", False), ("val_log_loss", True), ("macs", True))
DEPLOYED_SCORE = "val_macro_accuracy_deployed"
#: Columns copied from the trial's user attributes as they are.
_ATTRIBUTE_COLUMNS = ("reference", "params", "param_bytes", "deployed_param_bytes", "macs", "cost_s", "deploy_s",
                      "counter", "ray_trial_id", "resumed_from_epoch")
_FIRST = 4  # trial_id, status, kind, reference: the p_<name> columns follow them


# ------------------------------------------------------------------------------------------------ building


def _searched(run_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """Names of the searched parameters of the run's search file, and their ``default:`` values."""
    from ..space import load_space

    if not (run_dir / SEARCH_FILE).is_file():
        return [], {}
    spec = load_space(run_dir / SEARCH_FILE)
    # blocks_per_stage is drawn once per stage, as blocks_s1, blocks_s2, ... (the trials' own params name them)
    return [p.name for p in spec.params if p.searched and p.name != "blocks_per_stage"], spec.searched_defaults


def _row(t: Any, status: str, names: list[str], defaults: dict[str, Any], checkpoint: str | None,
         crash: str | None, config: str | None) -> dict[str, Any]:
    ua = t.user_attrs
    row: dict[str, Any] = {"trial_id": t.number, "status": status, "kind": ua.get("kind", "search")}
    for name in names:
        row[PARAM_PREFIX + name] = t.params.get(name, defaults.get(name))
    row.update({col: ua.get(col) for col in _ATTRIBUTE_COLUMNS})
    row.update(
        val_macro_accuracy=ua.get("val_macro_accuracy", math.nan),
        val_macro_accuracy_deployed=ua.get(DEPLOYED_SCORE, math.nan),
        val_log_loss=ua.get("val_log_loss", math.nan),
        epochs=ua.get("epochs", 0),
        duration_s=ua.get("duration_s", ua.get("cost_s", 0.0)),
        constraint_param_bytes=t.constraints.get("param_bytes"),
        constraint_macs=t.constraints.get("macs"),
        checkpoint_path=checkpoint,
        error=crash if status == Status.FAILED and crash else ua.get("error"),
        started_at=t.datetime_start.timestamp() if t.datetime_start else None,
        config=config,
    )
    return row


def _typed(rows: list[dict[str, Any]], names: list[str]) -> pd.DataFrame:
    columns = [*list(TRIAL_COLUMNS)[:_FIRST], *(PARAM_PREFIX + n for n in names), *list(TRIAL_COLUMNS)[_FIRST:]]
    table = pd.DataFrame(rows, columns=columns)
    for col, dtype in TRIAL_COLUMNS.items():
        if dtype != "object":
            table[col] = pd.to_numeric(table[col], errors="coerce").astype(dtype)
        else:
            table[col] = table[col].astype(object).where(table[col].notna(), None)
    return table


def build_trials_table(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per proposal of the run in ``run_dir``, rebuilt from its Optuna study (any time, also mid-run)."""
    from optuna.trial import TrialState

    from ..study import load_study, trial_config

    run_dir = Path(run_dir)
    study = load_study(study_url(run_dir), study_name(run_dir))
    searched, defaults = _searched(run_dir)
    checkpoints = find_checkpoints(run_dir)
    crashes = trial_errors(run_dir)
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.user_attrs.get("status") not in (None, Status.DISCARDED)]  # None: asked, never costed
    names = list(dict.fromkeys(searched + [n for t in trials for n in t.params]))
    rows = []
    for t in trials:
        status = Status.RUNNING.value if t.state == TrialState.RUNNING else str(t.user_attrs["status"])
        ckpt = latest_checkpoint(checkpoints.get(t.number, []), t.user_attrs.get("ray_trial_id"))
        rows.append(_row(t, status, names, defaults, ckpt.path if ckpt else None, crashes.get(t.number),
                         trial_config(t)))
    return _typed(rows, names)


def write_trials_table(run_dir: str | os.PathLike[str], table: pd.DataFrame | None = None) -> Path:
    """Write ``trials.parquet`` atomically (``table``, or the table rebuilt from the study); returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    table = build_trials_table(run_dir) if table is None else table
    path = run_dir / TRIALS_FILE
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)
    return path


# ------------------------------------------------------------------------------------------------ reading


def load_trials(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The run's trials table, sorted by ``trial_id``: ``trials.parquet``, or, while the search still runs (or
    before it wrote the file), the same table rebuilt live from the study. A missing, unreadable or incomplete
    table is an error naming the file."""
    run_dir = Path(run_dir)
    path = run_dir / TRIALS_FILE
    if (run_dir / STUDY_FILE).is_file() and (not path.exists() or is_running(run_dir)):
        try:
            table = build_trials_table(run_dir)
        except Exception as exc:  # a study mid-write or of another layout: say so instead of a traceback
            raise DataError(f"{run_dir / STUDY_FILE}: cannot rebuild the trials table from the study ({exc})") from None
    elif not path.exists():
        raise NotFoundError(f"{path} does not exist: the search has not recorded any proposal yet (run or resume it)")
    else:
        try:
            table = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several kinds for a corrupt file
            raise DataError(f"{path} is not a readable Parquet table ({type(exc).__name__}: {exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; expected at least {list(REQUIRED_COLUMNS)}")
    table = table.copy()
    ids = pd.to_numeric(table["trial_id"], errors="coerce")
    if ids.isna().any() or (ids % 1 != 0).any():
        raise DataError(f"{path}: trial_id must hold the Optuna trial numbers (integers), got {table['trial_id'].iloc[0]!r}")
    table["trial_id"] = ids.astype("int64")
    table["status"] = table["status"].astype(str)
    if "kind" not in table.columns:  # a table of a run before reference arms: every trial was sampled
        table.insert(2, "kind", "search")
    if "reference" not in table.columns:
        table.insert(3, "reference", None)
    for col in REQUIRED_COLUMNS[2:]:
        table[col] = pd.to_numeric(table[col], errors="coerce")
    return table.sort_values("trial_id", kind="stable").reset_index(drop=True)


def param_columns(table: pd.DataFrame) -> list[str]:
    """The ``p_<name>`` columns: the searched parameters."""
    return [c for c in table.columns if c.startswith(PARAM_PREFIX)]


def trial_proposal(row: Any) -> Any:
    """The :class:`~asc_search.search.spec.Proposal` of one trials-table row (from its ``config`` column)."""
    from ..spec import Proposal

    raw = row.get("config")
    if not isinstance(raw, (str, bytes)):
        raise DataError(f"trial {row.get('trial_id')} has no config in the trials table: cannot rebuild its student")
    try:
        return Proposal.from_dict(json.loads(raw))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"trial {row.get('trial_id')}: its config in the trials table is incomplete ({exc})") from None


# ------------------------------------------------------------------------------------------------ the best trial


def score_column(table: pd.DataFrame) -> str:
    """The validation score completed trials are ranked by: ``val_macro_accuracy_deployed`` in a run that scored
    its trials' deployed graphs (``search.score_precision: deployed``: the column holds values), else
    ``val_macro_accuracy``."""
    done = table[table["status"] == Status.COMPLETED] if "status" in table.columns else table
    if DEPLOYED_SCORE in done.columns and pd.to_numeric(done[DEPLOYED_SCORE], errors="coerce").notna().any():
        return DEPLOYED_SCORE
    return "val_macro_accuracy"


def rank(frame: pd.DataFrame, score: str | None = None) -> pd.DataFrame:
    """``frame`` sorted by :data:`RANKING` with ``score`` (default :func:`score_column`) as the validation score
    (missing values last), best first."""
    keys = [(score or score_column(frame), False), *RANKING[1:]]
    return frame.sort_values([c for c, _ in keys], ascending=[a for _, a in keys], kind="stable", na_position="last")


def ranked_trials(table: pd.DataFrame) -> pd.DataFrame:
    """The completed trials with a validation score, best first. Early-stopped trials are never ranked among them
    (their score is from fewer epochs), nor failed or rejected ones."""
    score = score_column(table)
    done = table[(table["status"] == Status.COMPLETED) & pd.to_numeric(table[score], errors="coerce").notna()]
    return rank(done, score).reset_index(drop=True)


def within_budget(frame: pd.DataFrame, budget: Budget) -> pd.Series:
    """Rows whose parameter bytes (the DCASE count and, where recorded, the deployed graph's) and MACs fit."""
    ok = (frame["param_bytes"] <= budget.max_param_bytes) & (frame["macs"] <= budget.max_macs)
    if "deployed_param_bytes" in frame.columns:
        deployed = pd.to_numeric(frame["deployed_param_bytes"], errors="coerce")
        ok &= deployed.isna() | (deployed <= budget.max_param_bytes)
    return ok


def best_trial(table: pd.DataFrame, budget: Budget | None = None) -> pd.Series | None:
    """THE best trial: completed, within ``budget`` (when given: both byte figures and the MACs), highest
    validation macro accuracy (:func:`score_column`); ties go to the lower validation log loss, then to fewer MACs.
    None when no trial qualifies."""
    ranked = ranked_trials(table)
    if budget is not None:
        ranked = ranked[within_budget(ranked, budget)]
    return ranked.iloc[0] if len(ranked) else None


def select_trial(table: pd.DataFrame, trial_id: Any = None, budget: Budget | None = None) -> pd.Series:
    """The trial to export: ``trial_id`` when given (it must have weights: completed or early-stopped), else
    :func:`best_trial`. Raises NotFoundError saying what the run holds."""
    if trial_id is None:
        best = best_trial(table, budget)
        if best is None:
            shown = ", ".join(f"{k}={v}" for k, v in status_counts(table).items() if v and k != "total")
            raise NotFoundError(
                f"this run has no completed trial within budget to choose from ({shown or 'no proposals'}); run or "
                "resume the search, or name an early-stopped trial with trial_id", params=("trial_id",))
        return best
    rows = table[table["trial_id"].astype(str) == str(trial_id).strip()]
    if rows.empty:
        trained = [str(i) for i in table.loc[table["status"].isin(TRAINED), "trial_id"]]
        shown = ", ".join(trained[:20]) + (" ..." if len(trained) > 20 else "")
        raise NotFoundError(f"no trial {str(trial_id)!r} in this run; trained trials: {shown or 'none'}")
    row = rows.iloc[0]
    if row["status"] not in WITH_WEIGHTS:
        raise NotFoundError(f"trial {row['trial_id']} has status {row['status']!r}: only completed or early_stopped "
                            "trials have weights")
    return row


def status_counts(table: pd.DataFrame) -> dict[str, int]:
    """Proposals per status (every status of :data:`STATUSES`, zeros included, then any other seen), ``trained``
    (completed + early_stopped + failed) and ``total``."""
    counts = table["status"].value_counts() if len(table) else pd.Series(dtype=int)
    out = {s.value: int(counts.get(s.value, 0)) for s in STATUSES}
    for status, n in counts.items():
        out.setdefault(str(status), int(n))
    out["trained"] = sum(out[s.value] for s in TRAINED)
    out["total"] = int(len(table))
    return out


def best_reference(table: pd.DataFrame, budget: Budget | None = None) -> pd.Series | None:
    """The best reference arm by THE ranking (completed, within ``budget``); None when no reference completed."""
    if "kind" not in table.columns:
        return None
    return best_trial(table[table["kind"] == "reference"], budget)


def reference_margin(table: pd.DataFrame, winner: Any, budget: Budget | None = None) -> dict[str, Any] | None:
    """How the trial ``winner`` (a row) compares with the best reference on validation (:func:`score_column`: the
    deployed graphs' score in a ``score_precision: deployed`` run): ``{"reference", "trial_id", "score",
    "reference_val_macro_accuracy", "points", "text"}`` with ``text`` = "+X.X points validation macro accuracy over
    reference `name`"; None when the run has no completed reference (or the winner no score)."""
    score = score_column(table)
    ref = best_reference(table, budget)
    acc = winner.get(score) if winner is not None else None
    if ref is None or acc is None or (isinstance(acc, float) and math.isnan(acc)):
        return None
    points = 100.0 * (float(acc) - float(ref[score]))
    name = ref.get("reference") or f"trial {ref['trial_id']}"
    same = int(winner.get("trial_id")) == int(ref["trial_id"])
    what = "validation macro accuracy" + (" (deployed)" if score == DEPLOYED_SCORE else "")
    text = (f"the winner is reference `{name}` itself: the search found nothing better on validation" if same
            else f"{points:+.1f} points {what} over reference `{name}`")
    return {"reference": name, "trial_id": int(ref["trial_id"]), "score": score,
            "reference_val_macro_accuracy": float(ref[score]), "points": points, "text": text}


def trained_short(table: pd.DataFrame, num_samples: int, n_references: int) -> bool:
    """Whether a run holds fewer trained trials than it asked for: ``num_samples`` sampled ones, ``n_references``
    reference arms (a run to resume)."""
    trained = table[table["status"].isin([str(s) for s in TRAINED])]
    kind = trained["kind"] if "kind" in trained.columns else pd.Series("search", index=trained.index)
    return bool((kind != "reference").sum() < num_samples or (kind == "reference").sum() < n_references)
