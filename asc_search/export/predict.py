"""Run an exported student on audio files (``asc-search predict EXPORT_DIR AUDIO_OR_DIR...``).

Audio of any sample rate, mono or stereo, any length:

* read with soundfile; several channels are averaged to mono (the model was trained on mono clips);
* cut into windows of the export's clip length (1 s) at the file's own rate: as many whole, non-overlapping
  windows as fit, plus one window aligned to the file's end when at least half a clip is left over; a file
  shorter than one clip is zero-padded at the end to one window;
* each window goes through the same front end as the feature cache (:class:`asc_search.features.LogMel`: resample
  to the profile's rate, mel spectrogram, log), rounded to the cache's storage dtype as the training data was;
* the student's class probabilities (softmax of its logits) are averaged over the windows; the scene is the class
  with the highest mean probability.

What runs: by default the deployed graph (``student.onnx``, at the budget's precision: the counted model) with
onnxruntime on the CPU; ``precision="fp32"`` runs the float32 reference (the torch model from the safetensors
weights, on ``device``). An export folder written before the deployed model existed (format 1) runs its float32
model with one warning.

Device-specific models (``export --per-device``): an export whose ``student.yaml`` lists ``devices`` routes each
file to its device's model, the device given (``device_id``, for every file) or read from the TAU file-name pattern
``<scene>-<city>-<location>-<segment>-<index>-<device>.wav``; a file of another device, or whose name does not follow
the pattern, uses the general model. Each row says which model classified it (``model``: ``general`` or
``devices/<device>``).

A file that soundfile cannot decode (not audio), an empty file, or one with non-finite samples does not stop the
others: its row carries the error (a DataError's message naming it) and no scene. A folder is searched recursively
for ``*.wav`` files; a path that does not exist, or a folder without any, is a NotFoundError.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_path
from .._progress import OnEvent, warn
from ..errors import ConfigError, DataError, NotFoundError

__all__ = ["PREDICT_PRECISIONS", "GENERAL_MODEL", "FilePrediction", "Prediction", "collect_audio", "read_audio",
           "windows", "device_from_filename", "predict_files", "write_csv"]

#: What ``predict_files`` can run: the deployed graph, or the float32 reference.
PREDICT_PRECISIONS = ("deployed", "fp32")

AUDIO_SUFFIXES = (".wav",)
#: A trailing remainder at least this fraction of a clip gets its own (end-aligned) window.
MIN_TAIL_FRACTION = 0.5
#: ``FilePrediction.model`` of a file the general model classified.
GENERAL_MODEL = "general"
#: <scene>-<city>-<location>-<segment>-<index>-<device>.wav (the TAU Urban Acoustic Scenes file names)
_TAU_NAME = re.compile(r"^[a-z_]+-[A-Za-z]+-\d+-\d+-\d+-(?P<device>[A-Za-z0-9]+)$")


@dataclass
class FilePrediction:
    path: Path
    scene: str  # "" when the file could not be classified (see ``error``)
    probabilities: dict[str, float]  # label -> mean probability over windows
    windows: int
    duration_s: float
    sample_rate: int
    channels: int
    error: str | None = None  # why the file could not be classified (one line naming it); None when it was
    device: str | None = None  # the recording device (given, or read from the file name); None when unknown
    model: str = GENERAL_MODEL  # which model classified it: "general" or "devices/<device>"


@dataclass
class Prediction:
    model_name: str
    labels: tuple[str, ...]
    rows: list[FilePrediction] = field(default_factory=list)
    ran: str = ""  # what ran: "int8 graph (onnxruntime)", "float32 model (torch)", ...

    @property
    def failed(self) -> list[FilePrediction]:
        """The rows of files that could not be classified."""
        return [row for row in self.rows if row.error is not None]


def collect_audio(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The audio files named by ``inputs``: files as given, folders searched recursively for *.wav (sorted)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise NotFoundError(f"{path}: folder holds no .wav files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise NotFoundError(f"{path}: no such audio file or folder")
    return files


def read_audio(path: str | os.PathLike[str]) -> tuple[np.ndarray, int, int]:
    """(mono float32 samples, sample rate, channels in the file) of ``path``; channels are averaged."""
    import soundfile as sf

    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); expected a WAV audio file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports non-audio files with several exception types
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not an audio file soundfile can decode ({detail}); expected a WAV file") from None
    if data.shape[0] == 0:
        raise DataError(f"{path}: holds no samples; expected audio")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: holds NaN or infinite samples; expected finite audio")
    return np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)), int(rate), int(data.shape[1])


def windows(samples: np.ndarray, window: int) -> np.ndarray:
    """[W, window] windows of ``samples`` (see the module docstring for the rule)."""
    n = samples.shape[0]
    if n <= window:
        return np.pad(samples, (0, window - n))[None, :]
    full = n // window
    starts = [i * window for i in range(full)]
    if n - full * window >= MIN_TAIL_FRACTION * window:
        starts.append(n - window)
    return np.stack([samples[s : s + window] for s in starts])


def device_from_filename(path: str | os.PathLike[str]) -> str | None:
    """The device of a TAU file name (``airport-lisbon-1000-40000-3-s1.wav`` -> ``s1``), else None."""
    match = _TAU_NAME.match(Path(path).stem)
    return match.group("device") if match else None


def _probabilities(exported: Any, precision: str, device: str, batch_size: int,
                   on_event: OnEvent | None) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """(clips [W, 1, F, T] float32 -> class probabilities [W, K], what runs)."""
    from .._runtime import resolve_device

    if precision not in PREDICT_PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PREDICT_PRECISIONS)}, got {precision!r}",
                          params=("precision",))
    if precision == "deployed" and exported.legacy:
        warn(on_event, f"{exported.path} was exported by an older asc-search (export format 1): running its float32 "
                       "model; export the run again to get the deployed int8 / float16 model")
    if precision == "deployed" and not exported.legacy:
        from ..deploy import onnx_session, run_onnx

        path = exported.deployed_path
        if not path.is_file():
            raise NotFoundError(f"{path} does not exist (the export is incomplete)")
        session = onnx_session(path, threads=0)

        def run_graph(x: np.ndarray) -> np.ndarray:
            return torch.softmax(torch.from_numpy(run_onnx(session, x, batch_size=batch_size)), dim=1).numpy()

        return run_graph, f"{exported.precision} graph {path.name} (onnxruntime)"
    dev = resolve_device(device)
    model = exported.model.to(dev).eval()

    def run_torch(x: np.ndarray) -> np.ndarray:
        clips = torch.from_numpy(x)
        with torch.no_grad():
            probs = [torch.softmax(model(clips[i : i + batch_size].to(dev)).float(), dim=1).cpu()
                     for i in range(0, clips.shape[0], batch_size)]
        return torch.cat(probs).numpy()

    return run_torch, "float32 model (torch)"


def predict_files(
    export_dir: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    device: str = "auto",
    batch_size: int = 64,
    precision: str = "deployed",
    device_id: str | None = None,
    on_event: OnEvent | None = None,
) -> Prediction:
    """Scene and class probabilities for every audio file named by ``inputs`` (files or folders), from the deployed
    graph (``precision="deployed"``) or the float32 reference (``"fp32"``, on ``device``); routed to device models
    by ``device_id`` or the file name when the export has them (see the module docstring)."""
    from ..data.features import LogMel
    from .load import load_export

    exported = load_export(export_dir)
    files = collect_audio(inputs)
    profile = exported.profile
    front = LogMel(profile)
    general, ran = _probabilities(exported, precision, device, batch_size, on_event)
    route = _router(exported, general, precision, device, batch_size, on_event)
    store = np.float16 if profile.storage_dtype == "float16" else np.float32
    out = Prediction(model_name=str(exported.path), labels=exported.labels, ran=ran)
    for path in files:
        try:
            samples, rate, channels = read_audio(path)
        except DataError as exc:  # one bad file does not cost the others their predictions
            out.rows.append(FilePrediction(path=path, scene="", probabilities={}, windows=0, duration_s=0.0,
                                           sample_rate=0, channels=0, error=str(exc)))
            continue
        clip = int(round(profile.clip_seconds * rate))
        wins = windows(samples, clip)
        spec = front(wins, rate).astype(store).astype(np.float32)  # as the cache stores it
        dev = device_id if device_id is not None else device_from_filename(path)
        model, run = route(dev)
        mean = run(np.ascontiguousarray(spec[:, None])).mean(0)  # [W, 1, n_mels, n_frames] -> mean over windows
        label_probs = {label: float(p) for label, p in zip(exported.labels, mean)}
        out.rows.append(
            FilePrediction(
                path=path,
                scene=exported.labels[int(mean.argmax())],
                probabilities=label_probs,
                windows=int(wins.shape[0]),
                duration_s=samples.shape[0] / rate,
                sample_rate=rate,
                channels=channels,
                device=dev,
                model=model,
            )
        )
    return out


def _router(exported: Any, general: Callable[[np.ndarray], np.ndarray], precision: str, device: str, batch_size: int,
            on_event: OnEvent | None) -> Callable[[str | None], tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """device id (or None) -> (the model's name, its probabilities function); device models load on first use and
    must share the general model's labels and feature profile."""
    from .load import load_export

    index = exported.record.get("devices") or {}
    if not isinstance(index, dict):
        raise DataError(f"{exported.path / 'student.yaml'}: devices must map device ids to folders, got "
                        f"{type(index).__name__}")
    loaded: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {}

    def route(dev: str | None) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
        if dev is None or dev not in index:
            return GENERAL_MODEL, general
        if dev not in loaded:
            rel = str(index[dev])
            own = load_export(exported.path / rel)
            if own.labels != exported.labels or own.profile != exported.profile:
                raise DataError(f"{own.path}: the model of device {dev} has other labels or another feature profile "
                                "than the general model")
            loaded[dev] = (rel, _probabilities(own, precision, device, batch_size, on_event)[0])
        return loaded[dev]

    return route


def write_csv(prediction: Prediction, path: str | os.PathLike[str]) -> Path:
    """One row per file: file, scene, windows, duration_s, sample_rate, channels, one column per class, device, model
    (which model classified it), error (empty
    for a classified file; for a file that could not be, the reason, and the other columns empty). Written under a
    temporary name, then renamed."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "scene", "windows", "duration_s", "sample_rate", "channels", *prediction.labels,
                         "device", "model", "error"])
        for row in prediction.rows:
            if row.error is not None:
                writer.writerow([str(row.path), *[""] * (7 + len(prediction.labels)), row.error])
                continue
            writer.writerow([str(row.path), row.scene, row.windows, f"{row.duration_s:.3f}", row.sample_rate,
                             row.channels, *[f"{row.probabilities[k]:.6f}" for k in prediction.labels],
                             row.device or "", row.model, ""])
    return path
