"""The TAU Urban Acoustic Scenes layout (DCASE Task 1) read into one table.

Layout (see shared/reference/dcase-task1.md)::

    ROOT/meta.csv                          TAB-separated: filename scene_label identifier source_label
    ROOT/evaluation_setup/fold1_train.csv  TAB-separated: filename scene_label
    ROOT/evaluation_setup/fold1_evaluate.csv  filename scene_label
    ROOT/evaluation_setup/fold1_test.csv   filename
    ROOT/audio/<scene>-<city>-<location>-<segment>-<index>-<device>.wav
    [ROOT/split_setup/split{5,10,25,50,100}.csv or ROOT/split{...}.csv]   DCASE 2024 training subsets (optional)

The table has one row per clip of the fold-1 setup (train clips, then test clips, each in meta.csv order): clips in
meta.csv but in no fold file are not part of the task's setup and are left out.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import fingerprint_file, fingerprint_json
from ..config import DCASE_LABELS, SUBSET_PERCENTS, SplitConfig
from ..errors import ConfigError, DataError, quote

__all__ = [
    "RARE_LABEL_CLIPS",
    "label_anomalies",
    "derived_label_anomalies",
    "check_label_anomalies",
    "dataset_fingerprint",
    "META_COLUMNS",
    "TABLE_COLUMNS",
    "SUBSET_PERCENTS",
    "resolve_labels",
    "read_meta",
    "read_tau",
    "carve_validation",
    "select_subset",
]

#: meta.csv's header, in order.
META_COLUMNS = ("filename", "scene_label", "identifier", "source_label")
#: Columns of :func:`read_tau`'s table (``subset_pct`` is added when DCASE 2024 subset files exist).
TABLE_COLUMNS = ("filename", "scene_label", "label", "identifier", "city", "location", "device", "split")

_AUTO_LABELS = ("auto", "derive", "derived")
#: A label with fewer clips than this (or in one split only) looks like a typo (:func:`label_anomalies`).
RARE_LABEL_CLIPS = 3


def _read_tsv(path: Path, expected: Sequence[str], what: str) -> pd.DataFrame:
    """A TAB-separated file with a header holding at least ``expected``; every value read as str."""
    if not path.is_file():
        raise DataError(f"{path}: missing; expected the {what} (TAB-separated, header {' '.join(expected)})")
    try:
        frame = pd.read_csv(
            path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE, engine="c"
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty; expected the {what} with header {' '.join(expected)}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a TAB-separated table ({exc}); expected header {' '.join(expected)}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        found = " ".join(frame.columns) if len(frame.columns) else "nothing"
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected a TAB-separated header "
            f"{' '.join(expected)}, found {found}"
        )
    for column in expected:
        values = frame[column].str.strip()
        empty = np.flatnonzero((values == "").to_numpy())
        if len(empty):
            raise DataError(f"{path} row {int(empty[0]) + 2}: empty {column!r}; expected a value in every row")
        frame[column] = values
    return frame


def _first_duplicate(values: pd.Series) -> int | None:
    dup = np.flatnonzero(values.duplicated().to_numpy())
    return int(dup[0]) if len(dup) else None


def resolve_labels(
    labels: str | Sequence[str] | None = None, meta_labels: Iterable[str] | None = None
) -> tuple[str, ...]:
    """Decide the label tuple (label index = position).

    - ``None``: the 10 DCASE scenes in the organisers' order (:data:`DCASE_LABELS`).
    - ``"auto"``: the distinct labels of ``meta_labels`` (meta.csv's scene_label column), sorted.
    - a comma-separated string or a sequence of names: exactly those, in that order (declared labels).
    """
    if labels is None:
        return DCASE_LABELS
    if isinstance(labels, str):
        if labels.strip().lower() in _AUTO_LABELS:
            if meta_labels is None:
                raise ConfigError("labels 'auto' needs the data set's meta.csv labels to derive them from")
            derived = tuple(sorted({str(v) for v in meta_labels}))
            if not derived:
                raise ConfigError("labels 'auto': meta.csv holds no scene labels to derive the label set from")
            return derived
        labels = [part for part in labels.split(",")]
    out = tuple(str(v).strip() for v in labels)
    if not out or any(not v for v in out):
        raise ConfigError(f"labels must be non-empty names, got {list(labels)!r}")
    if len(set(out)) != len(out):
        dup = sorted({v for v in out if out.count(v) > 1})
        raise ConfigError(f"labels must be distinct; repeated: {', '.join(dup)}")
    if len(out) < 2:
        raise ConfigError(f"a classifier needs at least 2 labels, got {list(out)}")
    return out


def read_meta(root: str | os.PathLike) -> pd.DataFrame:
    """meta.csv as a table (filename, scene_label, identifier, source_label), checked row by row."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data set root not found; expected a folder holding meta.csv, audio/ and evaluation_setup/")
    meta_path = root / "meta.csv"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: missing; expected the TAU meta.csv (TAB-separated, header {' '.join(META_COLUMNS)})")
    meta = _read_tsv(meta_path, META_COLUMNS, "data set's meta.csv")
    if meta.empty:
        raise DataError(f"{meta_path}: holds no clips; expected one row per audio file")
    dup = _first_duplicate(meta["filename"])
    if dup is not None:
        raise DataError(f"{meta_path} row {dup + 2}: filename {meta['filename'].iat[dup]!r} listed twice")
    return meta[list(META_COLUMNS)]


def label_anomalies(table: pd.DataFrame, declared: Sequence[str] | None = None) -> list[str]:
    """Labels that look like typos, one line each: fewer than :data:`RARE_LABEL_CLIPS` clips, or clips in one split
    only (a model cannot learn a class it never trains on, nor be scored on one it is never tested on). Each line
    names the label, its clips (the first three filenames) and the nearest other label (difflib), e.g.
    ``label 'industy': 1 clip (audio/industy-x.wav), only in train; did you mean 'industry'?``. ``table``: a
    :func:`read_tau` table or a feature cache's table (``scene_label``, ``split``, ``filename``). ``declared``
    (default: the table's ``attrs["labels"]``, when set): the labels in their order, a declared label without any
    clip included. Empty when nothing looks wrong."""
    import difflib

    declared = table.attrs.get("labels", ()) if declared is None else declared
    labels = list(dict.fromkeys([*declared, *sorted(table["scene_label"].unique())]))
    split = table["split"].replace({"val": "train"}) if "split" in table.columns else None
    lines = []
    for label in labels:
        rows = table[table["scene_label"] == label]
        splits = sorted(set(split[rows.index])) if split is not None and len(rows) else []
        rare = len(rows) < RARE_LABEL_CLIPS
        one_split = split is not None and len(rows) and len(splits) == 1 and split.nunique() > 1
        if not (rare or one_split):
            continue
        files = rows["filename"].astype(str).tolist()
        shown = ", ".join(files[:3]) + (f", ... ({len(files)} in all)" if len(files) > 3 else "")
        what = [f"{len(rows)} clip{'s' if len(rows) != 1 else ''}" + (f" ({shown})" if files else "")]
        if one_split:
            what.append(f"only in {splits[0]}")
        near = difflib.get_close_matches(label, [other for other in labels if other != label], n=1, cutoff=0.6)
        hint = f"; did you mean {quote(near[0], 80)}?" if near else ""
        lines.append(f"label {quote(label, 80)}: {', '.join(what)}{hint}")
    return lines


def derived_label_anomalies(table: pd.DataFrame, labels: str | Sequence[str] | None) -> list[str]:
    """:func:`label_anomalies` when ``labels`` is "auto" (derived from meta.csv, where a typo would silently become
    a class); empty for declared labels, which are the user's own choice."""
    if not (isinstance(labels, str) and labels.strip().lower() in _AUTO_LABELS):
        return []
    return label_anomalies(table)


def check_label_anomalies(table: pd.DataFrame, labels: str | Sequence[str] | None) -> None:
    """A DataError listing :func:`derived_label_anomalies`, when there are any."""
    problems = derived_label_anomalies(table, labels)
    if problems:
        raise DataError(
            f"meta.csv: {len(problems)} derived label(s) look like typos: "
            + "; ".join(problems[:5]) + (f"; ... and {len(problems) - 5} more" if len(problems) > 5 else "")
            + "; fix meta.csv, declare the label set with labels a,b,c instead of 'auto', or pass allow_rare_labels "
            "to keep them", params=("labels", "allow_rare_labels"),
        )


def dataset_fingerprint(root: Path, table, meta_rows: Sequence[int]) -> tuple[str, int]:
    """Fingerprint of a data set: content of meta.csv, fold and subset files + (name, size, mtime) of every clip.

    Also checks every clip's file exists (one DataError naming every missing one and its meta.csv row). Returns
    (fingerprint, bytes).
    """
    listing = []
    for name in ("meta.csv", "evaluation_setup/fold1_train.csv", "evaluation_setup/fold1_evaluate.csv",
                 "evaluation_setup/fold1_test.csv"):
        path = root / name
        listing.append((name, fingerprint_file(path) if path.is_file() else None))
    for folder in ("", "split_setup/", "evaluation_setup/"):
        for pct in (5, 10, 25, 50, 100):
            path = root / f"{folder}split{pct}.csv"
            if path.is_file():
                listing.append((str(path.relative_to(root)), fingerprint_file(path)))
    stats = []
    total = 0
    missing = []
    for filename, row in zip(table["filename"].tolist(), meta_rows):
        path = root / filename
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            missing.append(DataError(f"{path}: audio file missing (meta.csv row {row}); expected a WAV file"))
            continue
        stats.append((filename, st.st_size, st.st_mtime_ns))
        total += st.st_size
    if missing:
        from .audio import problems_error

        raise problems_error(missing)
    return fingerprint_json({"files": listing, "audio": stats}), total


def _split_file(root: Path, percent: int) -> Path | None:
    for candidate in (
        root / "split_setup" / f"split{percent}.csv",
        root / f"split{percent}.csv",
        root / "evaluation_setup" / f"split{percent}.csv",
    ):
        if candidate.is_file():
            return candidate
    return None


def read_tau(root: str | os.PathLike, labels: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Read a TAU-layout data set into one table, one row per clip of the fold-1 setup.

    Columns: filename (as in meta.csv, e.g. ``audio/x.wav``), scene_label, label (int index into the resolved
    labels), identifier, city, location, device, split (``"train"`` | ``"test"``), and ``subset_pct`` (the smallest
    DCASE 2024 subset holding the clip, 5/10/25/50/100; <NA> for clips in none) when subset files exist.
    The resolved label tuple is in ``table.attrs["labels"]``. Errors name the file and row at fault.
    """
    root = Path(root)
    meta = read_meta(root)
    meta_path = root / "meta.csv"
    label_tuple = resolve_labels(labels, meta["scene_label"].unique())
    label_index = {name: i for i, name in enumerate(label_tuple)}
    unknown = np.flatnonzero(~meta["scene_label"].isin(label_index).to_numpy())
    if len(unknown):
        i = int(unknown[0])
        declared = "the 10 DCASE scenes" if labels is None else "the declared labels"
        raise DataError(
            f"{meta_path} row {i + 2}: scene_label {meta['scene_label'].iat[i]!r} is not one of {declared} "
            f"({', '.join(label_tuple)}); declare the data set's labels (--labels a,b,c) or derive them (--labels auto)"
        )

    setup = root / "evaluation_setup"
    if not setup.is_dir():
        raise DataError(f"{setup}: missing; expected the folder with fold1_train.csv, fold1_evaluate.csv, fold1_test.csv")
    train = _read_tsv(setup / "fold1_train.csv", ("filename", "scene_label"), "fold-1 train list")
    evaluate_path = setup / "fold1_evaluate.csv"
    test_path = setup / "fold1_test.csv"
    if evaluate_path.is_file():
        test = _read_tsv(evaluate_path, ("filename", "scene_label"), "fold-1 evaluation list")
        test_source = evaluate_path
    else:
        test = _read_tsv(test_path, ("filename",), "fold-1 test list")
        test_source = test_path
    if test_path.is_file() and test_source is evaluate_path:
        only_names = _read_tsv(test_path, ("filename",), "fold-1 test list")
        _check_in(only_names, set(test["filename"]), test_path, f"{evaluate_path.name}")

    position = pd.Series(np.arange(len(meta)), index=meta["filename"].to_numpy())
    for frame, path in ((train, setup / "fold1_train.csv"), (test, test_source)):
        dup = _first_duplicate(frame["filename"])
        if dup is not None:
            raise DataError(f"{path} row {dup + 2}: filename {frame['filename'].iat[dup]!r} listed twice")
        _check_in(frame, position.index, path, "meta.csv")
        if "scene_label" in frame.columns:
            meta_scene = meta["scene_label"].to_numpy()[position.loc[frame["filename"]].to_numpy()]
            bad = np.flatnonzero(frame["scene_label"].to_numpy() != meta_scene)
            if len(bad):
                i = int(bad[0])
                raise DataError(
                    f"{path} row {i + 2}: scene_label {frame['scene_label'].iat[i]!r} for "
                    f"{frame['filename'].iat[i]!r} disagrees with meta.csv ({meta_scene[i]!r})"
                )
    both = set(train["filename"]) & set(test["filename"])
    if both:
        name = sorted(both)[0]
        raise DataError(f"{setup}: {name!r} (and {len(both) - 1} more) is in both the train and the test fold file")

    parts = []
    for frame, split in ((train, "train"), (test, "test")):
        rows = np.sort(position.loc[frame["filename"]].to_numpy())
        part = meta.iloc[rows].copy()
        part["split"] = split
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    table["label"] = table["scene_label"].map(label_index).astype(np.int64)
    identifier = table["identifier"]
    city_loc = identifier.str.split("-", n=1, expand=True)
    table["city"] = city_loc[0]
    table["location"] = city_loc[1].fillna("") if city_loc.shape[1] > 1 else ""
    table["device"] = table["source_label"]
    table = table[list(TABLE_COLUMNS)]

    subset = _read_subsets(root, table)
    if subset is not None:
        table["subset_pct"] = subset
    table.attrs["labels"] = label_tuple
    return table


def _check_in(frame: pd.DataFrame, known, path: Path, where: str) -> None:
    present = frame["filename"].isin(known).to_numpy()
    if not present.all():
        i = int(np.flatnonzero(~present)[0])
        raise DataError(f"{path} row {i + 2}: {frame['filename'].iat[i]!r} is not listed in {where}")


def _read_subsets(root: Path, table: pd.DataFrame) -> pd.Series | None:
    files = {pct: _split_file(root, pct) for pct in SUBSET_PERCENTS}
    if not any(files.values()):
        return None
    train_names = set(table.loc[table["split"] == "train", "filename"])
    subset = pd.Series(pd.NA, index=table.index, dtype="Int64")
    for pct in sorted(SUBSET_PERCENTS, reverse=True):  # smaller subsets overwrite: smallest one holding the clip
        path = files[pct]
        if path is None:
            continue
        frame = _read_tsv(path, ("filename",), f"DCASE 2024 {pct} % training subset")
        outside = ~frame["filename"].isin(train_names).to_numpy()
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise DataError(f"{path} row {i + 2}: {frame['filename'].iat[i]!r} is not a clip of fold1_train.csv")
        subset[table["filename"].isin(set(frame["filename"])).to_numpy()] = pct
    return subset


def select_subset(table: pd.DataFrame, percent: int) -> pd.DataFrame:
    """Rows of the DCASE 2024 ``percent`` % training subset plus every non-train row (needs ``subset_pct``)."""
    if percent not in SUBSET_PERCENTS:
        raise ConfigError(f"subset must be one of {', '.join(map(str, SUBSET_PERCENTS))} (percent), got {percent!r}")
    if "subset_pct" not in table.columns:
        raise DataError("this data set has no DCASE 2024 split files (split5.csv ... split100.csv)")
    keep = (table["split"] != "train") | (table["subset_pct"].fillna(10_000) <= percent).to_numpy(dtype=bool)
    return table.loc[np.asarray(keep, dtype=bool)].reset_index(drop=True)


def carve_validation(table: pd.DataFrame, split: SplitConfig | None = None) -> pd.DataFrame:
    """A copy of ``table`` where a fraction of the train recording locations (``identifier``) become ``"val"``.

    Whole identifiers move, never single clips. The choice is stratified by scene (each identifier counts for its
    most frequent scene) so every scene with at least two train locations keeps one in train and gives at least
    one to validation. Deterministic for ``split.seed``; independent of the table's row order. With
    ``split.subset``, train clips outside that DCASE 2024 subset become ``"excluded"`` first (neither train nor
    validation), and validation is carved from the subset.
    """
    split = split or SplitConfig()
    if "split" not in table.columns or "identifier" not in table.columns:
        raise DataError("carve_validation needs a table with 'split' and 'identifier' columns (from read_tau)")
    out = table.copy()
    if split.subset is not None:
        if "subset_pct" not in out.columns:
            raise DataError(f"subset {split.subset}: this data set has no DCASE 2024 training subset files "
                            "(split_setup/split5.csv ... split100.csv)", params=("subset",))
        outside = (out["split"] == "train") & ~(out["subset_pct"].fillna(10_000) <= split.subset).to_numpy(dtype=bool)
        out.loc[outside, "split"] = "excluded"
    train = out[out["split"] == "train"]
    if train.empty:
        raise DataError("the data set has no train clips to carve a validation split from")
    by_scene = (
        train.groupby("identifier")["scene_label"].agg(lambda s: s.value_counts().index[0]).sort_index()
    )
    rng = np.random.default_rng(split.seed)
    chosen: list[str] = []
    for scene in sorted(by_scene.unique()):
        ids = np.array(sorted(by_scene.index[by_scene == scene]))
        if len(ids) < 2:
            continue
        n_val = int(round(split.val_fraction * len(ids)))
        n_val = min(max(n_val, 1), len(ids) - 1)
        chosen.extend(rng.permutation(ids)[:n_val].tolist())
    if not chosen:
        raise DataError(
            "cannot carve a validation split: no scene has two or more train recording locations (identifiers)"
        )
    is_val = (out["split"] == "train") & out["identifier"].isin(set(chosen))
    out.loc[is_val, "split"] = "val"
    return out
