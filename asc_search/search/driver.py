"""Phase II: the budgeted Ray Tune + Optuna distillation search, :func:`run_search`.

One search writes the run folder ``RESULTS_DIR/NAME/`` (:mod:`asc_search.search.runfolder`). It runs as a few steps:

1. **prepare** the search file and the run folder (a new run, or the run to resume with its own search.yaml) and
   take the run's lock (:mod:`~asc_search.search.runfolder.lock`) before anything slow: one driver per run;
2. **load** (:mod:`asc_search.search.searchdata`) the feature cache and the teacher cache, keep only the train and validation rows (validation = whole
   recording locations carved from train; the test split never reaches a trial) as the trial data, put in Ray's
   object store ONCE (``tune.with_parameters``): every trial on a node maps the same shared-memory copy; check the
   data for what a user should know (:mod:`asc_search.search.caveats`) and cost the reference arms
   (:mod:`asc_search.search.references`);
3. **connect** to Ray (local, or a cluster by address) and refuse per-trial resources no node has;
4. **record** what produces the run (search.yaml, run.json) and create the study; a new study gets the reference
   arms enqueued before any sampled proposal;
5. **tune**: :class:`~asc_search.search.searcher.BudgetedSearcher` proposes (over-budget proposals never become
   trials), :func:`~asc_search.search.trainable.train_trial` trains each one, ASHA (on ``val_macro_accuracy``, over
   epochs or optimiser steps: :mod:`asc_search.search.scheduler`) stops hopeless ones but never a reference; a
   diverged trial ends without retry, a crashed one is retried ``search.max_failures`` times from its last
   checkpoint, then recorded as failed. Tune runs ``num_samples`` + the references that will train;
6. **summarise**: trials.parquet, the counts, the best trial (references included) against the best reference,
   the warnings and the run's state in run.json.

Throughout, given ``views`` (the CLI and the demo pass :class:`asc_search.results.views.ViewsPublisher`), the run's
own views (leaderboard, Pareto front, plots) are published into its study for optuna-dashboard as trials end and at
the end; the search layer never imports the results layer itself.

For a cache too large for the object store, point the trials at storage every node shares instead (the same
Parquet caches, read once per trial process); not wired here because the object store holds the DCASE-sized caches
comfortably (~140 k clips x 256 x 65 x float16 = 4.6 GB). Nothing here prints: progress goes to ``on_event``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import now_utc, provenance, write_text_atomic
from .._progress import OnEvent, emit, log, warn
from .._runtime import check_trial_resources, connect_ray, local_object_store_bytes, quiet_ray_env, steady_cwd
from ..errors import BudgetError, ConfigError, NotFoundError
from .caveats import winner_caveats
from .references import enqueue_references
from .runfolder import (
    DEFAULT_RESULTS_DIR,
    RAY_DIR,
    SEARCH_FILE,
    STUDY_FILE,
    RunLock,
    RunRecord,
    RunState,
    Status,
    best_trial,
    build_trials_table,
    check_run_name,
    lock_run,
    read_run_record,
    reference_margin,
    space_file_record,
    status_counts,
    trained_short,
    trial_dirname,
    write_run_record,
    write_trials_table,
)
from .searchdata import SearchData, load_search_data
from .space import load_space, with_num_samples, with_subset
from .spec import SearchSpec
from .study import open_study
from .trainable import train_trial

__all__ = ["SearchResult", "run_search"]


@dataclass
class SearchResult:
    run_dir: Path
    name: str
    counts: dict[str, int]  # proposals per status (runfolder.status_counts)
    best: dict[str, Any] | None  # the best trial's row (runfolder.best_trial), without its config
    record: RunRecord  # run.json as written at the end
    interrupted: bool = False  # stopped (Ctrl-C) before num_samples trials were trained: resume it
    stop_reason: str | None = None  # why the searcher stopped proposing early, if it did
    duration_s: float = 0.0
    margin: dict[str, Any] | None = None  # the winner against the best reference (runfolder.reference_margin)
    warnings: list[str] = dataclasses.field(default_factory=list)  # as written to run.json


@dataclass
class _Run:
    """Step 1's answer: what runs, and where."""

    name: str
    run_dir: Path
    spec: SearchSpec
    resume: bool
    record: RunRecord | None  # run.json of the run resumed; None for a new run
    lock: RunLock  # the run's lock, held until the search ends
    space_file: Path | None = None  # a new run's search file (as given) and its sha256
    space_file_sha256: str | None = None


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
    dir_folder: str | os.PathLike[str] | None = None,
    subset: int | None = None,
    on_event: OnEvent | None = None,
    stopper: Any = None,
    callbacks: list[Any] | None = None,
    views: Callable[[Path, OnEvent | None], Any] | None = None,
) -> SearchResult:
    """Run (or, with ``resume=True``, finish) the search of ``space`` on the caches; see the module docstring.

    ``on_event(event, info)`` gets: ``setup`` (run_dir, counts so far), ``started``, ``result`` (per epoch),
    ``rejected``, ``completed`` / ``early_stopped`` / ``failed``, ``exhausted``, ``error``; every trial event names
    the trial by ``trial_id`` (the Optuna trial number); ``warning`` (one line each, also kept in run.json).
    ``views(run_dir, on_event)``: makes the sink that publishes the run's views for the dashboard (an ``on_event``
    that passes events on, with a ``publish()`` called at the end), e.g.
    :class:`asc_search.results.views.ViewsPublisher`; None: no views.
    ``stopper`` and ``callbacks``: a Tune stopper and Tune callbacks for a new run (the benchmarks use them to
    share a budget of trial-epochs between methods). ``dir_folder``: WAV device impulse responses for the
    ``train.dir_p`` augmentation (default: the built-in generic bank; a resumed run rebuilds the bank it recorded).
    ``subset``: train on the DCASE 2024 training subset of that many percent (the search file's ``split.subset``).
    """
    t_start = time.time()
    run = _prepare_run(space, name, Path(results_dir), num_samples, resume, subset)  # holds the run's lock from here on
    try:
        return _search(run, Path(cache_dir), teacher_cache, address, on_event, t_start, stopper, callbacks, views,
                       dir_folder)
    finally:
        run.lock.release()


def _search(run: _Run, cache_dir: Path, teacher_cache: Any, address: str | None, on_event: OnEvent | None,
            t_start: float, stopper: Any = None, callbacks: list[Any] | None = None,
            views: Callable[[Path, OnEvent | None], Any] | None = None, dir_folder: Any = None) -> SearchResult:
    """Steps 2-6 for the run of step 1 (whose lock the caller holds)."""
    from ..data.cache import read_manifest

    run.spec.check_feasible(n_classes=len(read_manifest(cache_dir)["labels"]))  # before minutes of loading
    log(on_event, f"{run.name}: loading the feature cache {cache_dir}"
        + (" and its teacher cache" if run.spec.needs_teacher else ""))
    data = _load_data(run, cache_dir, teacher_cache, dir_folder)
    quiet_ray_env()
    target = address or os.environ.get("RAY_ADDRESS")
    log(on_event, f"{run.name}: joining the Ray cluster at {target}" if target else f"{run.name}: starting a local Ray")
    started_ray = connect_ray(address, local_store_bytes=local_object_store_bytes(_payload_bytes(data.payload)))
    channel = str(run.run_dir)
    try:
        check_trial_resources(run.spec.search.cpus_per_trial, run.spec.search.gpus_per_trial, run.spec.source)
        record = _write_record(run, data, cache_dir, address)
        storage_url = f"sqlite:///{run.run_dir / STUDY_FILE}"
        study = open_study(run.spec, storage_url, record.study_name)  # now, so that the dashboard shows it at once
        if not run.resume:
            enqueue_references(study, data.references)
        for message in data.warnings:
            warn(on_event, message)
        publisher = views(run.run_dir, on_event) if views is not None else None
        tuner = _build_tuner(run, data, storage_url, record.study_name, channel, publisher or on_event, stopper,
                             callbacks)
        warnings_so_far, n_classes = data.warnings, data.n_classes
        del data
        if on_event is not None:
            _announce(run, on_event)
        # Tune runs from the run folder: a Ray job's working folder (this process's) can be replaced under it
        with warnings.catch_warnings(), steady_cwd(run.run_dir):
            warnings.simplefilter("ignore")
            tuner.fit()
    finally:
        from .channels import unregister_sink

        unregister_sink(channel)
        if started_ray:
            import ray

            ray.shutdown()
    return _summarise(run, record, storage_url, time.time() - t_start, warnings_so_far, n_classes, on_event,
                      publisher)


# ------------------------------------------------------------------------------------------------ 1. prepare


def _prepare_run(space: Any, name: str | None, results_dir: Path, num_samples: int | None, resume: bool,
                 subset: int | None = None) -> _Run:
    """The run to do, its lock held (released again when this step refuses it)."""
    if resume:
        if name is None:
            raise ConfigError("resume needs name: the run to resume (a folder under results_dir)",
                              params=("resume", "name", "results_dir"))
        check_run_name(name, results_dir)
        lock = lock_run((results_dir / name).resolve(), name, new=False)
        try:
            resumed = _resumed_run(space, name, lock, num_samples)
            if subset is not None and subset != resumed.spec.split.subset:
                raise ConfigError(f"subset {subset}: run {name!r} was started with split.subset "
                                  f"{resumed.spec.split.subset}; a resumed run keeps its settings", params=("subset",))
            return resumed
        except BaseException:
            lock.release()
            raise
    if space is None:
        raise ConfigError("space is required: a search file, e.g. search_spaces/quick.yaml, or a built-in name "
                          "(quick, dcase)", params=("space",))
    spec = load_space(space)
    original_sha = spec.sha256
    if num_samples is not None:
        spec = with_num_samples(spec, num_samples)
    if subset is not None:
        spec = with_subset(spec, subset)
    name = name or f"{Path(space).stem}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    check_run_name(name, results_dir)
    lock = lock_run((results_dir / name).resolve(), name, new=True)
    return _Run(name=name, run_dir=lock.run_dir, spec=spec, resume=False, record=None, lock=lock,
                space_file=Path(space), space_file_sha256=original_sha)


def _resumed_run(space: Any, name: str, lock: RunLock, num_samples: int | None) -> _Run:
    run_dir = lock.run_dir
    record = read_run_record(run_dir)
    if not (run_dir / SEARCH_FILE).is_file() or record is None:
        raise NotFoundError(f"{run_dir}: no search run to resume there (no {SEARCH_FILE} and run.json)")
    if space is not None:
        given = hashlib.sha256(Path(space).read_bytes()).hexdigest() if Path(space).is_file() else None
        if given not in (record.space_file_sha256, record.space_sha256):
            raise ConfigError(f"space {space} differs from the search file run {name!r} started with "
                              f"({record.space_file}); leave it out: a resumed run keeps its own {SEARCH_FILE}",
                              params=("space",))
    spec = load_space(run_dir / SEARCH_FILE)
    if num_samples is not None and num_samples != spec.search.num_samples:
        raise ConfigError(f"num_samples {num_samples}: run {name!r} was started with {spec.search.num_samples}; "
                          "a resumed run keeps its settings", params=("num_samples",))
    return _Run(name=name, run_dir=run_dir, spec=spec, resume=True, record=record, lock=lock)


# ------------------------------------------------------------------------------------------------ 2. data


def _load_data(run: _Run, cache_dir: Path, teacher_cache: Any, dir_folder: Any = None) -> SearchData:
    return load_search_data(run.spec, cache_dir, teacher_cache, name=run.name,
                            expected_fingerprint=run.record.feature_fingerprint if run.record is not None else None,
                            dir_folder=dir_folder, dir_record=run.record.dir_bank if run.record is not None else None)


def _payload_bytes(payload: dict[str, Any]) -> int:
    """What the trial data puts in the object store (its arrays' bytes)."""
    return sum(int(getattr(v, "nbytes", 0)) for v in payload.values())


# ------------------------------------------------------------------------------------------------ 4. record


def _write_record(run: _Run, data: SearchData, cache_dir: Path, address: str | None) -> RunRecord:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if run.record is not None:
        record = run.record
        record.resumed_utc = [*record.resumed_utc, now_utc()]
        record.status = RunState.RUNNING.value
    else:
        spec = run.spec
        write_text_atomic(run.run_dir / SEARCH_FILE, spec.text)
        stamp = provenance()
        record = RunRecord(
            name=run.name,
            study_name=run.name,
            space_file=space_file_record(run.space_file),
            space_file_sha256=run.space_file_sha256,
            space_sha256=spec.sha256,
            profile=spec.profile.name,
            cache_dir=str(cache_dir.resolve()),
            feature_fingerprint=data.feature_fingerprint,
            dataset_root=data.dataset_root,
            teacher_cache_dir=str(data.teacher_dir.resolve()) if data.teacher_dir is not None else None,
            teacher_fingerprint=data.teacher_fingerprint,
            split=dataclasses.asdict(spec.split),
            n_train=len(data.payload["train_y"]),
            n_val=len(data.payload["val_y"]),
            dir_bank=data.dir_bank,
            budget=spec.budget.to_dict(),
            seed=spec.search.seed,
            num_samples=spec.search.num_samples,
            created_utc=stamp["created_utc"],
            asc_search_version=stamp["asc_search_version"],
            versions=stamp["versions"],
            address=address,
            references=[p.to_dict() for p in data.references],
        )
    record.warnings = list(data.warnings)
    write_run_record(run.run_dir, record)
    return record


# ------------------------------------------------------------------------------------------------ 5. tune


def _build_tuner(run: _Run, data: SearchData, storage_url: str, study_name: str, channel: str, sink: OnEvent,
                 stopper: Any = None, callbacks: list[Any] | None = None) -> Any:
    """A new Tuner with the searcher and ASHA, or the interrupted run's Tuner restored (with its searcher)."""
    from ray import tune

    from .channels import RetryReporter, register_sink
    from .scheduler import make_scheduler
    from .searcher import BudgetedSearcher

    register_sink(channel, sink)
    s = run.spec.search
    trainable = tune.with_resources(tune.with_parameters(train_trial, data=data.payload),
                                    {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})
    ray_path = run.run_dir / RAY_DIR
    if run.resume:
        if not tune.Tuner.can_restore(str(ray_path)):
            raise NotFoundError(f"{ray_path}: no Ray Tune experiment state to resume from")
        return tune.Tuner.restore(str(ray_path), trainable=trainable, resume_unfinished=True, resume_errored=False)
    searcher = BudgetedSearcher(run.spec, storage_url, study_name, n_classes=data.n_classes, channel=channel)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(run.spec, len(data.payload["train_y"])),
            num_samples=s.num_samples + data.n_references,  # the sampled trials + the references that train
            max_concurrent_trials=s.max_concurrent,
            trial_dirname_creator=_trial_dirname,
            # a finished trial's worker (torch + the package already imported) takes the next trial:
            # 4 quick trials 2 at a time took 22.6 s instead of 30.7 s
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=RAY_DIR,
            storage_path=str(run.run_dir),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            stop=stopper,
            callbacks=[RetryReporter(channel, s.max_failures), *(callbacks or [])],
        ),
    )


def _trial_dirname(trial: Any) -> str:
    return trial_dirname(trial.config.get("trial_id", "x"), trial.trial_id)


def _announce(run: _Run, on_event: OnEvent) -> None:
    """The ``setup`` event: the run and what it holds so far (a resumed run's counts and running trials)."""
    so_far = build_trials_table(run.run_dir)
    running = [int(i) for i in so_far.loc[so_far["status"] == Status.RUNNING, "trial_id"]]
    s = run.spec.search
    best = best_trial(so_far, run.spec.budget)  # a resumed run's best so far
    references = [r["name"] for r in (read_run_record(run.run_dir).references or []) if r["status"] == "planned"]
    emit(on_event, "setup", run_dir=str(run.run_dir), name=run.name, resume=run.resume, num_samples=s.num_samples,
         max_concurrent=s.max_concurrent, counts=status_counts(so_far), running=running, references=references,
         best=None if best is None else {"trial_id": int(best["trial_id"]),
                                         "val_macro_accuracy": float(best["val_macro_accuracy"])})


# ------------------------------------------------------------------------------------------------ 6. summarise


def _summarise(run: _Run, record: RunRecord, storage_url: str, duration_s: float, warnings: list[str],
               n_classes: int, on_event: OnEvent | None, publisher: Any) -> SearchResult:
    table = build_trials_table(run.run_dir)
    write_trials_table(run.run_dir, table)
    counts = status_counts(table)
    study = open_study(run.spec, storage_url, record.study_name)
    stop_reason = study.user_attrs.get("stop_reason")
    n_refs = sum(r.get("status") == "planned" for r in record.references or [])
    short = trained_short(table, run.spec.search.num_samples, n_refs)
    interrupted = counts[Status.RUNNING] > 0 or (short and not stop_reason)
    best = best_trial(table, run.spec.budget)
    caveats = winner_caveats(best, n_classes) if best is not None and not interrupted else []
    for message in caveats:
        warn(on_event, message)
    record.finished_utc = now_utc()
    record.status = (RunState.INTERRUPTED if interrupted else RunState.STOPPED if stop_reason else RunState.FINISHED).value
    record.counts = counts
    record.stop_reason = stop_reason
    record.warnings = list(dict.fromkeys([*warnings, *caveats]))
    write_run_record(run.run_dir, record)
    if publisher is not None:
        publisher.publish()  # the final leaderboard, front and plots, for optuna-dashboard
    if stop_reason and not interrupted:
        cls = ConfigError if study.user_attrs.get("stop_error") == "ConfigError" else BudgetError
        raise cls(f"{stop_reason} (run {run.run_dir}: {counts['trained']} trained, "
                  f"{counts[Status.REJECTED]} rejected)")
    best_row = None
    if best is not None:
        best_row = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in best.to_dict().items() if k != "config"}
    return SearchResult(run_dir=run.run_dir, name=run.name, counts=counts, best=best_row, record=record,
                        interrupted=interrupted, stop_reason=stop_reason, duration_s=duration_s,
                        margin=reference_margin(table, best, run.spec.budget) if best is not None else None,
                        warnings=record.warnings)
