"""Phase II: the budgeted Ray Tune + Optuna distillation search.

``run_search(cache_dir, space, ...)`` runs one search and writes ``RESULTS_DIR/NAME/``::

    search.yaml      the search file as run (with --num-samples applied); its sha256 is in run.json
    run.json         what produced the run: caches and their fingerprints, package version, seed, times, status
    study.db         the Optuna study (SQLite; optuna-dashboard reads it, also while the search runs)
    ray/             Tune's experiment (trial checkpoints, searcher state) -- what --resume restores
    trials.parquet   one row per proposal: completed, early_stopped, failed or rejected_budget

How a search runs:

* The driver loads the feature cache and the teacher cache, keeps only the train and validation rows (validation =
  whole recording locations carved from train, :class:`~asc_search.config.SplitConfig`; the test split never
  reaches a trial) and puts them in Ray's object store ONCE (``tune.with_parameters``): every trial on a node maps
  the same shared-memory copy (numpy arrays, zero-copy). For a cache too large for the object store, point the
  trials at storage every node shares instead (the same Parquet caches on NFS/S3-fuse, read once per trial
  process with :func:`asc_search.cache.load_features`); that is not wired here because the object store holds
  the DCASE-sized caches comfortably (25 % split: ~140 k clips x 256 x 65 x float16 = 4.6 GB).
* :class:`asc_search.searcher.BudgetedSearcher` proposes; over-budget proposals never become trials.
* Each trial builds the student (+ the train-only projection head for embedding matching), trains it with
  :func:`asc_search.train.fit`, reports every epoch (``tune.report`` with a checkpoint) and resumes from
  ``tune.get_checkpoint()`` when Tune retries it. ASHA (on ``val_macro_accuracy``, ``time_attr=epoch``) stops
  hopeless trials. A diverged trial (NaN/inf loss) reports ``diverged`` and ends (no retry); a crashed one is
  retried ``search.max_failures`` times from its last checkpoint, then recorded as failed. The search goes on.

Nothing here prints: live progress goes to ``on_event(event, info)`` (the CLI renders it).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, now_utc, provenance, write_json_atomic, write_text_atomic
from .._runtime import connect_ray, quiet_ray_env
from ..errors import CacheError, ConfigError, NotFoundError
from .space import _MISSING, Proposal, SearchSpec, load_space

__all__ = [
    "DEFAULT_RESULTS_DIR",
    "SearchResult",
    "prepare_trial_data",
    "fit_proposal",
    "train_trial",
    "run_search",
    "build_trials_table",
    "write_trials_table",
]

DEFAULT_RESULTS_DIR = Path("results")
TRIALS_FILE = "trials.parquet"
STUDY_FILE = "study.db"
SEARCH_FILE = "search.yaml"
RUN_FILE = "run.json"
RAY_DIR = "ray"
#: Files in each trial checkpoint: ``best.pt`` (the best epoch's student weights, loadable with weights_only=True)
#: and ``resume.pt`` (everything :func:`asc_search.train.fit` needs to continue exactly).
BEST_FILE = "best.pt"
RESUME_FILE = "resume.pt"
TRIAL_MARKER = "trial.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# ------------------------------------------------------------------------------------------------ trial data
def prepare_trial_data(features: Any, teacher: Any, spec: SearchSpec) -> dict[str, Any]:
    """The train and validation arrays one trial needs (never the test split), as numpy arrays for the object store.

    ``features``: a :class:`~asc_search.cache.FeatureSet`; ``teacher``: :class:`~asc_search.teacher_cache.TeacherTargets`
    aligned to ``features.table`` rows, or None (no distillation). Teacher embeddings are stored float16 (half the
    object store; ``fit`` turns each batch into float32).
    """
    import torch

    parts = features.split_indices(spec.split)
    out: dict[str, Any] = {
        "labels": list(features.labels),
        "input_shape": list(features.input_shape),
        "profile": features.profile.name,
        "teacher_embedding_shape": list(teacher.embedding_shape) if teacher is not None else None,
    }
    x_all = features.x
    for name in ("train", "val"):
        idx, part = parts[name]
        if not len(idx):
            raise CacheError(
                f"{features.cache_dir}: the {name} split is empty after carving validation with {spec.split} "
                f"(from {spec.source}); the cache needs train clips from several recording locations"
            )
        index = torch.from_numpy(idx)
        out[f"{name}_x"] = x_all.index_select(0, index).numpy()
        out[f"{name}_y"] = part["label"].to_numpy(dtype=np.int64)
        out[f"{name}_files"] = part["filename"].to_numpy().astype(str).tolist()
        if teacher is not None:
            out[f"{name}_logits"] = teacher.logits.index_select(0, index).float().numpy()
            out[f"{name}_emb"] = teacher.embeddings.index_select(0, index).to(torch.float16).numpy()
    return out


def _tensor_data(data: dict[str, Any], name: str, proposal: Proposal) -> Any:
    import torch

    from ..training.loop import TensorData

    def t(key: str) -> Any:
        arr = data.get(key)
        if arr is None:
            return None
        with warnings.catch_warnings():  # object-store arrays are read-only; fit never writes to its inputs
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(arr)

    return TensorData(
        x=t(f"{name}_x"),
        y=t(f"{name}_y"),
        teacher_logits=t(f"{name}_logits") if proposal.distill.uses_teacher_logits else None,
        teacher_emb=t(f"{name}_emb") if proposal.distill.uses_embeddings else None,
    )


# ------------------------------------------------------------------------------------------------ the trainable
def fit_proposal(
    config: dict[str, Any],
    data: dict[str, Any],
    on_epoch: Callable[[int, dict[str, Any], dict[str, Any]], Any] | None = None,
    start_state: dict[str, Any] | None = None,
) -> Any:
    """Build the proposal's student (+ projection head) and train it on the trial data; returns the FitResult.

    ``config`` is a trial config from :class:`~asc_search.searcher.BudgetedSearcher` (``proposal`` = a
    :meth:`Proposal.to_dict`), ``data`` the output of :func:`prepare_trial_data`. No Ray here.
    """

    from ..models.heads import ProjectionHead
    from ..models.student import build_student
    from ..training.loop import fit

    proposal = Proposal.from_dict(config["proposal"])
    model = build_student(proposal.student)
    head = None
    if proposal.distill.uses_embeddings:
        shape = data.get("teacher_embedding_shape")
        if shape is None:
            raise CacheError("this proposal matches embeddings but the search has no teacher cache")
        head = ProjectionHead(proposal.student.embedding_channels(), tuple(shape))
    train = _tensor_data(data, "train", proposal)
    val = _tensor_data(data, "val", proposal)
    return fit(model, train, val, proposal.train, distill=proposal.distill, head=head, on_epoch=on_epoch,
               start_state=start_state)


def train_trial(config: dict[str, Any], data: dict[str, Any]) -> None:
    """The Ray Tune function trainable: one proposal, trained with distillation, reported every epoch."""
    import torch
    from ray import tune

    from ..training.loop import DivergedError

    proposal = Proposal.from_dict(config["proposal"])
    start_state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start_state = torch.load(Path(d) / RESUME_FILE, map_location="cpu", weights_only=False)

    planned = proposal.train.epochs
    fixed = {
        "epochs_planned": planned,
        "optuna_trial": int(config["optuna_trial"]),
        **{k: int(v) for k, v in config["cost"].items()},
    }
    last_epoch = int(start_state["epoch"]) if start_state is not None else 0
    fixed["resumed_from_epoch"] = last_epoch  # > 0: this attempt continued from a checkpoint (a retry or --resume)

    def on_epoch(epoch: int, metrics: dict[str, Any], state: dict[str, Any]) -> None:
        nonlocal last_epoch
        last_epoch = epoch
        report = {
            "val_macro_accuracy": float(metrics.get("val_macro_accuracy", float("nan"))),
            "val_log_loss": float(metrics.get("val_log_loss", float("nan"))),
            "train_loss": float(metrics.get("train_loss", float("nan"))),
            "epoch": int(epoch),
            "best_epoch": int(state.get("best_epoch") or epoch),
            "best_val_macro_accuracy": float((state.get("best_metrics") or metrics).get("val_macro_accuracy", float("nan"))),
            "epoch_time_s": float(metrics.get("epoch_time_s", 0.0)),
            "pid": os.getpid(),  # the worker process (shown in the Ray dashboard, useful to inspect a slow trial)
            **fixed,
        }
        with tempfile.TemporaryDirectory() as d:
            torch.save(
                {
                    "best_state": state.get("best_state"),
                    "best_epoch": state.get("best_epoch"),
                    "best_metrics": {k: v for k, v in (state.get("best_metrics") or {}).items() if isinstance(v, (int, float))},
                    "student_config": proposal.student.to_dict(),
                },
                Path(d) / BEST_FILE,
            )
            torch.save(state, Path(d) / RESUME_FILE)
            (Path(d) / TRIAL_MARKER).write_text(
                json.dumps({"optuna_trial": fixed["optuna_trial"], "ray_trial_id": tune.get_context().get_trial_id(), "epoch": epoch})
            )
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(d))

    try:
        fit_proposal(config, data, on_epoch=on_epoch, start_state=start_state)
    except DivergedError as exc:
        # Reported, not raised: a diverged proposal would diverge again; Tune must not retry it.
        tune.report(
            {
                "val_macro_accuracy": 0.0,
                "val_log_loss": float("nan"),
                "epoch": int(last_epoch),
                "diverged": True,
                "error": str(exc)[:500],
                **fixed,
            }
        )


# ------------------------------------------------------------------------------------------------ Ray
# ------------------------------------------------------------------------------------------------ results table
def _run_files(run_dir: Path) -> tuple[Path, str]:
    db = run_dir / STUDY_FILE
    if not db.is_file():
        raise NotFoundError(f"{db} does not exist: {run_dir} is not a search run (or it never started)")
    return db, f"sqlite:///{db.resolve()}"


def _study_name(run_dir: Path) -> str:
    info_path = run_dir / RUN_FILE
    if info_path.is_file():
        try:
            return json.loads(info_path.read_text())["study_name"]
        except (ValueError, KeyError):
            pass
    return run_dir.name


def _checkpoint_paths(run_dir: Path) -> dict[int, str]:
    """Optuna trial number -> its newest checkpoint folder (relative to run_dir), found on disk.

    Each checkpoint carries ``trial.json`` naming its Optuna trial, so this works whatever Tune calls its folders.
    """
    out: dict[int, tuple[int, str]] = {}
    ray_dir = run_dir / RAY_DIR
    if not ray_dir.is_dir():
        return {}
    for marker in ray_dir.glob(f"*/checkpoint_*/{TRIAL_MARKER}"):
        ckpt = marker.parent
        try:
            number = int(json.loads(marker.read_text())["optuna_trial"])
            index = int(ckpt.name.split("_")[-1])
        except (ValueError, KeyError, OSError):
            continue
        if number not in out or index > out[number][0]:
            out[number] = (index, str(ckpt.relative_to(run_dir)))
    return {k: v for k, (_, v) in out.items()}


def _trial_errors(run_dir: Path) -> dict[int, str]:
    """Optuna trial number -> the last line of the exception that ended its Ray trial (Tune's error.txt)."""
    out: dict[int, str] = {}
    for err in (run_dir / RAY_DIR).glob("trial_*_*/error.txt"):
        try:
            number = int(err.parent.name.split("_")[1])
            lines = [ln.strip() for ln in err.read_text(errors="replace").splitlines() if ln.strip()]
        except (ValueError, IndexError, OSError):
            continue
        if lines:
            out[number] = f"the trial raised: {lines[-1]}"[:500]
    return out


def build_trials_table(run_dir: str | os.PathLike[str]) -> Any:
    """One row per proposal of the run in ``run_dir``, rebuilt from its Optuna study (any time, also mid-run).

    Columns: trial_id (the Optuna trial number), number, status (completed | early_stopped | failed |
    rejected_budget; ``running`` only while the search runs), one ``p_<name>`` column per searched parameter
    (one a trial did not draw holds the file's ``default:`` for it, e.g. ``p_emb_weight`` 0.0, else null), params, param_bytes, macs,
    val_macro_accuracy, val_log_loss, epochs, duration_s, constraint_param_bytes, constraint_macs, cost_s, counter,
    ray_trial_id, checkpoint_path (relative to run_dir), error, started_at, config (the proposal as JSON:
    :meth:`asc_search.space.Proposal.from_dict`).
    """
    import optuna
    import pandas as pd

    run_dir = Path(run_dir)
    _, url = _run_files(run_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=_study_name(run_dir), storage=url)
    spec = load_space(run_dir / SEARCH_FILE) if (run_dir / SEARCH_FILE).is_file() else None
    searched = [p.name for p in spec.params if p.type != "fixed"] if spec is not None else []
    # value of a searched parameter a trial did not draw (condition false): the file's default:, else none
    defaults = {p.name: p.default for p in spec.params if p.when and p.default is not _MISSING} if spec is not None else {}
    checkpoints = _checkpoint_paths(run_dir)
    crashes = _trial_errors(run_dir)
    rows = []
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        status = ua.get("status")
        if status is None or status == "discarded":
            continue  # asked but never costed (driver stopped in between): not a proposal
        if t.state == TrialState.RUNNING:
            status = "running"
        row: dict[str, Any] = {"trial_id": t.number, "number": t.number, "status": status}
        names = list(dict.fromkeys(searched + [n for n in t.params if n not in searched]))
        for name in names:
            if name.startswith("blocks_s") and name not in t.params:
                value = None
            elif name == "blocks_per_stage":
                continue
            else:
                value = t.params.get(name, defaults.get(name))
            row[f"p_{name}"] = value
        constraints = t.constraints
        ray_id = ua.get("ray_trial_id")
        row.update(
            {
                "params": ua.get("params"),
                "param_bytes": ua.get("param_bytes"),
                "macs": ua.get("macs"),
                "val_macro_accuracy": ua.get("val_macro_accuracy", float("nan")),
                "val_log_loss": ua.get("val_log_loss", float("nan")),
                "epochs": ua.get("epochs", 0),
                "duration_s": ua.get("duration_s", ua.get("cost_s", 0.0)),
                "constraint_param_bytes": constraints.get("param_bytes"),
                "constraint_macs": constraints.get("macs"),
                "cost_s": ua.get("cost_s"),
                "counter": ua.get("counter"),
                "ray_trial_id": ray_id,
                "checkpoint_path": checkpoints.get(t.number),
                "resumed_from_epoch": ua.get("resumed_from_epoch"),
                "error": crashes.get(t.number, ua.get("error")) if status == "failed" else ua.get("error"),
                "started_at": t.datetime_start.timestamp() if t.datetime_start else None,
                "config": ua.get("config"),
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(columns=["trial_id", "number", "status", "params", "param_bytes", "macs",
                                      "val_macro_accuracy", "val_log_loss", "epochs", "duration_s", "config"])
    for col in ("val_macro_accuracy", "val_log_loss", "duration_s", "constraint_param_bytes", "constraint_macs", "cost_s", "started_at"):
        if col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce").astype("float64")
    for col in ("params", "param_bytes", "macs", "epochs", "trial_id", "number"):
        if col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce").astype("Int64")
    return table


def write_trials_table(run_dir: str | os.PathLike[str]) -> Path:
    """Rebuild ``trials.parquet`` from the study and write it atomically; returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    table = build_trials_table(run_dir)
    path = run_dir / TRIALS_FILE
    with atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)
    return path


# ------------------------------------------------------------------------------------------------ the search
@dataclass
class SearchResult:
    run_dir: Path
    name: str
    counts: dict[str, int]  # proposals per status (+ "total")
    best: dict[str, Any] | None  # the completed trial with the best validation macro accuracy
    interrupted: bool = False  # stopped (Ctrl-C) before num_samples trials were trained: resume it
    stop_reason: str | None = None  # why the searcher stopped proposing early, if it did
    duration_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def _counts(table: Any) -> dict[str, int]:
    out = {s: 0 for s in ("completed", "early_stopped", "failed", "rejected_budget", "running")}
    if len(table):
        for status, n in table["status"].value_counts().items():
            out[str(status)] = int(n)
    out["trained"] = out["completed"] + out["early_stopped"] + out["failed"]
    out["total"] = int(len(table))
    return out


def _best(table: Any) -> dict[str, Any] | None:
    done = table[(table["status"] == "completed") & table["val_macro_accuracy"].notna()] if len(table) else table
    if not len(done):
        return None
    row = done.sort_values(["val_macro_accuracy", "val_log_loss"], ascending=[False, True]).iloc[0]
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.to_dict().items() if k != "config"}


def _default_name(spec_path: Path) -> str:
    return f"{spec_path.stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _check_profile(spec: SearchSpec, features: Any) -> None:
    fp = features.profile
    if fp.name != spec.profile.name or tuple(fp.shape) != tuple(spec.profile.shape):
        raise ConfigError(
            f"{spec.source}: profile: the search file is for feature profile {spec.profile.name!r} "
            f"({spec.profile.shape[0]} x {spec.profile.shape[1]}) but the feature cache {features.cache_dir} holds "
            f"{fp.name!r} ({fp.shape[0]} x {fp.shape[1]}); build a cache with `asc-search data features ... --profile "
            f"{spec.profile.name}` or use a search file for {fp.name!r}"
        )


def _needs_teacher(spec: SearchSpec) -> bool:
    for p in spec.distill:
        if p.name in ("kd_weight", "emb_weight"):
            if p.type != "fixed" or (p.value or 0) > 0:
                return True
    return False


def run_search(
    cache_dir: str | os.PathLike[str],
    space: str | os.PathLike[str] | None = None,
    *,
    teacher_cache: str | os.PathLike[str] | None = None,
    name: str | None = None,
    results_dir: str | os.PathLike[str] = DEFAULT_RESULTS_DIR,
    num_samples: int | None = None,
    address: str | None = None,
    resume: bool = False,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Run (or, with ``resume=True``, finish) the search of ``space`` on the caches; see the module docstring.

    ``on_event(event, info)`` gets: ``setup`` (run_dir, counts so far), ``started``, ``result`` (per epoch),
    ``rejected``, ``completed`` / ``early_stopped`` / ``failed``, ``exhausted``.
    """
    from ..data.cache import load_features
    from .searcher import BudgetedSearcher, open_study, register_sink, unregister_sink

    t_start = time.time()
    results_dir = Path(results_dir)
    cache_dir = Path(cache_dir)

    # ---- the run folder and the spec
    if resume:
        if name is None:
            raise ConfigError("--resume needs --name NAME (the run to resume, a folder under --results-dir)")
        run_dir = results_dir / name
        if not (run_dir / SEARCH_FILE).is_file() or not (run_dir / RUN_FILE).is_file():
            raise NotFoundError(f"{run_dir}: no search run to resume there (no {SEARCH_FILE} / {RUN_FILE})")
        info = json.loads((run_dir / RUN_FILE).read_text())
        if space is not None:
            given = hashlib.sha256(Path(space).read_bytes()).hexdigest() if Path(space).is_file() else None
            if given not in (info.get("space_file_sha256"), info.get("space_sha256")):
                raise ConfigError(
                    f"--space {space} differs from the search file the run {name!r} started with "
                    f"({info.get('space_file')}); resume without --space (the run keeps its own {SEARCH_FILE})"
                )
        spec = load_space(run_dir / SEARCH_FILE)
        if num_samples is not None and num_samples != spec.search.num_samples:
            raise ConfigError(
                f"--num-samples {num_samples}: the run {name!r} was started with {spec.search.num_samples}; a resumed "
                "run keeps its settings"
            )
    else:
        if space is None:
            raise ConfigError("--space FILE is required (e.g. search_spaces/quick.yaml)")
        spec = load_space(space)
        original_sha = spec.sha256
        if num_samples is not None:
            spec = spec.with_num_samples(num_samples)
        name = name or _default_name(Path(space))
        if not _NAME_RE.match(name):
            raise ConfigError(
                f"--name {name!r}: use letters, digits, '.', '_' and '-' only (it names a folder under {results_dir})"
            )
        run_dir = results_dir / name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(
                f"{run_dir} already exists: pass --resume to finish that run, or choose another --name"
            )
    run_dir = run_dir.resolve()

    # ---- data (train + validation only)
    features = load_features(cache_dir)
    _check_profile(spec, features)
    if resume and info.get("feature_fingerprint") not in (None, features.fingerprint):
        raise CacheError(
            f"{cache_dir}: feature fingerprint {features.fingerprint} differs from {info['feature_fingerprint']} "
            f"that run {name!r} started with; resume against the same cache"
        )
    teacher = None
    teacher_dir = None
    if _needs_teacher(spec):
        from ..data.teacher_cache import default_teacher_cache_dir, load_teacher_targets

        teacher_dir = Path(teacher_cache) if teacher_cache is not None else default_teacher_cache_dir(cache_dir)
        if not teacher_dir.exists():
            raise CacheError(
                f"{teacher_dir}: no teacher cache there, and {spec.source} searches distillation weights; run "
                "`asc-search teacher embed` first, or pass --teacher-cache DIR"
            )
        teacher = load_teacher_targets(features, teacher_dir)
    payload = prepare_trial_data(features, teacher, spec)
    n_classes = len(features.labels)
    teacher_fp = (teacher.meta.get("teacher_fingerprint") if teacher is not None else None)
    # The trials get their own copies (``payload``): drop the whole cache's tensors before the copies go to the object
    # store, so the driver's peak memory is about one cache, not two (the full DCASE cache is ~7.7 GB at float16).
    features.x = None
    teacher = None

    # ---- Ray (before anything is written: a cluster that cannot run a trial is refused up front)
    quiet_ray_env()
    started_ray = connect_ray(address)
    channel = str(run_dir)
    try:
        _check_resources(spec)

        # ---- record what produces the run
        run_dir.mkdir(parents=True, exist_ok=True)
        storage_url = f"sqlite:///{run_dir / STUDY_FILE}"
        if not resume:
            write_text_atomic(run_dir / SEARCH_FILE, spec.text)
            info = {
                "name": name,
                "study_name": name,
                "space_file": str(Path(space).resolve()),
                "space_file_sha256": original_sha,
                "space_sha256": spec.sha256,
                "profile": spec.profile.name,
                "cache_dir": str(cache_dir.resolve()),
                "feature_fingerprint": features.fingerprint,
                "dataset_root": (features.meta or {}).get("dataset_root"),
                "teacher_cache_dir": str(teacher_dir.resolve()) if teacher_dir is not None else None,
                "teacher_fingerprint": teacher_fp,
                "split": dataclasses.asdict(spec.split),
                "n_train": len(payload["train_y"]),
                "n_val": len(payload["val_y"]),
                "budget": spec.budget.to_dict(),
                "seed": spec.search.seed,
                "num_samples": spec.search.num_samples,
                **provenance(),
                "finished_utc": None,
                "status": "running",
                "address": address,
            }
            write_json_atomic(run_dir / RUN_FILE, info)
        else:
            info["resumed_utc"] = [*info.get("resumed_utc", []), now_utc()]
            info["status"] = "running"
            write_json_atomic(run_dir / RUN_FILE, info)
        study_name = info["study_name"]
        open_study(spec, storage_url, study_name)  # create it now so the dashboard can show it at once

        # ---- Tune
        if on_event is not None:
            register_sink(channel, on_event)
        from ray import tune

        s = spec.search
        trainable = tune.with_resources(
            tune.with_parameters(train_trial, data=payload), {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial}
        )
        del payload
        ray_path = run_dir / RAY_DIR
        if resume:
            if not tune.Tuner.can_restore(str(ray_path)):
                raise NotFoundError(f"{ray_path}: no Ray Tune experiment state to resume from")
            tuner = tune.Tuner.restore(
                str(ray_path), trainable=trainable, resume_unfinished=True, resume_errored=False
            )
        else:
            searcher = BudgetedSearcher(spec, storage_url, study_name, n_classes=n_classes, channel=channel)
            if s.asha_enabled:
                from ray.tune.schedulers import ASHAScheduler

                scheduler = ASHAScheduler(
                    time_attr="epoch",
                    metric="val_macro_accuracy",
                    mode="max",
                    max_t=spec.max_epochs,
                    grace_period=min(s.grace_period, spec.max_epochs),
                    reduction_factor=s.reduction_factor,
                )
            else:
                from ray.tune.schedulers import FIFOScheduler

                scheduler = FIFOScheduler()
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    num_samples=s.num_samples,
                    max_concurrent_trials=s.max_concurrent,
                    trial_dirname_creator=_trial_dirname,
                    # a finished trial's worker (torch + the package already imported) takes the next trial:
                    # 4 quick trials 2 at a time took 22.6 s instead of 30.7 s
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=RAY_DIR,
                    storage_path=str(run_dir),
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=s.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                ),
            )
        if on_event is not None:
            so_far = build_trials_table(run_dir)
            running = so_far.loc[so_far["status"] == "running", "trial_id"].astype(int).tolist() if len(so_far) else []
            on_event("setup", {"run_dir": str(run_dir), "name": name, "resume": resume, "num_samples": s.num_samples,
                               "max_concurrent": s.max_concurrent, "counts": _counts(so_far), "running": running})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tuner.fit()
    finally:
        if on_event is not None:
            unregister_sink(channel)
        if started_ray:
            import ray

            ray.shutdown()

    # ---- results
    write_trials_table(run_dir)
    table = build_trials_table(run_dir)
    counts = _counts(table)
    study = open_study(spec, storage_url, study_name)
    stop_reason = study.user_attrs.get("stop_reason")
    interrupted = counts["running"] > 0 or (counts["trained"] < spec.search.num_samples and not stop_reason)
    info["finished_utc"] = now_utc()
    info["status"] = "interrupted" if interrupted else ("stopped" if stop_reason else "finished")
    info["counts"] = counts
    info["stop_reason"] = stop_reason
    write_json_atomic(run_dir / RUN_FILE, info)
    result = SearchResult(
        run_dir=run_dir,
        name=str(name),
        counts=counts,
        best=_best(table),
        interrupted=interrupted,
        stop_reason=stop_reason,
        duration_s=time.time() - t_start,
        info=info,
    )
    if stop_reason and not interrupted:
        err = study.user_attrs.get("stop_error", "BudgetError")
        from ..errors import BudgetError

        cls = ConfigError if err == "ConfigError" else BudgetError
        raise cls(f"{stop_reason} (run {run_dir}: {counts['trained']} trained, {counts['rejected_budget']} rejected)")
    return result


def _check_resources(spec: SearchSpec) -> None:
    """A trial asking for more than the cluster has would wait forever: refuse it up front."""
    import ray

    total = ray.cluster_resources()
    s = spec.search
    for key, want, name in (("CPU", s.cpus_per_trial, "cpus_per_trial"), ("GPU", s.gpus_per_trial, "gpus_per_trial")):
        have = float(total.get(key, 0.0))
        most = _max_node(key)
        if want > 0 and want > most:
            raise ConfigError(
                f"{spec.source}: search.resources.{name} is {want:g} but the Ray cluster has "
                f"{have:g} {key}(s) in all and at most {most:g} on one node: no trial could ever start; "
                f"lower {name} (e.g. gpus_per_trial: 0 on a machine without a GPU)"
            )


def _max_node(key: str) -> float:
    """The most of resource ``key`` (CPU, GPU) any single alive node of the connected Ray cluster has."""
    import ray

    best = 0.0
    for node in ray.nodes():
        if node.get("Alive"):
            best = max(best, float(node.get("Resources", {}).get(key, 0.0)))
    return best


def _trial_dirname(trial: Any) -> str:
    """``trial_<optuna number>_<ray trial id>``: short, and names the Optuna trial."""
    return f"trial_{trial.config.get('optuna_trial', 'x')}_{trial.trial_id}"
