"""Audio -> log-mel spectrograms -> the feature cache (Parquet).

``build_feature_cache(dataset_root, cache_dir, profile)`` reads every clip of the fold-1 setup with soundfile,
resamples it with ``torchaudio.transforms.Resample`` when the file's rate differs from the profile's, computes
``torchaudio.transforms.MelSpectrogram`` (power 2) and its natural log (``log(mel + 1e-5)``), and writes one row
per clip (the :func:`asc_search.data.tau.read_tau` columns + the spectrogram ``x`` as a fixed-size list) into
several Parquet files (and a manifest, ``_manifest.json``). See :mod:`asc_search.data.cache` for the layout and
the reader.

Policies:

* the audio policy (:mod:`asc_search.data.audio`): mono 1 s clips by default (within 10 ms: padded or trimmed at the
  end; stereo and other lengths refused), or ``mono="downmix"`` and ``segment=True`` for other recordings; every
  clip's header is checked before any feature is computed, and every problem is reported at once;
* missing, empty (0 bytes or 0 samples), unreadable and non-finite audio is refused, naming the file and its
  meta.csv row;
* the cache is written under a temporary name beside ``cache_dir`` and renamed when complete; a failure leaves no
  trace. Re-running with unchanged inputs (same meta/fold files, same audio file sizes and modification times,
  same profile, labels and audio policy) reuses the cache after checking its files (each Parquet footer against
  the manifest: a truncated or missing file makes it rebuild); ``force=True`` rebuilds it anyway; a folder holding
  a cache of another profile is refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .._io import atomic_output_dir, fingerprint_json, provenance, write_json_atomic
from .._progress import OnEvent, emit, warn
from .._runtime import torch_threads
from ..config import FeatureProfile, get_profile
from ..errors import CacheError, DataError
from .audio import LENGTH_TOLERANCE_S, AudioPolicy, check_audio, read_clip, segment_table
from .cache import (
    FEATURE_KIND,
    FORMAT_VERSION,
    MANIFEST,
    array_to_list_array,
    is_feature_cache,
    legacy_layout_hint,
    read_manifest,
    verify_cache_files,
    write_parquet,
)

__all__ = [
    "LENGTH_TOLERANCE_S",
    "LOG_FLOOR",
    "BuildReport",
    "build_feature_cache",
    "build_feature_cache_report",
    "LogMel",
    "read_clip",
]

#: Added to the mel power before the log.
LOG_FLOOR = 1e-5
#: Identifies the feature computation; part of the fingerprint (bump when the computation changes).
FEATURE_CODE = "logmel-v1"
_BATCH = 64  # clips per decode + mel batch
_TARGET_FILE_BYTES = 32 * 1024 * 1024  # spectrogram bytes per Parquet file (sets rows per file)


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build_feature_cache_report` did."""

    path: Path
    reused: bool  # True: an up-to-date cache was already there
    n_clips: int
    n_files: int
    seconds: float
    fingerprint: str
    profile: str


# --------------------------------------------------------------------------------------------- log-mel
class LogMel:
    """Resample (when needed) + MelSpectrogram + log, for batches of equal-rate clips ([B, T] -> [B, n_mels, F])."""

    def __init__(self, profile: FeatureProfile):
        import torch
        import torchaudio

        self.profile = profile
        window = torch.hann_window if profile.window == "hann" else torch.hamming_window
        # = torchaudio.transforms.MelSpectrogram(power=2), with the power taken as re*re + im*im of the complex STFT
        # (2.5x cheaper than |z|^2 through abs(), which computes a square root first)
        self.stft = torchaudio.transforms.Spectrogram(
            n_fft=profile.n_fft,
            win_length=profile.win_length,
            hop_length=profile.hop_length,
            window_fn=window,
            power=None,
            center=True,
        )
        self.mel = torchaudio.transforms.MelScale(
            n_mels=profile.n_mels,
            sample_rate=profile.sample_rate,
            f_min=profile.f_min,
            f_max=profile.f_max,
            n_stft=profile.n_fft // 2 + 1,
        )
        self._resamplers: dict[int, Any] = {}

    def _resampler(self, rate: int):
        import torchaudio

        if rate not in self._resamplers:
            self._resamplers[rate] = torchaudio.transforms.Resample(orig_freq=rate, new_freq=self.profile.sample_rate)
        return self._resamplers[rate]

    def __call__(self, audio: np.ndarray, rate: int) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
            if rate != self.profile.sample_rate:
                x = self._resampler(rate)(x)
            n = self.profile.n_samples
            if x.shape[-1] != n:  # resampling rounding: pad / trim to the profile's exact length
                x = torch.nn.functional.pad(x, (0, n - x.shape[-1])) if x.shape[-1] < n else x[..., :n]
            ri = torch.view_as_real(self.stft(x))
            power = torch.addcmul(ri[..., 0] * ri[..., 0], ri[..., 1], ri[..., 1])
            spec = torch.log(self.mel(power) + LOG_FLOOR)
        return spec.numpy()


# ------------------------------------------------------------------------------------------ one file
def _log_mels(root: Path, sources: Sequence[tuple[str, int]], rows: Sequence[int], logmel: LogMel,
              decoder: ThreadPoolExecutor, advance: Callable[[int], None], policy: AudioPolicy) -> np.ndarray:
    """The log-mels of the clips ``sources`` ((file under ``root``, segment) each; [n, n_mels, n_frames], the
    profile's storage dtype), read by ``policy``.

    Decoding runs on ``decoder``'s threads (libsndfile releases the GIL) one batch ahead of the log-mel, which runs
    on torch's intra-op threads: both cores stay busy without worker processes. ``rows``: each clip's meta.csv row,
    named in errors. ``advance(k)`` is called as each batch of k clips is done.
    """
    profile = logmel.profile
    dtype = np.dtype(profile.storage_dtype)
    n = len(sources)
    out = np.empty((n, profile.n_mels, profile.n_frames), dtype=dtype)

    def submit(start: int) -> list:
        stop = min(n, start + _BATCH)
        return [
            decoder.submit(read_clip, root / sources[i][0], profile.clip_seconds, f"meta.csv row {rows[i]}", policy,
                           sources[i][1])
            for i in range(start, stop)
        ]

    pending = submit(0)
    try:
        for start in range(0, n, _BATCH):
            current = pending
            pending = submit(start + _BATCH) if start + _BATCH < n else []
            by_rate: dict[int, list[tuple[int, np.ndarray]]] = {}
            for offset, future in enumerate(current):
                samples, rate = future.result()
                by_rate.setdefault(rate, []).append((start + offset, samples))
            for rate, items in by_rate.items():
                spec = logmel(np.stack([s for _, s in items]), rate).astype(dtype)
                bad = np.flatnonzero(~np.isfinite(spec).reshape(len(items), -1).all(axis=1))
                if bad.size:  # finite audio far beyond full scale overflows the power (or float16)
                    i = items[int(bad[0])][0]
                    raise DataError(f"{root / sources[i][0]}: its log-mel is not finite (meta.csv row {rows[i]}); "
                                    "expected audio samples within [-1, 1]")
                out[[i for i, _ in items]] = spec
            advance(len(current))
    finally:
        for future in pending:
            future.cancel()
    return out


def _write_file(path: Path, table: Any, x: np.ndarray, meta: dict[str, Any]) -> None:
    """One Parquet file of the cache: the clip table's columns + ``x`` (the spectrograms) + ``meta`` in its footer."""
    arrow = pa.Table.from_pandas(table.reset_index(drop=True), preserve_index=False)
    arrow = arrow.append_column("x", array_to_list_array(x[:, None]))
    # no dictionary for the spectrograms: float16 has few distinct values, so Arrow would dictionary-encode them
    # and reading back would be 2-3x slower; the string columns do benefit from it
    dictionary = [name for name in arrow.column_names if name != "x"]
    write_parquet(arrow, path, meta, row_group_size=1024, use_dictionary=dictionary)


# ------------------------------------------------------------------------------------------------ build
def _rows_per_file(profile: FeatureProfile) -> int:
    row_bytes = profile.n_mels * profile.n_frames * np.dtype(profile.storage_dtype).itemsize
    return int(np.clip(_TARGET_FILE_BYTES // row_bytes, 256, 8192))


def build_feature_cache(
    dataset_root: str | os.PathLike,
    cache_dir: str | os.PathLike,
    profile: str | FeatureProfile = "quick",
    workers: int | None = None,
    labels: str | Sequence[str] | None = None,
    rows_per_file: int | None = None,
    on_event: OnEvent | None = None,
    **options: Any,
) -> Path:
    """Build (or reuse) the feature cache of ``dataset_root`` at ``cache_dir``; returns ``cache_dir``.

    ``workers``: decoding threads and torch intra-op threads (default: the machine's cores, at most 8). ``labels``: as
    :func:`asc_search.data.tau.resolve_labels` (default: the 10 DCASE scenes). ``options``: ``mono``, ``segment``,
    ``force`` and ``allow_rare_labels`` of :func:`build_feature_cache_report`.
    """
    return build_feature_cache_report(dataset_root, cache_dir, profile, workers, labels, rows_per_file, on_event,
                                      **options).path


def build_feature_cache_report(
    dataset_root: str | os.PathLike,
    cache_dir: str | os.PathLike,
    profile: str | FeatureProfile = "quick",
    workers: int | None = None,
    labels: str | Sequence[str] | None = None,
    rows_per_file: int | None = None,
    on_event: OnEvent | None = None,
    mono: str = "refuse",
    segment: bool = False,
    force: bool = False,
    allow_rare_labels: bool = False,
) -> BuildReport:
    """Like :func:`build_feature_cache`, but says whether the cache was reused, how many clips and how long.

    ``mono`` / ``segment``: the audio policy (:class:`~asc_search.data.audio.AudioPolicy`). ``force``: rebuild even
    an up-to-date cache. ``allow_rare_labels``: with ``labels="auto"``, accept labels that look like typos
    (:func:`~asc_search.data.tau.label_anomalies`; each is then a ``warning``). ``on_event`` receives ``progress`` events (clips done) while the
    cache is built, and a ``warning`` when a reused cache has the older layout (with the commands that move it to
    the current one) or when a cache that looked up to date is damaged and is rebuilt."""
    from .tau import check_label_anomalies, dataset_fingerprint, derived_label_anomalies, read_meta, read_tau

    started = time.perf_counter()
    prof = get_profile(profile) if isinstance(profile, str) else profile
    policy = AudioPolicy(mono=mono, segment=bool(segment))
    root = Path(dataset_root)
    cache_dir = Path(cache_dir)
    table = read_tau(root, labels)
    if not allow_rare_labels:
        check_label_anomalies(table, labels)
    for message in derived_label_anomalies(table, labels):  # kept on purpose (allow_rare_labels): still said
        warn(on_event, f"{message}: a likely label typo in meta.csv")
    label_tuple = tuple(table.attrs["labels"])
    meta_row = {name: i + 2 for i, name in enumerate(read_meta(root)["filename"].tolist())}
    rows = [meta_row[name] for name in table["filename"].tolist()]
    data_fp, data_bytes = dataset_fingerprint(root, table, rows)
    inputs = {"dataset": data_fp, "profile": prof.to_dict(), "labels": label_tuple, "format": FORMAT_VERSION,
              "code": FEATURE_CODE}
    if not policy.is_default:  # the default leaves the fingerprints of existing caches as they were
        inputs["audio"] = policy.to_dict()
    fingerprint = fingerprint_json(inputs)
    existing = _reusable(cache_dir, prof, fingerprint, force, on_event)
    if existing is not None:
        hint = legacy_layout_hint(cache_dir)
        if hint:
            warn(on_event, hint)
        return BuildReport(cache_dir, True, int(existing["n_clips"]), len(existing["files"]),
                           time.perf_counter() - started, fingerprint, prof.name)

    n_workers = max(1, workers or min(os.cpu_count() or 1, 8))
    n_recordings = len(table)
    counts, _ = check_audio(root, table["filename"].tolist(), rows, prof.clip_seconds, policy, n_workers)
    if policy.segment:
        table, rows = segment_table(table, rows, counts)
    file_meta = {
        "kind": FEATURE_KIND,
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "dataset_fingerprint": data_fp,
        "profile": prof.to_dict(),
        "labels": list(label_tuple),
        "shape": [1, prof.n_mels, prof.n_frames],
        "dtype": prof.storage_dtype,
        "feature": f"{FEATURE_CODE}: torchaudio MelSpectrogram(power=2) -> log(mel + {LOG_FLOOR})",
        "audio_policy": policy.to_dict(),
        **provenance(),
    }
    per_file = rows_per_file or _rows_per_file(prof)
    with atomic_output_dir(cache_dir) as tmp:
        files = _write_files(root, tmp, table, rows, prof, file_meta, per_file, n_workers, policy, on_event)
        manifest = dict(
            file_meta,
            n_clips=len(table),
            n_recordings=n_recordings,
            files=files,
            dataset_root=str(root.resolve()),
            dataset_bytes=data_bytes,
            counts={
                "split": {k: int(v) for k, v in table["split"].value_counts().sort_index().items()},
                "device": {k: int(v) for k, v in table["device"].value_counts().sort_index().items()},
                "scene": {k: int(v) for k, v in table["scene_label"].value_counts().sort_index().items()},
            },
            length_policy=(f"whole {prof.clip_seconds:g} s segments of each recording" if policy.segment else
                           f"refuse clips off by more than {LENGTH_TOLERANCE_S * 1000:g} ms; pad/trim at the end within"),
            build_seconds=round(time.perf_counter() - started, 3),
        )
        write_json_atomic(tmp / MANIFEST, manifest)
    return BuildReport(cache_dir, False, len(table), len(files), time.perf_counter() - started, fingerprint, prof.name)


def _reusable(cache_dir: Path, prof: FeatureProfile, fingerprint: str, force: bool,
              on_event: OnEvent | None) -> dict[str, Any] | None:
    """The manifest of the cache at ``cache_dir`` when it can be reused: up to date (same fingerprint) and its files
    intact (each Parquet footer checked against the manifest), unless ``force``. None when there is nothing to
    reuse (no folder, an empty one, a cache built from other inputs, a damaged one: rebuilt in place). CacheError
    when ``cache_dir`` must not be written: a file, a cache of another profile, or a non-empty folder that is not a
    cache."""
    manifest = _existing_cache(cache_dir, prof)
    if manifest is None or force or manifest["fingerprint"] != fingerprint:
        return None
    problem = verify_cache_files(cache_dir, manifest)
    if problem is not None:
        warn(on_event, f"{problem}: rebuilding the cache")
        return None
    return manifest


def _existing_cache(cache_dir: Path, prof: FeatureProfile) -> dict[str, Any] | None:
    """The manifest of the cache of profile ``prof`` at ``cache_dir``; None when there is no folder or an empty one;
    CacheError when ``cache_dir`` must not be written (see :func:`_reusable`)."""
    if not cache_dir.exists():
        return None
    if not cache_dir.is_dir():
        raise CacheError(f"{cache_dir}: exists and is not a folder; expected a new or empty folder for the cache")
    if not is_feature_cache(cache_dir):
        if any(cache_dir.iterdir()):
            raise CacheError(
                f"{cache_dir}: exists, is not empty and holds no feature cache ({MANIFEST} missing); expected a new or "
                f"empty folder (refusing to replace it)"
            )
        return None
    try:
        manifest = read_manifest(cache_dir)
    except CacheError as exc:
        raise CacheError(f"{exc} (delete {cache_dir}, or pass force, to rebuild it)", params=("force",)) from None
    stored = manifest.get("profile", {})
    if stored.get("name") != prof.name:
        raise CacheError(
            f"{cache_dir}: holds a feature cache of profile {stored.get('name')!r} "
            f"({stored.get('n_mels')}x{manifest.get('shape', [0, 0, '?'])[-1]}); asked for profile "
            f"{prof.name!r}: choose another --out folder (one cache per profile) or delete this one"
        )
    return manifest


def _write_files(root: Path, out_dir: Path, table: Any, rows: Sequence[int], prof: FeatureProfile,
                 meta: dict[str, Any], per_file: int, n_workers: int, policy: AudioPolicy,
                 on_event: OnEvent | None) -> list[dict[str, Any]]:
    """Compute and write the cache's Parquet files into ``out_dir``, ``per_file`` clips each; their manifest entries
    ``{"name", "rows"}``."""
    from .audio import segment_source

    n = len(table)
    task = f"log-mel features ({prof.name})"
    done = 0

    def advance(k: int) -> None:
        nonlocal done
        done += k
        emit(on_event, "progress", task=task, done=done, total=n)

    advance(0)
    files = []
    names = table["filename"].tolist()
    sources = [segment_source(name) if policy.segment else (name, 0) for name in names]
    with torch_threads(n_workers), ThreadPoolExecutor(n_workers, thread_name_prefix="decode") as decoder:
        logmel = LogMel(prof)
        for k, a in enumerate(range(0, n, per_file)):
            b = min(n, a + per_file)
            x = _log_mels(root, sources[a:b], rows[a:b], logmel, decoder, advance, policy)
            name = f"features-{k:05d}.parquet"
            _write_file(out_dir / name, table.iloc[a:b], x, meta)
            files.append({"name": name, "rows": b - a})
    return files
