"""The teacher cache: per clip, the teacher embedding and logits, in Parquet, joined to the feature cache by filename.

Layout (default ``CACHE_DIR-teacher/``, a sibling of the feature cache ``CACHE_DIR``, where the search finds it
without being told; :func:`teacher_cache_path`)::

    CACHE_DIR-teacher/part-00000.parquet   columns: filename (string), embedding (fixed-size list float32, C*H*W
    CACHE_DIR-teacher/part-00001.parquet   values), logits (fixed-size list float32, K values)
    ...

Beside the feature cache, not inside it, so that ``pandas.read_parquet(CACHE_DIR)`` and
``pyarrow.dataset.dataset(CACHE_DIR)`` read the features alone, and either folder reads as one table. A teacher cache
of the older layout (``CACHE_DIR/teacher/``) is still found when the sibling does not exist
(:func:`default_teacher_cache_dir`).

Every file carries the same JSON record in its schema metadata (key ``asc_search``, see :mod:`asc_search.data.cache`):
``kind`` = "asc_search.data.teacher_cache", ``embedding_shape`` [C, H, W], ``n_classes``, ``labels``, ``layer``,
``pool``, ``ensemble`` {mode, embedding}, ``teachers`` (each with its checkpoint fingerprint), ``feature_fingerprint``
and ``feature_profile`` of the feature cache it was computed from, ``n_rows``, ``files``, ``source``
("embed" or "import", with the imported file's sha256), versions and a creation time.

Rows follow the feature cache's order when written, but readers never rely on it: :func:`load_teacher_targets`
joins by filename and refuses any mismatch (another feature fingerprint, missing or duplicate clips, wrong widths).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from .._io import atomic_output_dir, fingerprint_file, provenance
from ..errors import CacheError
from .parquet import array_to_list_array, list_column_to_numpy, read_parquet_metadata, write_parquet

__all__ = [
    "TEACHER_KIND",
    "TEACHER_FORMAT_VERSION",
    "TEACHER_DIR_SUFFIX",
    "LEGACY_SUBDIR",
    "DEFAULT_SHARD_ROWS",
    "TeacherTargets",
    "teacher_cache_path",
    "default_teacher_cache_dir",
    "write_teacher_cache",
    "read_teacher_cache",
    "read_teacher_cache_meta",
    "load_teacher_targets",
    "import_teacher_cache",
]

TEACHER_KIND = "asc_search.data.teacher_cache"
TEACHER_FORMAT_VERSION = 1
#: The default teacher cache of the feature cache ``CACHE_DIR`` is the folder ``CACHE_DIR`` + this suffix, beside it.
TEACHER_DIR_SUFFIX = "-teacher"
#: Where the older layout kept it: a folder of this name inside the feature cache (still read).
LEGACY_SUBDIR = "teacher"
#: Rows per Parquet file (also the shard size of a cluster run, so both write the same files).
DEFAULT_SHARD_ROWS = 8192


@dataclass
class TeacherTargets:
    """Teacher targets aligned to ``features.table`` rows: embeddings [N, C, H, W] float32, logits [N, K] float32."""

    embeddings: torch.Tensor
    logits: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.embeddings.shape[1:])  # type: ignore[return-value]


def teacher_cache_path(cache_dir: str | os.PathLike) -> Path:
    """Where ``teacher embed`` and ``teacher import`` write the teacher cache of the feature cache ``cache_dir`` by
    default: the sibling folder ``CACHE_DIR-teacher`` (``data/cache-quick`` -> ``data/cache-quick-teacher``)."""
    path = Path(cache_dir)
    if path.name in ("", ".", ".."):
        path = path.resolve()
    return path.with_name(path.name + TEACHER_DIR_SUFFIX)


def default_teacher_cache_dir(cache_dir: str | os.PathLike) -> Path:
    """Where readers look for the teacher cache of ``cache_dir`` when none is named: :func:`teacher_cache_path`, or
    ``CACHE_DIR/teacher`` (the older layout) when only that one exists."""
    path = teacher_cache_path(cache_dir)
    legacy = Path(cache_dir) / LEGACY_SUBDIR
    if not path.exists() and legacy.is_dir():
        return legacy
    return path


def write_teacher_cache(
    out_dir: str | os.PathLike,
    filenames: Any,
    embeddings: np.ndarray | torch.Tensor,
    logits: np.ndarray | torch.Tensor,
    meta: dict[str, Any],
    shard_rows: int = DEFAULT_SHARD_ROWS,
) -> Path:
    """Write a teacher cache folder atomically (temporary folder, then rename over ``out_dir``).

    ``embeddings`` [N, C, H, W] and ``logits`` [N, K] are stored as float32; ``meta`` is completed with the
    shapes, row count, file list and format fields.
    """
    emb = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    lg = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    lg = np.ascontiguousarray(lg, dtype=np.float32)
    names = pa.array(list(filenames) if not isinstance(filenames, pa.Array) else filenames, type=pa.string())
    n = len(names)
    if emb.ndim != 4 or emb.shape[0] != n or lg.ndim != 2 or lg.shape[0] != n:
        raise ValueError(
            f"write_teacher_cache: expected embeddings [N, C, H, W] and logits [N, K] with N={n}, "
            f"got {emb.shape} and {lg.shape}"
        )
    n_files = max(1, -(-n // shard_rows))
    files = [f"part-{i:05d}.parquet" for i in range(n_files)]
    record = {
        **meta,
        "kind": TEACHER_KIND,
        "format_version": TEACHER_FORMAT_VERSION,
        "embedding_shape": list(emb.shape[1:]),
        "n_classes": int(lg.shape[1]),
        "n_rows": n,
        "files": files,
    }
    record = {**provenance(), **record}
    with atomic_output_dir(out_dir) as tmp:
        for i, name in enumerate(files):
            lo, hi = i * shard_rows, min(n, (i + 1) * shard_rows)
            table = pa.table(
                {
                    "filename": names.slice(lo, hi - lo),
                    "embedding": array_to_list_array(emb[lo:hi]),
                    "logits": array_to_list_array(lg[lo:hi]),
                }
            )
            write_parquet(table, tmp / name, record)
    return Path(out_dir)


def read_teacher_cache_meta(teacher_dir: str | os.PathLike) -> dict[str, Any]:
    """The metadata record of the teacher cache in ``teacher_dir`` (CacheError when there is none)."""
    teacher_dir = Path(teacher_dir)
    if not teacher_dir.is_dir():
        raise CacheError(
            f"{teacher_dir}: no teacher cache there; build one with `asc-search teacher embed CACHE_DIR --teacher DIR`"
            " or `asc-search teacher import CACHE_DIR FILE.parquet`"
        )
    parts = sorted(teacher_dir.glob("part-*.parquet"))
    if not parts:
        raise CacheError(f"{teacher_dir}: holds no part-*.parquet files; rebuild the teacher cache")
    meta = read_parquet_metadata(parts[0])
    if meta.get("kind") != TEACHER_KIND:
        raise CacheError(f"{parts[0]}: not a teacher cache file (kind {meta.get('kind')!r}, expected {TEACHER_KIND!r})")
    if meta.get("format_version") != TEACHER_FORMAT_VERSION:
        raise CacheError(
            f"{parts[0]}: teacher cache format {meta.get('format_version')!r}, this version reads "
            f"{TEACHER_FORMAT_VERSION}; rebuild it"
        )
    return meta


def read_teacher_cache(teacher_dir: str | os.PathLike) -> tuple[pa.Array, np.ndarray, np.ndarray, dict[str, Any]]:
    """(filenames, embeddings [N, C, H, W] float32, logits [N, K] float32, meta) in file order."""
    teacher_dir = Path(teacher_dir)
    meta = read_teacher_cache_meta(teacher_dir)
    shape = tuple(int(v) for v in meta["embedding_shape"])
    k = int(meta["n_classes"])
    names, embs, logits = [], [], []
    for name in meta["files"]:
        path = teacher_dir / name
        if not path.is_file():
            raise CacheError(f"{path}: listed in the teacher cache's metadata but missing; rebuild the teacher cache")
        part_meta = read_parquet_metadata(path)
        for key in ("feature_fingerprint", "teacher_fingerprint", "created_utc"):
            if part_meta.get(key) != meta.get(key):
                raise CacheError(
                    f"{path}: {key} {part_meta.get(key)!r} differs from {teacher_dir / meta['files'][0]}'s "
                    f"{meta.get(key)!r} (files from different runs); rebuild the teacher cache"
                )
        try:
            table = pq.read_table(path, columns=["filename", "embedding", "logits"])
            embs.append(list_column_to_numpy(table.column("embedding"), shape))
            logits.append(list_column_to_numpy(table.column("logits"), (k,)))
        except (OSError, pa.ArrowException, KeyError, ValueError) as exc:
            raise CacheError(f"{path}: not a valid teacher cache file ({exc}); rebuild the teacher cache") from None
        names.append(table.column("filename").combine_chunks())
    n = sum(len(a) for a in names)
    if n != int(meta["n_rows"]):
        raise CacheError(f"{teacher_dir}: files hold {n} rows, the metadata says {meta['n_rows']}; rebuild it")
    filenames = pa.concat_arrays(names) if names else pa.array([], pa.string())
    return filenames, np.concatenate(embs), np.concatenate(logits), meta


def _align(feature_names: Any, names: Any, where: str) -> np.ndarray:
    """Row index into ``names`` for each feature-cache filename; CacheError naming missing / duplicate clips."""
    import pandas as pd

    index = pd.Index(np.asarray(names, dtype=object))
    if not index.is_unique:
        dup = index[index.duplicated()].unique()
        raise CacheError(f"{where}: {len(dup)} filename(s) appear more than once, e.g. {', '.join(map(str, dup[:3]))}")
    pos = index.get_indexer(pd.Index(np.asarray(feature_names, dtype=object)))
    missing = np.flatnonzero(pos < 0)
    if missing.size:
        examples = ", ".join(str(feature_names[i]) for i in missing[:3])
        raise CacheError(
            f"{where}: {missing.size} clip(s) of the feature cache are missing, e.g. {examples}"
        )
    return pos


def load_teacher_targets(features: Any, teacher_cache_dir: str | os.PathLike | None = None) -> TeacherTargets:
    """Teacher embeddings and logits aligned to ``features.table`` rows (joined by filename, never row order).

    ``teacher_cache_dir`` defaults to :func:`default_teacher_cache_dir` of the feature cache. CacheError when the
    cache was computed from another feature cache (fingerprint), lacks clips, has duplicate filenames or the wrong
    number of classes.
    """
    teacher_dir = Path(teacher_cache_dir) if teacher_cache_dir is not None else default_teacher_cache_dir(features.cache_dir)
    meta = read_teacher_cache_meta(teacher_dir)
    if meta.get("feature_fingerprint") != features.fingerprint:
        raise CacheError(
            f"{teacher_dir}: computed from the feature cache with fingerprint {meta.get('feature_fingerprint')!r}, "
            f"but {features.cache_dir} has fingerprint {features.fingerprint!r}; rerun `asc-search teacher embed`"
        )
    labels = list(features.labels)
    if meta.get("labels") is not None and list(meta["labels"]) != labels:
        raise CacheError(f"{teacher_dir}: its labels {meta['labels']} differ from the feature cache's {labels}")
    if int(meta["n_classes"]) != len(labels):
        raise CacheError(f"{teacher_dir}: logits have {meta['n_classes']} classes, the feature cache has {len(labels)}")
    names, emb, logits, meta = read_teacher_cache(teacher_dir)
    pos = _align(features.table["filename"].to_numpy(), names.to_numpy(zero_copy_only=False), str(teacher_dir))
    return TeacherTargets(torch.from_numpy(emb[pos]), torch.from_numpy(logits[pos]), meta)


# ------------------------------------------------------------------------------------------------- import
def _list_widths(column: pa.ChunkedArray, path: Path, name: str) -> int:
    """The uniform width of a list column (CacheError naming the first row of another width)."""
    col = column.combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return int(col.type.list_size)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise CacheError(f"{path}: column {name!r} must be a list of numbers per row, got type {col.type}")
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise CacheError(f"{path}: column {name!r} is null in row {row}")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if lengths.size == 0:
        raise CacheError(f"{path}: holds no rows")
    bad = np.flatnonzero(lengths != lengths[0])
    if bad.size:
        raise CacheError(
            f"{path}: column {name!r} must have the same width in every row: row 0 has {lengths[0]} values, "
            f"row {bad[0]} has {lengths[bad[0]]}"
        )
    if lengths[0] == 0:
        raise CacheError(f"{path}: column {name!r} holds empty lists")
    return int(lengths[0])


def _to_matrix(column: pa.ChunkedArray, width: int, path: Path, name: str) -> np.ndarray:
    col = column.combine_chunks()
    if not pa.types.is_fixed_size_list(col.type):
        values = col.flatten()
        if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
            raise CacheError(f"{path}: column {name!r} must hold numbers, got lists of {values.type}")
        if values.null_count:
            raise CacheError(f"{path}: column {name!r} holds null values")
        col = pa.FixedSizeListArray.from_arrays(values.cast(pa.float32()), width)
    elif not (pa.types.is_floating(col.type.value_type) or pa.types.is_integer(col.type.value_type)):
        raise CacheError(f"{path}: column {name!r} must hold numbers, got lists of {col.type.value_type}")
    try:
        out = list_column_to_numpy(col, (width,)).astype(np.float32, copy=False)
    except ValueError as exc:
        raise CacheError(f"{path}: column {name!r}: {exc}") from None
    return out


def _read_external(path: Path) -> tuple[pa.Table, np.ndarray]:
    """(table, filenames) of an external teacher file, checked: readable, the three columns, rows, string names."""
    if not path.is_file():
        raise CacheError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise CacheError(f"{path}: not a readable Parquet file ({exc})") from None
    missing_cols = [c for c in ("filename", "embedding", "logits") if c not in table.column_names]
    if missing_cols:
        raise CacheError(
            f"{path}: missing column(s) {', '.join(missing_cols)}; expected filename, embedding, logits "
            f"(found {', '.join(table.column_names) or 'none'})"
        )
    if table.num_rows == 0:
        raise CacheError(f"{path}: holds no rows")
    fn_col = table.column("filename")
    if not (pa.types.is_string(fn_col.type) or pa.types.is_large_string(fn_col.type)):
        raise CacheError(f"{path}: column 'filename' must hold strings, got {fn_col.type}")
    if fn_col.null_count:
        row = int(np.flatnonzero(fn_col.is_null().to_numpy(zero_copy_only=False))[0])
        raise CacheError(f"{path}: column 'filename' is null in row {row}")
    return table, fn_col.to_numpy(zero_copy_only=False).astype(object)


def import_teacher_cache(
    features: Any,
    file: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    embedding_shape: tuple[int, int, int] | None = None,
) -> Path:
    """Validate an external Parquet file (columns ``filename``, ``embedding``, ``logits``) and adopt it as the
    teacher cache of ``features`` (written in the same format as ``teacher embed``, aligned by filename).

    ``embedding`` may be a list or fixed-size-list column (width inferred, uniform); its (C, H, W) comes from
    ``embedding_shape``, else the file's ``asc_search`` metadata, else (width, 1, 1). ``logits`` must have one
    value per label of the feature cache. Clips in the file that the feature cache lacks are ignored (counted in
    the metadata); clips the feature cache has that the file lacks, duplicates, NaN/inf values and wrong widths
    are errors naming the file and row.
    """
    path = Path(file)
    table, names = _read_external(path)
    emb_width = _list_widths(table.column("embedding"), path, "embedding")
    k = len(features.labels)
    lg_width = _list_widths(table.column("logits"), path, "logits")
    if lg_width != k:
        raise CacheError(
            f"{path}: column 'logits' has {lg_width} values per row, expected {k} (one per label of the feature "
            f"cache: {', '.join(features.labels)})"
        )
    emb = _to_matrix(table.column("embedding"), emb_width, path, "embedding")
    logits = _to_matrix(table.column("logits"), lg_width, path, "logits")
    for name, arr in (("embedding", emb), ("logits", logits)):
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if bad.size:
            raise CacheError(
                f"{path}: column {name!r} holds NaN or infinite values in {bad.size} row(s), first row {bad[0]} "
                f"(filename {names[bad[0]]})"
            )

    if embedding_shape is None:
        file_meta = {}
        try:
            file_meta = read_parquet_metadata(path)
        except CacheError:
            pass
        embedding_shape = tuple(file_meta.get("embedding_shape") or (emb_width, 1, 1))  # type: ignore[assignment]
    shape = tuple(int(v) for v in embedding_shape)  # type: ignore[union-attr]
    if len(shape) != 3 or int(np.prod(shape)) != emb_width:
        raise CacheError(
            f"{path}: embedding shape {list(shape)} does not match the {emb_width} values per row of 'embedding'"
        )

    feature_names = features.table["filename"].to_numpy()
    pos = _align(feature_names, names, str(path))
    extra = int(len(names) - len(np.unique(pos)))
    out = Path(out_dir) if out_dir is not None else teacher_cache_path(features.cache_dir)
    meta = {
        "source": "import",
        "import": {"file": str(path.resolve()), "sha256": fingerprint_file(path, length=64), "ignored_rows": extra},
        "teachers": [],
        "teacher_fingerprint": fingerprint_file(path),
        "layer": "external",
        "pool": None,
        "ensemble": {"mode": "external", "embedding": "external"},
        "labels": list(features.labels),
        "feature_fingerprint": features.fingerprint,
        "feature_profile": features.profile.name,
    }
    return write_teacher_cache(out, feature_names, emb[pos].reshape(-1, *shape), logits[pos], meta)
