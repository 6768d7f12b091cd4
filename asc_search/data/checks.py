"""Checks on a data set's table that are worth a warning, not an error (the data can be used, but the user should
look): used by ``features`` when it reads the data set and by the search when it reads the feature cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["MIN_CLASS_CLIPS", "label_problems"]

#: A class with fewer clips than this in the whole data set is most likely a label typo.
MIN_CLASS_CLIPS = 3


def label_problems(table: Any, labels: Sequence[str]) -> list[str]:
    """One message per class that looks like a label typo (e.g. made by ``--labels auto`` from a misspelt scene in
    meta.csv): fewer than :data:`MIN_CLASS_CLIPS` clips in all, or clips in only one of the train and test splits.
    ``table``: the data set's table (``scene_label``, ``split``: train / val / test; val counts as train)."""
    split = table["split"].astype(str).replace({"val": "train"})
    counts = table.assign(split=split).groupby(["scene_label", "split"]).size()
    out = []
    for label in labels:
        train = int(counts.get((label, "train"), 0))
        test = int(counts.get((label, "test"), 0))
        where = f"{train} train, {test} test"
        if train + test < MIN_CLASS_CLIPS:
            out.append(f"class {label!r} has {train + test} clip(s) ({where}), fewer than {MIN_CLASS_CLIPS}: a likely "
                       "label typo in meta.csv (check the labels, e.g. those --labels auto derived)")
        elif not train or not test:
            only = "train" if train else "test"
            out.append(f"class {label!r} exists only in the {only} split ({where}): a likely label typo in meta.csv, "
                       "or a class the model can never learn or be scored on")
    return out
