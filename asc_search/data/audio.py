"""Reading the clips of a data set: the audio policy (mono, 1 s) and checking every file before features are made.

Policies (:class:`AudioPolicy`):

* ``mono``: ``"refuse"`` (default) refuses audio with several channels; ``"downmix"`` averages them (as
  ``predict`` does). Refusing is the default because a stereo file in a mono data set usually means a wrong file;
* ``segment``: off (default), a clip must last ``clip_seconds`` (1 s) within :data:`LENGTH_TOLERANCE_S` (10 ms):
  inside it is zero-padded or trimmed at the end, outside it is refused (a wrong length means a wrong file, and
  padding a half-second clip with silence would teach the model silence). On, a recording of any length of at least
  one clip is cut into whole, non-overlapping 1 s segments (a remainder shorter than a clip is dropped), each one
  row of the cache (``filename#k``, k = 0, 1, ...), with the recording's labels, location, device and split.

:func:`check_audio` reads every file's header (soundfile ``info``: no samples decoded) and reports every problem at
once (the first :data:`SHOWN` and a count) instead of the first one after minutes of feature computation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["LENGTH_TOLERANCE_S", "MONO_POLICIES", "SEGMENT_SEP", "SHOWN", "AudioPolicy", "ClipInfo", "read_clip",
           "check_audio", "segment_source", "segment_table", "problems_error"]

#: Clips whose length differs from the profile's clip length by more than this (seconds) are refused.
LENGTH_TOLERANCE_S = 0.010
MONO_POLICIES = ("refuse", "downmix")
#: Separates a recording's filename from its segment number in the cache's ``filename`` column (``--segment``).
SEGMENT_SEP = "#"
#: How many problems a message lists before it counts the rest.
SHOWN = 10


@dataclass(frozen=True)
class AudioPolicy:
    """How clips that are not mono 1 s audio are treated (see the module docstring)."""

    mono: str = "refuse"
    segment: bool = False

    def __post_init__(self) -> None:
        if self.mono not in MONO_POLICIES:
            raise ConfigError(f"mono must be one of {', '.join(MONO_POLICIES)}, got {self.mono!r}", params=("mono",))

    @property
    def is_default(self) -> bool:
        return self.mono == "refuse" and not self.segment

    def to_dict(self) -> dict[str, Any]:
        return {"mono": self.mono, "segment": self.segment}


@dataclass(frozen=True)
class ClipInfo:
    """One file's header: sample rate, channels and frames."""

    rate: int
    channels: int
    frames: int


def _decode_detail(exc: Exception) -> str:
    detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if detail.startswith("Error opening") and "': " in detail:  # libsndfile repeats the path; keep the reason
        detail = detail.split("': ", 1)[1]
    return detail


def _expected(policy: AudioPolicy) -> str:
    return "a WAV file" if policy.mono == "downmix" else "a mono WAV file"


def _info(path: Path, where: str, policy: AudioPolicy) -> ClipInfo:
    """The file's header, or a DataError naming the file and ``where`` (missing, empty, not audio)."""
    import soundfile as sf

    suffix = f" ({where})" if where else ""
    try:
        size = path.stat().st_size
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(f"{path}: audio file missing{suffix}; expected {_expected(policy)}") from None
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes){suffix}; expected {_expected(policy)}")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # noqa: BLE001 - libsndfile reports corrupt files with several exception types
        raise DataError(f"{path}: cannot be decoded as audio{suffix} ({_decode_detail(exc)}); expected "
                        f"{_expected(policy)}") from None
    return ClipInfo(rate=int(info.samplerate), channels=int(info.channels), frames=int(info.frames))


def _check_shape(path: Path, info: ClipInfo, clip_seconds: float, where: str, policy: AudioPolicy) -> int:
    """How many clips the file gives (1 unless segmenting); DataError for channels or a length the policy refuses."""
    suffix = f" ({where})" if where else ""
    if info.channels != 1 and policy.mono != "downmix":
        raise DataError(f"{path}: {info.channels} channels{suffix}; pass mono 'downmix' to average the channels, "
                        "or give mono audio (1 channel)", params=("mono",))
    if info.frames == 0:
        raise DataError(f"{path}: holds no samples{suffix}; expected a {clip_seconds:g} s clip")
    expected = int(round(clip_seconds * info.rate))
    tolerance = int(round(LENGTH_TOLERANCE_S * info.rate))
    if policy.segment and info.frames >= expected - tolerance:
        return max(1, info.frames // expected)
    if abs(info.frames - expected) > tolerance:
        longer = info.frames > expected and not policy.segment
        raise DataError(
            f"{path}: {info.frames / info.rate:.3f} s ({info.frames} samples at {info.rate} Hz){suffix}; expected "
            f"{clip_seconds:g} s clips ({expected} samples, within {LENGTH_TOLERANCE_S * 1000:g} ms)"
            + (", or pass segment to cut recordings into 1 s clips" if longer else ""),
            params=("segment",) if longer else (),
        )
    return 1


def read_clip(path: str | os.PathLike, clip_seconds: float = 1.0, where: str = "",
              policy: AudioPolicy = AudioPolicy(), segment: int = 0) -> tuple[np.ndarray, int]:
    """Read one clip with soundfile: (float32 mono samples of exactly ``clip_seconds``, sample rate).

    ``segment`` k (with ``policy.segment``) reads the k-th whole clip of a longer recording. Refuses (DataError
    naming the file and ``where``) missing, empty, unreadable, multi-channel (unless ``policy.mono`` is downmix),
    non-finite and wrongly sized audio; pads/trims at the end within :data:`LENGTH_TOLERANCE_S`.
    """
    import soundfile as sf

    path = Path(path)
    suffix = f" ({where})" if where else ""
    info = _info(path, where, policy)
    count = _check_shape(path, info, clip_seconds, where, policy)
    expected = int(round(clip_seconds * info.rate))
    del count  # checked above
    start = segment * expected
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True, start=start,
                             stop=start + expected if policy.segment else None)
    except Exception as exc:  # noqa: BLE001 - a header that reads but samples that do not
        raise DataError(f"{path}: cannot be decoded as audio{suffix} ({_decode_detail(exc)}); expected "
                        f"{_expected(policy)}") from None
    samples = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(samples).all():
        raise DataError(f"{path}: holds NaN or infinite samples{suffix}; expected finite audio")
    frames = samples.shape[0]
    if frames > expected:
        samples = samples[:expected]
    elif frames < expected:
        samples = np.pad(samples, (0, expected - frames))
    return np.ascontiguousarray(samples), int(rate)


def segment_source(filename: str) -> tuple[str, int]:
    """(the recording's filename, segment number) of a cache row's ``filename`` (``audio/x.wav#3`` -> 3)."""
    base, sep, k = filename.rpartition(SEGMENT_SEP)
    return (base, int(k)) if sep and k.isdigit() else (filename, 0)


def segment_table(table: Any, rows: Sequence[int], counts: Sequence[int]) -> tuple[Any, list[int]]:
    """One row per segment: each recording's row repeated ``counts[i]`` times, ``filename#k`` (k = 0, 1, ...)."""
    index = np.repeat(np.arange(len(table)), counts)
    k = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, dtype=int)
    out = table.iloc[index].reset_index(drop=True)
    out["filename"] = out["filename"] + SEGMENT_SEP + k.astype(str)
    out.attrs = dict(table.attrs)
    return out, [rows[i] for i in index]


def problems_error(problems: Sequence[DataError], what: str = "clips") -> DataError:
    """One DataError for ``problems``: the problem itself when there is one, else the count and the first
    :data:`SHOWN`, separated by ``;`` (the parameters they name, together)."""
    params = tuple(dict.fromkeys(p for exc in problems for p in exc.params))
    if len(problems) == 1:
        return DataError(str(problems[0]), params=params)
    shown = "; ".join(map(str, problems[:SHOWN]))
    more = f"; ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return DataError(f"{len(problems)} {what} cannot be used: {shown}{more}", params=params)


def check_audio(root: Path, filenames: Sequence[str], rows: Sequence[int], clip_seconds: float,
                policy: AudioPolicy = AudioPolicy(), workers: int = 4) -> tuple[list[int], list[ClipInfo | None]]:
    """Check every clip's header against ``policy`` (threads: libsndfile releases the GIL).

    Returns the number of clips each file gives (1 each unless segmenting) and the headers; raises one DataError
    listing every problem (missing, empty, undecodable, channels, length; each with its meta.csv row)."""
    def one(i: int) -> tuple[int, ClipInfo | None, DataError | None]:
        path, where = root / filenames[i], f"meta.csv row {rows[i]}"
        try:
            info = _info(path, where, policy)
            return _check_shape(path, info, clip_seconds, where, policy), info, None
        except DataError as exc:
            return 0, None, exc

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="audio-check") as pool:
        results = list(pool.map(one, range(len(filenames))))
    problems = [problem for _, _, problem in results if problem]
    if problems:
        raise problems_error(problems)
    return [count for count, _, _ in results], [info for _, info, _ in results]
