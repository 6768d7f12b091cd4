"""Step 2 of a search: the data its trials train on (the feature cache's train and validation rows, the teacher
targets when anything distils), what it came from, the reference arms costed and the caveats about the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CacheError, ConfigError
from .caveats import data_caveats
from .references import ReferencePlan, plan_references
from .spec import SearchSpec
from .trainable import prepare_trial_data

__all__ = ["SearchData", "load_search_data"]


@dataclass
class SearchData:
    """The trial data of a search and what it came from."""

    payload: dict[str, Any]
    n_classes: int
    feature_fingerprint: str
    dataset_root: str | None
    teacher_dir: Path | None
    teacher_fingerprint: str | None
    references: list[ReferencePlan]  # every reference, costed; "planned" ones train
    warnings: list[str]  # about the data and the references (caveats.data_caveats, the plans' messages)
    dir_bank: dict[str, Any] | None = None  # the device impulse-response bank's record (IRBank.to_record())

    @property
    def n_references(self) -> int:
        return sum(p.status == "planned" for p in self.references)


def load_search_data(spec: SearchSpec, cache_dir: Path, teacher_cache: Any, name: str,
                     expected_fingerprint: str | None = None, dir_folder: Any = None,
                     dir_record: dict[str, Any] | None = None) -> SearchData:
    """The feature cache (of the search file's profile; of ``expected_fingerprint`` when resuming run ``name``) and,
    when anything distils, its teacher cache, as the trials' data (:func:`prepare_trial_data`); the reference arms
    costed and the data's caveats. The ``dir_p`` augmentation's impulse responses: the bank a resumed run recorded
    (``dir_record``), else the WAV files of ``dir_folder``, else the built-in generic bank."""
    from ..data.cache import load_features
    from ..data.impulses import ir_bank_from_record

    features = load_features(cache_dir)
    fp = features.profile
    if fp.name != spec.profile.name or tuple(fp.shape) != tuple(spec.profile.shape):
        raise ConfigError(
            f"{spec.source}: profile: the search file is for feature profile {spec.profile.name!r} "
            f"({spec.profile.shape[0]} x {spec.profile.shape[1]}) but the feature cache {features.cache_dir} holds "
            f"{fp.name!r} ({fp.shape[0]} x {fp.shape[1]}); build a feature cache of profile {spec.profile.name!r} "
            f"or use a search file for {fp.name!r}"
        )
    if expected_fingerprint not in (None, features.fingerprint):
        raise CacheError(f"{cache_dir}: feature fingerprint {features.fingerprint} differs from {expected_fingerprint} that run "
                         f"{name!r} started with; resume against the same cache")
    teacher = teacher_dir = None
    if spec.needs_teacher or any(r.needs_teacher for r in spec.references):
        from ..data.teacher_cache import default_teacher_cache_dir, load_teacher_targets

        teacher_dir = Path(teacher_cache) if teacher_cache is not None else default_teacher_cache_dir(cache_dir)
        if not teacher_dir.exists() and (spec.needs_teacher or teacher_cache is not None):
            raise CacheError(f"{teacher_dir}: no teacher cache there, and {spec.source} searches distillation "
                             "weights; embed the teacher first, or give teacher_cache", params=("teacher_cache",))
        teacher = load_teacher_targets(features, teacher_dir) if teacher_dir.exists() else None
        teacher_dir = teacher_dir if teacher is not None else None  # only references distil: they are skipped
    bank = ir_bank_from_record(dir_record, spec.profile, dir_folder)  # no record: dir_folder's, or the generic bank
    payload = prepare_trial_data(features, teacher, spec, bank.log_gains)
    plans = plan_references(spec, len(features.labels), has_teacher=teacher is not None)
    data = SearchData(
        payload=payload,
        n_classes=len(features.labels),
        feature_fingerprint=features.fingerprint,
        dataset_root=(features.meta or {}).get("dataset_root"),
        teacher_dir=teacher_dir,
        teacher_fingerprint=teacher.meta.get("teacher_fingerprint") if teacher is not None else None,
        references=plans,
        warnings=data_caveats(spec, features.table, features.labels, payload)
        + [p.message for p in plans if p.message],
        dir_bank=bank.to_record(),
    )
    # The trials get their own copies (``payload``): drop the whole cache's tensors before the copies go to the object
    # store, so the driver's peak memory is about one cache, not two (the full DCASE cache is ~7.7 GB at float16).
    features.x = None
    return data
