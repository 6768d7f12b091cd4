"""Warnings a user needs before trusting a search's winner: one function per kind, each returning its messages
(one line each; never an error). The driver sends them as ``warning`` events (the CLI prints them yellow) and keeps
them in run.json (``warnings``); export repeats them in its record.

* :func:`winner_near_chance`: the winner's validation macro accuracy is within 5 points of chance (1 / classes);
* :func:`winner_is_reference`: the winner is a reference arm (the search found nothing better);
* :func:`small_validation_classes`: the validation split has fewer than 10 clips for some class;
* :func:`few_steps_per_epoch`: an epoch has fewer than 20 optimiser steps while ASHA's grace period counts epochs;
* :func:`teacher_near_chance`: the teacher's logits score near chance on the validation split (distilling from it
  cannot help);
* :func:`label_typos`: a class with fewer than 3 clips, or present in only one split (a likely label typo, e.g. from
  ``--labels auto``): :func:`asc_search.data.tau.label_anomalies` on the feature cache's table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..data.tau import label_anomalies
from .references import REFERENCE
from .spec import SearchSpec

__all__ = [
    "CHANCE_MARGIN",
    "MIN_VAL_CLIPS",
    "MIN_STEPS_PER_EPOCH",
    "winner_near_chance",
    "winner_is_reference",
    "small_validation_classes",
    "few_steps_per_epoch",
    "teacher_near_chance",
    "label_typos",
    "winner_caveats",
    "data_caveats",
]

CHANCE_MARGIN = 0.05  # "near chance": within 5 points of 1 / classes
MIN_VAL_CLIPS = 10  # per class in the validation split
MIN_STEPS_PER_EPOCH = 20  # optimiser steps per epoch below which grace periods in epochs mislead


def _near_chance(accuracy: float, n_classes: int) -> bool:
    """Whether ``accuracy`` is within :data:`CHANCE_MARGIN` of chance (1 / ``n_classes``)."""
    return accuracy - 1.0 / n_classes < CHANCE_MARGIN


def winner_near_chance(val_macro_accuracy: float | None, n_classes: int, who: str = "the winner") -> list[str]:
    if val_macro_accuracy is None or n_classes < 1 or not _near_chance(val_macro_accuracy, n_classes):
        return []
    chance = 1.0 / n_classes
    return [f"{who}'s validation macro accuracy {val_macro_accuracy:.3f} is within {CHANCE_MARGIN * 100:.0f} points of "
            f"chance ({chance:.3f} = 1/{n_classes} classes): it has learnt next to nothing; check the data, "
            "train longer (train.min_steps) or compare with `asc-search compare`"]


def winner_is_reference(row: Mapping[str, Any] | None) -> list[str]:
    if row is None or row.get("kind") != REFERENCE:
        return []
    return [f"the winner is reference {row.get('reference')!r} (trial {row.get('trial_id')}): no sampled proposal "
            "beat it on validation, the search found nothing better"]


def small_validation_classes(val_labels: Sequence[int] | np.ndarray, labels: Sequence[str]) -> list[str]:
    counts = np.bincount(np.asarray(val_labels, dtype=np.int64), minlength=len(labels))
    small = [(labels[i], int(n)) for i, n in enumerate(counts[: len(labels)]) if n < MIN_VAL_CLIPS]
    if not small:
        return []
    shown = ", ".join(f"{name} {n}" for name, n in small[:10]) + (" ..." if len(small) > 10 else "")
    return [f"the validation split has fewer than {MIN_VAL_CLIPS} clips for {len(small)} class(es) ({shown}): "
            "validation accuracies (and the winner chosen by them) are noisy; use more data or a larger "
            "split.val_fraction"]


def few_steps_per_epoch(spec: SearchSpec, n_train: int) -> list[str]:
    from ..training.config import steps_per_epoch

    s = spec.search
    if not s.asha_enabled or s.grace_unit != "epochs":
        return []
    largest = max(int(b) for b in spec.train_values("batch_size"))
    steps = steps_per_epoch(n_train, largest)
    if steps >= MIN_STEPS_PER_EPOCH:
        return []
    return [f"an epoch of the {n_train} training clips is only {steps} optimiser step(s) at batch size {largest}, "
            f"while ASHA's grace period counts epochs ({s.grace_period}): trials are stopped after very little "
            "training; give search.asha.unit: steps (grace_period in steps) and/or train.min_steps"]


def teacher_near_chance(val_logits: Any, val_labels: Any, n_classes: int) -> list[str]:
    import torch

    from ..training.metrics import macro_accuracy

    if val_logits is None or not len(val_labels):
        return []
    logits = torch.from_numpy(np.array(val_logits, dtype=np.float32))  # a copy: object-store arrays are read-only
    acc = macro_accuracy(logits, torch.from_numpy(np.array(val_labels, dtype=np.int64)), n_classes)
    if not _near_chance(acc, n_classes):
        return []
    chance = 1.0 / n_classes
    return [f"the teacher's logits score {acc:.3f} macro accuracy on the validation split, within "
            f"{CHANCE_MARGIN * 100:.0f} points of chance ({chance:.3f}): distilling from this teacher cannot help; "
            "train a better teacher, or search without distillation"]


def label_typos(table: Any, labels: Sequence[str]) -> list[str]:
    """One line per class of ``labels`` that looks like a label typo in ``table`` (a feature cache's table)."""
    present = set(table["scene_label"].unique())
    declared = [label for label in labels if label in present]  # in the cache's order; a class without clips is no typo
    return [f"{line}: a likely label typo in meta.csv (a class the model can hardly learn or be scored on)"
            for line in label_anomalies(table, declared)]


def winner_caveats(best: Mapping[str, Any] | None, n_classes: int) -> list[str]:
    """The warnings about a run's winner (``best``: its trials-table row)."""
    if best is None:
        return []
    return winner_near_chance(best.get("val_macro_accuracy"), n_classes) + winner_is_reference(best)


def data_caveats(spec: SearchSpec, table: Any, labels: Sequence[str], data: Mapping[str, Any]) -> list[str]:
    """The warnings about a search's data: labels (the feature cache's ``table``), the validation split, steps per
    epoch and the teacher (``data``: the trial data of :func:`asc_search.search.trainable.prepare_trial_data`)."""
    out = label_typos(table, labels)
    out += small_validation_classes(data["val_y"], labels)
    out += few_steps_per_epoch(spec, len(data["train_y"]))
    out += teacher_near_chance(data.get("val_logits"), data["val_y"], len(labels))
    return out
