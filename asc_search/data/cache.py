"""The feature cache and its reader :func:`load_features` (the Parquet helpers it shares with the teacher cache live
in :mod:`asc_search.data.parquet` and are re-exported here).

A feature cache is a folder that any Parquet reader opens as one table (``pandas.read_parquet(CACHE_DIR)``,
``pyarrow.dataset.dataset(CACHE_DIR)``, DuckDB's ``read_parquet('CACHE_DIR/*.parquet')``)::

    CACHE_DIR/features-00000.parquet one row per clip: the read_tau columns + ``x`` (fixed-size list, n_mels*n_frames)
    CACHE_DIR/features-00001.parquet ...
    CACHE_DIR/_manifest.json         what produced it: profile, labels, shape, fingerprints, versions, files, counts
                                     (Parquet readers skip names starting with ``_``)

Every Parquet file carries the same JSON record in its schema metadata under the key ``asc_search``. The teacher
cache lives beside the folder, never inside it (see :mod:`asc_search.data.teacher_cache`). A cache in the older
layout (``manifest.json``, maybe a ``teacher/`` folder inside) still loads as it is;
:func:`legacy_layout_hint` says how to move it to this layout.
Tensors travel through Parquet as one fixed-size list column per tensor (row i = tensor i flattened, C order); the
shape lives in the metadata. Reading converts whole chunks (never one row at a time) into one preallocated numpy
array that torch then wraps without a copy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import FeatureProfile, SplitConfig
from ..errors import CacheError
from .parquet import (
    META_KEY,
    array_to_list_array,
    list_column_to_numpy,
    list_column_to_tensor,
    read_parquet_metadata,
    write_parquet,
)

__all__ = [
    "META_KEY",
    "MANIFEST",
    "FEATURE_KIND",
    "FORMAT_VERSION",
    "array_to_list_array",
    "list_column_to_numpy",
    "list_column_to_tensor",
    "write_parquet",
    "read_parquet_metadata",
    "LEGACY_MANIFEST",
    "manifest_path",
    "read_manifest",
    "is_feature_cache",
    "verify_cache_files",
    "legacy_layout_hint",
    "FeatureSet",
    "load_features",
]

#: Name of the JSON manifest in a cache folder (a leading ``_``: Parquet dataset readers skip it).
MANIFEST = "_manifest.json"
#: Its name in caches of the older layout (still read).
LEGACY_MANIFEST = "manifest.json"
#: ``kind`` of a feature cache's manifest.
FEATURE_KIND = "asc_search.data.features"
#: Bumped whenever the feature-cache layout changes (a cache of another format is rebuilt, never misread).
FORMAT_VERSION = 1


# ------------------------------------------------------------------------------------------ feature caches
def manifest_path(cache_dir: str | os.PathLike) -> Path | None:
    """The manifest file of the feature cache in ``cache_dir`` (``_manifest.json``, or ``manifest.json`` in a cache of
    the older layout); None when there is neither."""
    cache_dir = Path(cache_dir)
    for name in (MANIFEST, LEGACY_MANIFEST):
        if (cache_dir / name).is_file():
            return cache_dir / name
    return None


def read_manifest(cache_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the feature cache in ``cache_dir``; :class:`CacheError` when there is none or it is broken."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        raise CacheError(f"{cache_dir}: no such feature cache folder; build one with `asc-search features`")
    path = manifest_path(cache_dir)
    if path is None:
        raise CacheError(f"{cache_dir}: not a feature cache (no {MANIFEST}); build one with `asc-search features`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheError(f"{path}: unreadable manifest ({exc}); rebuild the cache") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != FEATURE_KIND:
        raise CacheError(f"{path}: expected kind {FEATURE_KIND!r}, got {manifest.get('kind')!r}")
    for key in ("profile", "labels", "shape", "files", "fingerprint", "n_clips", "format_version"):
        if key not in manifest:
            raise CacheError(f"{path}: missing key {key!r}; rebuild the cache")
    return manifest


def is_feature_cache(cache_dir: str | os.PathLike) -> bool:
    """True when ``cache_dir`` holds a feature-cache manifest (valid or not; either name)."""
    return manifest_path(cache_dir) is not None


def verify_cache_files(cache_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> str | None:
    """The first problem with the Parquet files a cache's ``manifest`` lists, or None when they look intact: each
    file must exist, have a readable footer (a truncated file has none), hold the manifest's row count and
    fingerprint, and be as long as its footer says its column chunks reach. Reads only the footers (milliseconds)."""
    cache_dir = Path(cache_dir)
    for entry in manifest.get("files", []):
        path = cache_dir / str(entry.get("name"))
        try:
            footer = pq.read_metadata(path)
            size = path.stat().st_size
        except FileNotFoundError:
            return f"{path}: listed in the cache's manifest but missing"
        except (OSError, pa.ArrowException) as exc:
            return f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:200]})"
        if footer.num_rows != int(entry.get("rows", -1)):
            return f"{path}: holds {footer.num_rows} rows, the manifest says {entry.get('rows')}"
        try:
            meta = json.loads((footer.metadata or {}).get(META_KEY, b"{}"))
        except ValueError:
            meta = {}
        if meta.get("fingerprint") != manifest.get("fingerprint"):
            return f"{path}: fingerprint {meta.get('fingerprint')!r} differs from the manifest's (a file of another build)"
        end = 0
        for g in range(footer.num_row_groups):
            group = footer.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
                end = max(end, int(start) + int(chunk.total_compressed_size))
        if end > size:
            return f"{path}: {size:,} bytes, shorter than the {end:,} its footer describes"
    return None


def legacy_layout_hint(cache_dir: str | os.PathLike) -> str | None:
    """One line saying how to move a cache of the older layout to the current one (so that Parquet readers open
    it); None when it has the current layout. The old layout still loads; nothing is moved automatically."""
    from .teacher_cache import LEGACY_SUBDIR, teacher_cache_path

    cache_dir = Path(cache_dir)
    steps = []
    if not (cache_dir / MANIFEST).is_file() and (cache_dir / LEGACY_MANIFEST).is_file():
        steps.append(f"mv {cache_dir / LEGACY_MANIFEST} {cache_dir / MANIFEST}")
    if (cache_dir / LEGACY_SUBDIR).is_dir():
        steps.append(f"mv {cache_dir / LEGACY_SUBDIR} {teacher_cache_path(cache_dir)}")
    if not steps:
        return None
    return (f"{cache_dir}: a feature cache in the older layout (it loads as it is); to let Parquet readers open it as "
            f"one table, run: {' && '.join(steps)}")


@dataclass
class FeatureSet:
    """A loaded feature cache: ``x[i]`` is the log-mel spectrogram of ``table.iloc[i]``."""

    table: Any  # pandas.DataFrame, columns as read_tau (split "train"/"test" as stored)
    x: Any  # torch.Tensor [N, 1, n_mels, n_frames], float16 or float32 as stored
    labels: tuple[str, ...]
    profile: FeatureProfile
    fingerprint: str
    cache_dir: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def y(self):
        """Label indices as a torch int64 tensor [N]."""
        import torch

        return torch.from_numpy(self.table["label"].to_numpy(dtype=np.int64, copy=True))

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """Model input shape for one clip, batch 1: (1, 1, n_mels, n_frames)."""
        return (1, *tuple(self.x.shape[1:]))

    def split_indices(self, split: SplitConfig | None = None) -> dict[str, tuple[np.ndarray, Any]]:
        """``{"train", "val", "test"} -> (row indices into x, table of those rows)``: validation carved from train by
        recording location (:func:`asc_search.data.tau.carve_validation`). No tensor is copied."""
        from .tau import carve_validation

        carved = carve_validation(self.table, split or SplitConfig())
        out: dict[str, tuple[np.ndarray, Any]] = {}
        for name in ("train", "val", "test"):
            mask = (carved["split"] == name).to_numpy()
            out[name] = (np.flatnonzero(mask), carved.loc[mask].reset_index(drop=True))
        return out

    def split(self, split: SplitConfig | None = None) -> dict[str, tuple[Any, Any, Any]]:
        """``{"train", "val", "test"} -> (x, y, table)``: val carved from train by recording location."""
        import torch

        out: dict[str, tuple[Any, Any, Any]] = {}
        for name, (idx, part) in self.split_indices(split).items():
            y = torch.from_numpy(part["label"].to_numpy(dtype=np.int64, copy=True))
            out[name] = (self.x.index_select(0, torch.from_numpy(idx)), y, part)
        return out


def load_features(cache_dir: str | os.PathLike, columns_only: bool = False) -> FeatureSet:
    """Read the feature cache in ``cache_dir`` into tensors (one copy from Arrow into one array, no per-row loop).

    ``columns_only=True`` skips the spectrograms (``x`` is then ``None``): quick access to the table and metadata.
    """
    import pandas as pd
    import torch

    cache_dir = Path(cache_dir)
    manifest = read_manifest(cache_dir)
    where = manifest_path(cache_dir)
    if manifest["format_version"] != FORMAT_VERSION:
        raise CacheError(
            f"{where}: cache format {manifest['format_version']}, this version reads "
            f"{FORMAT_VERSION}; rebuild the cache with `asc-search features`"
        )
    try:
        profile = FeatureProfile.from_dict(manifest["profile"])
    except Exception as exc:  # noqa: BLE001 - a broken profile record is a cache problem
        raise CacheError(f"{where}: bad profile record ({exc})") from None
    shape = tuple(int(v) for v in manifest["shape"])
    n_total = int(manifest["n_clips"])
    files = manifest["files"]
    offsets = np.cumsum([0] + [int(entry["rows"]) for entry in files])
    if offsets[-1] != n_total:
        raise CacheError(f"{where}: its files hold {offsets[-1]} rows, its n_clips says {n_total}; rebuild the cache")
    x_np = None
    if not columns_only:
        x_np = np.empty((n_total, *shape), dtype=np.dtype(manifest.get("dtype", profile.storage_dtype)))

    def read_one(k: int) -> pa.Table:
        out = x_np[offsets[k] : offsets[k + 1]] if x_np is not None else None
        return _read_part(where, files[k], manifest["fingerprint"], shape, out)

    from concurrent.futures import ThreadPoolExecutor

    # files are read on 2 threads (Arrow decodes without the GIL), converted in manifest order
    with ThreadPoolExecutor(max_workers=max(1, min(2, len(files)))) as pool:
        frames = [table.to_pandas() for table in pool.map(read_one, range(len(files)))]
    return FeatureSet(
        table=pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
        x=torch.from_numpy(x_np) if x_np is not None else None,
        labels=tuple(manifest["labels"]),
        profile=profile,
        fingerprint=str(manifest["fingerprint"]),
        cache_dir=cache_dir,
        meta=manifest,
    )


def _read_part(manifest: Path, entry: Mapping[str, Any], fingerprint: str, shape: tuple[int, ...],
               out: np.ndarray | None) -> pa.Table:
    """The clip table of one Parquet file of a cache (``entry`` of its manifest), its spectrograms copied into
    ``out`` (skipped when None); CacheError naming the file when it is missing, foreign or damaged."""
    path = manifest.parent / entry["name"]
    if not path.is_file():
        raise CacheError(f"{path}: listed in {manifest.name} but missing; rebuild the cache")
    meta = read_parquet_metadata(path)
    if meta.get("fingerprint") != fingerprint:
        raise CacheError(
            f"{path}: fingerprint {meta.get('fingerprint')!r} differs from the manifest's "
            f"{fingerprint!r} (a file from another build); rebuild the cache"
        )
    try:
        table = pq.read_table(path, columns=None if out is not None else _table_columns(path))
    except (OSError, pa.ArrowException) as exc:
        raise CacheError(f"{path}: unreadable Parquet file ({exc}); rebuild the cache") from None
    if table.num_rows != int(entry["rows"]):
        raise CacheError(f"{path}: holds {table.num_rows} rows, the manifest says {entry['rows']}; rebuild the cache")
    if out is None:
        return table
    try:
        list_column_to_numpy(table.column("x"), shape, out=out)
    except (KeyError, ValueError) as exc:
        raise CacheError(f"{path}: column 'x' does not hold spectrograms of shape {shape} ({exc})") from None
    return table.drop_columns(["x"])


def _table_columns(path: Path) -> list[str]:
    return [name for name in pq.read_schema(path).names if name != "x"]

