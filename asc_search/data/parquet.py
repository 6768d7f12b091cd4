"""Parquet helpers every asc-search cache shares: tensors <-> fixed-size-list columns (whole chunks, never one row at
a time: one preallocated numpy array that torch then wraps without a copy), and Parquet files carrying a JSON
provenance record in their schema metadata (under :data:`META_KEY`), written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._io import atomic_path, jsonable
from ..errors import CacheError

__all__ = ["META_KEY", "array_to_list_array", "list_column_to_numpy", "list_column_to_tensor", "write_parquet",
           "read_parquet_metadata"]

#: Schema-metadata key under which every asc-search Parquet file stores its JSON provenance record.
META_KEY = b"asc_search"


# ----------------------------------------------------------------------------- tensors <-> fixed-size lists
def array_to_list_array(array: Any) -> pa.FixedSizeListArray:
    """``[N, *shape]`` numpy array or torch tensor -> Arrow fixed-size list array of N rows (no per-row loop).

    float16 stays float16 (Parquet FLOAT16), float32 stays float32. The row shape is not stored in the array:
    record it in the file's metadata.
    """
    if hasattr(array, "detach"):  # torch.Tensor
        array = array.detach().cpu().contiguous().numpy()
    array = np.ascontiguousarray(array)
    if array.ndim < 1:
        raise ValueError("array_to_list_array needs an array with a leading row dimension")
    n_rows = array.shape[0]
    width = int(np.prod(array.shape[1:], dtype=np.int64)) if array.ndim > 1 else 1
    if width == 0:
        raise ValueError(f"rows of shape {array.shape[1:]} hold no values")
    values = pa.array(array.reshape(n_rows * width))
    return pa.FixedSizeListArray.from_arrays(values, width)


def list_column_to_numpy(
    column: pa.ChunkedArray | pa.Array, shape: Sequence[int], out: np.ndarray | None = None
) -> np.ndarray:
    """Arrow fixed-size list column -> numpy array ``[N, *shape]``.

    Each chunk's flat value buffer is copied once into ``out`` (allocated when not given); no Python loop per row.
    Raises :class:`ValueError` when the list width does not match ``shape`` or a value is null.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    width = int(np.prod(shape, dtype=np.int64))
    list_type = column.type
    if not pa.types.is_fixed_size_list(list_type):
        raise ValueError(f"expected a fixed-size list column, got {list_type}")
    if list_type.list_size != width:
        raise ValueError(f"list width {list_type.list_size} does not match shape {tuple(shape)} ({width} values)")
    n_rows = sum(len(chunk) for chunk in chunks)
    dtype = np.dtype(list_type.value_type.to_pandas_dtype())
    if out is None:
        out = np.empty((n_rows, *shape), dtype=dtype)
    elif out.shape != (n_rows, *shape):
        raise ValueError(f"out has shape {out.shape}, expected {(n_rows, *tuple(shape))}")
    flat_out = out.reshape(n_rows, width)
    row = 0
    for chunk in chunks:
        if chunk.null_count:
            raise ValueError("the column holds null rows")
        values = chunk.flatten()  # respects the chunk's offset, unlike .values
        if values.null_count:
            raise ValueError("the column holds null values")
        flat = values.to_numpy(zero_copy_only=False)
        flat_out[row : row + len(chunk)] = flat.reshape(len(chunk), width)
        row += len(chunk)
    return out


def list_column_to_tensor(column: pa.ChunkedArray | pa.Array, shape: Sequence[int]):
    """Like :func:`list_column_to_numpy`, then wrapped by ``torch.from_numpy`` (no further copy)."""
    import torch

    return torch.from_numpy(list_column_to_numpy(column, shape))


# ------------------------------------------------------------------------------------------- Parquet files
def write_parquet(table: pa.Table, path: str | os.PathLike, meta: Mapping[str, Any], **kwargs: Any) -> None:
    """Write ``table`` to ``path`` with ``meta`` (JSON) in its schema metadata, under a temporary name first.

    Keyword arguments go to :func:`pyarrow.parquet.write_table` (default: zstd compression).
    """
    path = Path(path)
    existing = dict(table.schema.metadata or {})
    existing[META_KEY] = json.dumps(jsonable(dict(meta)), sort_keys=True).encode("utf-8")
    table = table.replace_schema_metadata(existing)
    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON record stored by :func:`write_parquet` (``{}`` when the file has none)."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise CacheError(f"{path}: not a readable Parquet file ({exc})") from None
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise CacheError(f"{path}: its asc_search metadata is not valid JSON") from None
