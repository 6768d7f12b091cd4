"""Writing files safely and recording what produced them: the one atomic writer, fingerprints, the JSON-safe value
converter and the provenance stamp every cache, run and export carries.

* Atomic writes: a file or folder is written under a hidden temporary name beside its final place, then renamed
  into place (``os.replace``), so a reader never sees half of it and a failure leaves the old one untouched.
  Files get ordinary permissions (``0666 & ~umask``), not the private ``0600`` of ``mkstemp``.
* :func:`jsonable` turns configs, numpy / torch / pandas scalars, paths and tuples into plain JSON/YAML values
  (NaN and infinities become ``None``).
* :func:`provenance` is the one stamp: when, by which asc-search, with which library versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from . import __version__

__all__ = [
    "atomic_path",
    "atomic_output_dir",
    "replace_dir",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "sha256_file",
    "fingerprint_bytes",
    "fingerprint_file",
    "fingerprint_json",
    "jsonable",
    "now_utc",
    "library_versions",
    "provenance",
]

_FINGERPRINT_CHARS = 16
#: Libraries whose versions the provenance stamp records (those that change numbers or file formats).
_LIBRARIES = ("torch", "torchaudio", "ray", "optuna", "numpy", "pandas", "pyarrow", "onnx", "onnxruntime")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------------ atomic writes
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for any writer (Parquet, PNG, CSV...); on success it is renamed to
    ``path`` with ordinary permissions, on error it is removed and ``path`` keeps what it held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, sort_keys: bool = False) -> Path:
    """``obj`` (made JSON-safe by :func:`jsonable`) as indented JSON, written atomically."""
    text = json.dumps(jsonable(obj), indent=2, sort_keys=sort_keys) + "\n"
    return write_text_atomic(path, text)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final``, replacing whatever ``final`` held.

    ``final`` never holds a partial folder: the old one is moved aside first (rename), the new one renamed in,
    then the old one deleted.
    """
    tmp, final = Path(tmp), Path(final)
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


@contextlib.contextmanager
def atomic_output_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``final``; on success it replaces ``final``, on error it is removed.

    The folder and the files in it get ordinary permissions (``mkdtemp`` makes them private)::

        with atomic_output_dir(cache_dir) as tmp:
            write_parquet(table, tmp / "part-00000.parquet", meta)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------------ fingerprints
def sha256_file(path: str | os.PathLike[str]) -> str:
    """Full sha256 of a file's bytes as hex (streamed, so any size works)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_bytes(data: bytes, length: int = _FINGERPRINT_CHARS) -> str:
    """sha256 of ``data`` as hex, shortened to ``length`` characters."""
    return hashlib.sha256(data).hexdigest()[:length]


def fingerprint_file(path: str | os.PathLike[str], length: int = _FINGERPRINT_CHARS) -> str:
    """:func:`sha256_file`, shortened to ``length`` hex characters."""
    return sha256_file(path)[:length]


def fingerprint_json(obj: Any, length: int = _FINGERPRINT_CHARS) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys), shortened: equal content, equal fingerprint."""
    text = json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"))
    return fingerprint_bytes(text.encode("utf-8"), length)


# ------------------------------------------------------------------------------------------------ JSON-safe values
def jsonable(value: Any) -> Any:
    """``value`` as plain JSON/YAML types: mappings -> dicts with str keys, tuples/lists/arrays -> lists, paths ->
    str, numpy / torch scalars -> Python numbers, NaN and infinities -> None, dataclasses -> their ``to_dict()``
    (or fields), pandas' missing values -> None; anything else -> ``str(value)``."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, str):
        return str(value)  # also turns str subclasses (torch.__version__) into plain str
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(value.to_dict() if hasattr(value, "to_dict") else dataclasses.asdict(value))
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars, torch tensors
        return jsonable(value.tolist())
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (ImportError, TypeError, ValueError):
        pass
    return str(value)


# ------------------------------------------------------------------------------------------------ provenance
def now_utc() -> str:
    """The current time, UTC, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape numbers and file formats (those present)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in _LIBRARIES:
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def provenance(**extra: Any) -> dict[str, Any]:
    """The stamp every cache, teacher, run and export records: ``created_utc``, ``asc_search_version``,
    ``versions`` (library -> version), plus ``extra`` (e.g. the fingerprints of the inputs)."""
    return {"created_utc": now_utc(), "asc_search_version": __version__, "versions": library_versions(), **extra}
