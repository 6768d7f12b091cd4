"""``asc-search compare``: the reference arms (and exported students, retrained with their own recipes) trained on
any feature cache with several seeds, side by side in one table.

Each row is one configuration ("arm"): params, parameter bytes, MACs and whether it fits the budget (costed as the
search costs proposals), then validation, test and unseen-device test macro accuracy as mean ± sd over the seeds,
and the paired difference to the first row (per seed, then mean ± sd). Rows: the search file's references
(:mod:`asc_search.search.references`; their training settings follow its rule) in order, then each export given
(its student, distillation and training settings from its student.yaml). Every run goes through
:func:`asc_search.training.seeds.train_seeds`: trained on the train part, its epoch chosen on the validation part
(both carved as the search carves them), the test split scored once per seed; seeds run one after another on all
cores. The bench's accuracy table is this function run on the demo's cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._progress import OnEvent, log, warn
from .errors import CacheError, ConfigError

__all__ = ["Arm", "reference_arms", "export_arms", "compare_arms", "compare", "default_space"]


@dataclass(frozen=True)
class Arm:
    """One configuration to train over seeds."""

    name: str
    kind: str  # "reference" | "export"
    student: Any  # StudentConfig
    distill: Any  # DistillConfig
    train: Any  # TrainConfig
    source: str = ""  # where it came from (the search file, or the export folder)


def default_space(profile: str) -> Path:
    """The built-in search file of a feature profile (its budget, split and references)."""
    from .search.space import builtin_spaces, resolve_space

    if profile not in builtin_spaces():
        raise ConfigError(f"no built-in search file for profile {profile!r} (built-in: {', '.join(builtin_spaces())}); "
                          "give space: a search file for it", params=("space",))
    return resolve_space(profile)


def reference_arms(spec: Any, n_classes: int, has_teacher: bool, on_event: OnEvent | None = None) -> list[Arm]:
    """The search file's references as arms (a reference that distils is skipped, with a warning, without a
    teacher cache)."""
    from .search.references import reference_proposal

    arms = []
    for ref in spec.references:
        if ref.needs_teacher and not has_teacher:
            warn(on_event, f"reference {ref.name!r} distils from the teacher but there is no teacher cache: skipped")
            continue
        p = reference_proposal(spec, ref, n_classes)
        arms.append(Arm(ref.name, "reference", p.student, p.distill, p.train, source=spec.source))
    return arms


def export_arms(export_dirs: Sequence[str | os.PathLike[str]], labels: Sequence[str], profile: str) -> list[Arm]:
    """The students of export folders as arms (their recorded student, distillation and training settings);
    an export for other labels or another feature profile is a ConfigError."""
    from .export.folder import read_student_yaml
    from .models.student import StudentConfig
    from .training.config import TrainConfig
    from .training.losses import DistillConfig

    arms = []
    for d in export_dirs:
        record = read_student_yaml(Path(d))
        model = record["model"]
        if list(model.get("labels") or []) != list(labels) or model["feature_profile"]["name"] != profile:
            raise ConfigError(f"export {d} is for profile {model['feature_profile']['name']!r} and labels "
                              f"{model.get('labels')}; the feature cache has {profile!r} and {list(labels)}",
                              params=("exports",))
        prov = record.get("provenance") or {}
        name = f"{Path(d).name} (trial {prov.get('trial_id')} of {prov.get('run')})"
        train = TrainConfig.from_dict(dict(record["training"])) if record.get("training") else TrainConfig()
        arms.append(Arm(name, "export", StudentConfig.from_dict(model["config"]),
                        DistillConfig.from_dict(dict(record.get("distillation") or {})), train, source=str(d)))
    return arms


def compare_arms(arms: Sequence[Arm], parts: dict[str, Any], seeds: Sequence[int], spec: Any, labels: Sequence[str],
                 embedding_shape: Sequence[int] | None = None, device: str = "auto", threads: int | None = None,
                 on_event: OnEvent | None = None, dir_log_gains: Any = None) -> list[dict[str, Any]]:
    """Train every arm over ``seeds`` (:func:`~asc_search.training.seeds.train_seeds`) and summarise: one row per
    arm, with paired differences to the first arm and, for arms that are not references, to the best reference
    (highest mean validation macro accuracy). ``dir_log_gains``: the device impulse responses of arms that train
    with them (``train.dir_p`` > 0)."""
    from .training.seeds import SEED_METRICS, paired, summarise_runs, train_seeds

    rows = []
    for arm in arms:
        cost = spec.cost(arm.student)
        log(on_event, f"{arm.name}: {cost.params:,} params, {cost.macs:,} MACs, {len(seeds)} seed(s)")
        runs = train_seeds(arm.student, arm.distill, arm.train, parts, seeds, labels=labels,
                           embedding_shape=embedding_shape, device=device, threads=threads, task=arm.name,
                           dir_log_gains=dir_log_gains, on_event=on_event)
        rows.append({"name": arm.name, "kind": arm.kind, "source": arm.source, "params": cost.params,
                     "param_bytes": cost.param_bytes, "param_dtype": spec.budget.param_dtype, "macs": cost.macs,
                     "within_budget": cost.passed, "distill": arm.distill.to_dict(),
                     "train": {k: getattr(arm.train, k) for k in ("epochs", "min_steps", "lr", "weight_decay",
                                                                    "batch_size")},
                     "runs": runs, "summary": summarise_runs(runs)})
    if not rows:
        return rows
    refs = [r for r in rows if r["kind"] == "reference"]
    best_ref = max(refs, key=lambda r: r["summary"]["val_macro_accuracy"]["mean"] or -1.0) if refs else None
    for row in rows:
        row["paired_vs_first"] = {m: paired(row["runs"], rows[0]["runs"], m) for m in SEED_METRICS}
        if best_ref is not None and row["kind"] != "reference":
            row["best_reference"] = best_ref["name"]
            row["paired_vs_best_reference"] = {m: paired(row["runs"], best_ref["runs"], m) for m in SEED_METRICS}
    return rows


def compare(
    cache_dir: str | os.PathLike[str],
    *,
    teacher_cache: str | os.PathLike[str] | None = None,
    space: str | os.PathLike[str] | None = None,
    seeds: int = 3,
    first_seed: int = 0,
    exports: Sequence[str | os.PathLike[str]] = (),
    references: bool = True,
    device: str = "auto",
    threads: int | None = None,
    dir_folder: str | os.PathLike[str] | None = None,
    on_event: OnEvent | None = None,
) -> dict[str, Any]:
    """Compare the references of ``space`` (default: the built-in search file of the cache's profile) and the
    students of ``exports`` on ``cache_dir`` over ``seeds`` seeds (``first_seed`` ...), ``threads`` torch threads
    per run (default: all cores); see the module docstring. Arms that train with device impulse responses
    (``train.dir_p`` > 0) draw them from the WAV files of ``dir_folder`` (default: the built-in generic bank).
    Returns one JSON-ready dict (``rows`` in order; ``warnings``)."""
    from .data.cache import load_features
    from .data.teacher_cache import default_teacher_cache_dir, load_teacher_targets
    from .export.inputs import split_tensors
    from .search.space import load_space

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be a positive integer, got {seeds!r}", params=("seeds",))
    if not references and not exports:
        raise ConfigError("nothing to compare: give exports, or keep the references", params=("exports",))
    messages: list[str] = []

    def _warn(event: str, info: dict[str, Any]) -> None:
        if event == "warning":
            messages.append(info["message"])
        if on_event is not None:
            on_event(event, info)

    features = load_features(cache_dir)
    spec = load_space(space if space is not None else default_space(features.profile.name))
    if spec.profile.name != features.profile.name:
        raise ConfigError(f"{spec.source} is for profile {spec.profile.name!r} but {cache_dir} holds "
                          f"{features.profile.name!r}", params=("space",))
    teacher_dir = Path(teacher_cache) if teacher_cache is not None else default_teacher_cache_dir(cache_dir)
    if teacher_cache is not None and not teacher_dir.exists():
        raise CacheError(f"{teacher_dir}: no teacher cache there", params=("teacher_cache",))
    targets = load_teacher_targets(features, teacher_dir) if teacher_dir.exists() else None
    labels = tuple(features.labels)
    arms = reference_arms(spec, len(labels), targets is not None, _warn) if references else []
    arms += export_arms(exports, labels, features.profile.name)
    if targets is None and any(a.distill.uses_teacher_logits or a.distill.uses_embeddings for a in arms):
        raise CacheError(f"{teacher_dir}: no teacher cache, and an export given distils from the teacher; give "
                         "teacher_cache", params=("teacher_cache",))
    parts = split_tensors(features, spec.split, targets)
    features.x = None  # the parts are copied out
    bank = None
    if any(a.train.dir_p > 0 for a in arms):
        from .data.impulses import build_ir_bank

        bank = build_ir_bank(features.profile, dir_folder)
    seed_list = list(range(first_seed, first_seed + seeds))
    log(on_event, f"{len(arms)} configuration(s) x {seeds} seed(s), one run after another")
    rows = compare_arms(arms, parts, seed_list, spec, labels,
                        targets.embedding_shape if targets is not None else None, device, threads, on_event,
                        bank.log_gains if bank is not None else None)
    return {
        "cache_dir": str(Path(cache_dir).resolve()),
        "space": spec.source,
        "profile": features.profile.name,
        "budget": spec.budget.to_dict(),
        "split_sizes": {k: len(v[0]) for k, v in parts.items()},
        "seeds": seed_list,
        "threads": int(threads or os.cpu_count() or 1),
        "teacher_cache": str(teacher_dir) if targets is not None else None,
        "dir_bank": bank.to_record() if bank is not None else None,
        "rows": rows,
        "warnings": messages,
    }
