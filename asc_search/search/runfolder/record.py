"""``run.json``: what produced a run, written by the search driver and read by everything after it.

Schema (one JSON object; every key is always written, ``null`` where it does not apply)::

    name, study_name          the run's name (its folder) and its Optuna study's name (the same)
    space_file                the search file the run started from (absolute path; relative to the job's working
                              folder for a run submitted with ``ray job submit --working-dir``)
    space_file_sha256         that file's sha256; space_sha256: sha256 of search.yaml (the file as run)
    profile                   the feature profile
    cache_dir                 the feature cache (absolute path) and its feature_fingerprint
    dataset_root              the data set the cache was built from
    teacher_cache_dir         the teacher cache (absolute path, or null without distillation)
    teacher_fingerprint       its teacher fingerprint
    split                     {val_fraction, seed, subset}; n_train, n_val: clips of the train and validation parts
    dir_bank                  the device impulse responses the ``dir_p`` augmentation draws from: {source ("generic"
                              or the folder), seed, profile, n_irs, fingerprint} (asc_search.data.impulses.IRBank)
    budget                    {max_param_bytes, param_dtype, max_macs}
    seed, num_samples         search.seed and the trained trials asked for
    created_utc, asc_search_version, versions    the provenance stamp (asc_search._io.provenance)
    status                    running | finished | interrupted | stopped (:class:`RunState`)
    finished_utc              when the driver last ended; resumed_utc: [when each resume started]
    address                   the Ray cluster joined (null: a local Ray)
    counts                    proposals per status when the driver ended (status_counts)
    stop_reason               why the searcher stopped proposing early, if it did
    references                the reference arms as planned when the run started: [{name, status (planned |
                              over_budget | needs_teacher), message, base_channels, params, param_bytes, macs,
                              distill, epochs}]
    warnings                  what a user should know before trusting the winner (asc_search.search.caveats),
                              as of the driver's last end

Keys this version does not know are kept as they were (``extra``) and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..._io import write_json_atomic
from ...config import Budget
from ...errors import ConfigError, DataError
from .layout import RUN_FILE, SEARCH_FILE, RunState


@dataclass
class RunRecord:
    """The content of ``run.json`` (see the module docstring for each key)."""

    name: str
    study_name: str
    space_file: str | None = None
    space_file_sha256: str | None = None
    space_sha256: str | None = None
    profile: str | None = None
    cache_dir: str | None = None
    feature_fingerprint: str | None = None
    dataset_root: str | None = None
    teacher_cache_dir: str | None = None
    teacher_fingerprint: str | None = None
    split: dict[str, Any] | None = None
    n_train: int | None = None
    n_val: int | None = None
    dir_bank: dict[str, Any] | None = None
    budget: dict[str, Any] | None = None
    seed: int | None = None
    num_samples: int | None = None
    created_utc: str | None = None
    asc_search_version: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    finished_utc: str | None = None
    status: str = RunState.RUNNING.value
    address: str | None = None
    resumed_utc: list[str] = field(default_factory=list)
    counts: dict[str, int] | None = None
    stop_reason: str | None = None
    references: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a newer version, kept as they were

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})


def space_file_record(path: str | os.PathLike[str]) -> str:
    """``space_file`` for run.json: the search file's absolute path; inside ``ray job submit --working-dir`` (the
    driver runs in Ray's temporary copy of that folder, deleted after the job) its path relative to that folder."""
    resolved = Path(path).resolve()
    parts = resolved.parts
    if "working_dir_files" in parts and "runtime_resources" in parts:
        i = parts.index("working_dir_files")
        if len(parts) > i + 2:
            return str(Path(*parts[i + 2:]))
    return str(resolved)


def read_run_record(run_dir: str | os.PathLike[str]) -> RunRecord | None:
    """The run's ``run.json``; None when the folder has none (a run folder made by hand). A file that is not a
    run record is a DataError naming it."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not isinstance(data.get("study_name"), str):
        raise DataError(f"{path} is not a run record: expected a JSON object with the run's name and study_name")
    return RunRecord.from_dict(data)


def write_run_record(run_dir: str | os.PathLike[str], record: RunRecord) -> Path:
    """Write ``run.json`` atomically."""
    return write_json_atomic(Path(run_dir) / RUN_FILE, record.to_dict())


def study_name(run_dir: str | os.PathLike[str]) -> str:
    """The name of the run's Optuna study: run.json's ``study_name``; a folder without run.json names its study
    after itself (as the driver does)."""
    record = read_run_record(run_dir)
    return record.study_name if record is not None else Path(run_dir).resolve().name


def is_running(run_dir: str | os.PathLike[str]) -> bool:
    """Whether run.json says the driver is running (or was killed while it ran)."""
    record = read_run_record(run_dir)
    return record is not None and record.status == RunState.RUNNING


def run_budget(run_dir: str | os.PathLike[str]) -> Budget | None:
    """The budget in the run's ``search.yaml`` (its ``budget:`` section); None when the run has no search file."""
    import yaml

    path = Path(run_dir) / SEARCH_FILE
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    section = data.get("budget") if isinstance(data, dict) else None
    if section is None:
        return None
    if not isinstance(section, dict) or set(section) - {f.name for f in dataclasses.fields(Budget)}:
        raise ConfigError(f"{path}: budget must be a mapping of max_param_bytes, param_dtype, max_macs")
    try:
        return Budget(**section)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
