"""Settings shared across phases: scene labels, devices, feature profiles and the complexity budget.

The budget and the feature profiles live here and nowhere else. Constructors validate and name the bad key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, quote

__all__ = [
    "DCASE_LABELS",
    "SEEN_DEVICES",
    "UNSEEN_DEVICES",
    "ALL_DEVICES",
    "FeatureProfile",
    "PROFILES",
    "get_profile",
    "DTYPE_BYTES",
    "DEPLOYED_BIAS_BYTES",
    "Budget",
    "SUBSET_PERCENTS",
    "SplitConfig",
    "reject_unknown_keys",
]

#: The 10 DCASE Task 1 scene labels in the organisers' reference order (label index = position).
DCASE_LABELS: tuple[str, ...] = (
    "airport",
    "bus",
    "metro",
    "metro_station",
    "park",
    "public_square",
    "shopping_mall",
    "street_pedestrian",
    "street_traffic",
    "tram",
)

#: Devices present in the training split (real a, b, c and simulated s1-s3).
SEEN_DEVICES: tuple[str, ...] = ("a", "b", "c", "s1", "s2", "s3")
#: Simulated devices that appear only in the test split.
UNSEEN_DEVICES: tuple[str, ...] = ("s4", "s5", "s6")
ALL_DEVICES: tuple[str, ...] = SEEN_DEVICES + UNSEEN_DEVICES


def reject_unknown_keys(cls: type, data: Any, what: str) -> None:
    """Raise ConfigError when the mapping ``data`` has keys that are not fields of the dataclass ``cls``; the message
    names ``what``, the unknown keys and the valid ones (in declaration order)."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted((k for k in data if k not in known), key=str)
    if unknown:
        shown = ", ".join(quote(k, 60) for k in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise ConfigError(f"{what}: unknown key(s) {shown}; valid keys: {', '.join(known)}")


@dataclass(frozen=True)
class FeatureProfile:
    """How a 1 s clip becomes a log-mel spectrogram (n_mels x n_frames)."""

    name: str
    sample_rate: int  # audio is resampled to this rate before the STFT
    n_mels: int  # mel bands (rows of the spectrogram)
    n_fft: int  # FFT size
    win_length: int  # analysis window length in samples
    hop_length: int  # hop in samples
    window: str = "hann"  # "hann" or "hamming"
    f_min: float = 0.0  # lowest mel band edge (Hz)
    f_max: float | None = None  # highest mel band edge (Hz); None = sample_rate / 2
    clip_seconds: float = 1.0  # expected clip length; shorter/longer clips are refused
    storage_dtype: str = "float16"  # dtype of the spectrogram in the Parquet cache

    def __post_init__(self) -> None:
        for key in ("sample_rate", "n_mels", "n_fft", "win_length", "hop_length"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"feature profile {self.name!r}: {key} must be a positive integer, got {quote(value)}")
        if self.win_length > self.n_fft:
            raise ConfigError(
                f"feature profile {self.name!r}: win_length ({self.win_length}) must be <= n_fft ({self.n_fft})"
            )
        if self.window not in ("hann", "hamming"):
            raise ConfigError(f"feature profile {self.name!r}: window must be 'hann' or 'hamming', got {quote(self.window)}")
        if self.storage_dtype not in ("float16", "float32"):
            raise ConfigError(
                f"feature profile {self.name!r}: storage_dtype must be 'float16' or 'float32', got {quote(self.storage_dtype)}"
            )

    @property
    def n_samples(self) -> int:
        """Samples per clip at ``sample_rate``."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """STFT frames per clip (centred frames, as torchaudio computes them)."""
        return self.n_samples // self.hop_length + 1

    @property
    def shape(self) -> tuple[int, int]:
        """(n_mels, n_frames): one clip's spectrogram shape."""
        return (self.n_mels, self.n_frames)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureProfile:
        reject_unknown_keys(cls, data, "feature profile")
        return cls(**data)


#: Built-in profiles. ``dcase``: the DCASE 2024 baseline front end (256 x 65). ``quick``: small, for demos and
#: tests (40 x 51). ``dcase2023``: the DCASE 2022/2023 baseline front end (40 x 51 at 44.1 kHz).
PROFILES: dict[str, FeatureProfile] = {
    "dcase": FeatureProfile(
        name="dcase", sample_rate=32_000, n_mels=256, n_fft=4096, win_length=3072, hop_length=500, window="hann"
    ),
    "quick": FeatureProfile(
        name="quick", sample_rate=16_000, n_mels=40, n_fft=1024, win_length=800, hop_length=320, window="hann"
    ),
    "dcase2023": FeatureProfile(
        name="dcase2023", sample_rate=44_100, n_mels=40, n_fft=2048, win_length=1764, hop_length=882, window="hamming"
    ),
}


def get_profile(name: str) -> FeatureProfile:
    """The built-in profile ``name``; an unknown name lists the valid ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown feature profile {quote(name)}; valid profiles: {', '.join(sorted(PROFILES))}") from None


#: Bytes per parameter for each storage dtype the budget understands.
DTYPE_BYTES: dict[str, int] = {"int8": 1, "float16": 2, "float32": 4}
#: Bytes per bias element of the deployed graph at each dtype: an int8 graph keeps its biases (after BatchNorm
#: folding, one per output channel) as int32, the ONNX / onnxruntime convention for quantised convolutions.
DEPLOYED_BIAS_BYTES: dict[str, int] = {"int8": 4, "float16": 2, "float32": 4}


@dataclass(frozen=True)
class Budget:
    """The complexity budget: DCASE 2023/2024 Task 1 limits by default."""

    max_param_bytes: int = 128_000  # parameter memory limit in bytes (128 kB = 128,000 bytes)
    param_dtype: str = "int8"  # how parameters are stored when deployed
    max_macs: int = 30_000_000  # multiply-accumulates for one 1 s clip

    def __post_init__(self) -> None:
        if self.param_dtype not in DTYPE_BYTES:
            raise ConfigError(
                f"budget.param_dtype must be one of {', '.join(DTYPE_BYTES)}, got {quote(self.param_dtype)}"
            )
        for key in ("max_param_bytes", "max_macs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"budget.{key} must be a positive integer, got {quote(value)}")

    @property
    def max_params(self) -> int:
        """How many parameters fit in ``max_param_bytes`` at ``param_dtype``."""
        return self.max_param_bytes // DTYPE_BYTES[self.param_dtype]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: DCASE 2024 nested training subsets, in percent of the train split (``split5.csv`` ... ``split100.csv``).
SUBSET_PERCENTS: tuple[int, ...] = (5, 10, 25, 50, 100)


@dataclass(frozen=True)
class SplitConfig:
    """How the validation split is carved from train: by recording location (``identifier``), never by clip.

    ``subset`` (percent, one of :data:`SUBSET_PERCENTS`) restricts train to the DCASE 2024 training subset of that
    size (the data set's ``split<N>.csv``; DCASE 2025 Task 1 trains on the 25 % one): train clips outside it are
    left out, and validation is carved from the subset's clips. None: all of train."""

    val_fraction: float = 0.2  # fraction of train recording locations moved to validation
    seed: int = 0  # seed of the location shuffle
    subset: int | None = None  # DCASE 2024 training subset in percent (5, 10, 25, 50, 100); None = all of train

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be strictly between 0 and 1, got {quote(self.val_fraction)}")
        if self.subset is not None and (isinstance(self.subset, bool) or self.subset not in SUBSET_PERCENTS):
            raise ConfigError(f"subset must be one of {', '.join(map(str, SUBSET_PERCENTS))} (percent of train), got "
                              f"{quote(self.subset)}", params=("subset",))
