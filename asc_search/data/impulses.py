"""Device impulse responses (DIR) as per-band gains on the log-mel grid: the bank the DIR augmentation draws from.

The feature cache holds log-mel spectrograms, so a device response is applied where it is cheap: for a response short
compared with the analysis window, filtering a clip multiplies each STFT bin's power by the response's power
``|H(f)|^2``, and each mel band's energy by the band's weighted mean of it. So an impulse response becomes one gain
per mel band (its power response on the profile's STFT grid projected with the profile's mel filterbank, the same
``torchaudio.functional.melscale_fbanks`` call :class:`~asc_search.data.features.LogMel` makes), and applying it to a
clip is adding ``log(gain)`` to the clip's log-mel, broadcast over time
(:func:`asc_search.training.augment.device_ir`). Each response's log-gains are centred (mean 0 over the bands): the
bank colours a clip, it does not change its level (impulse-response files have arbitrary gains).

Two sources:

- a folder of WAV impulse responses (any rate, resampled to the profile's; multi-channel files averaged), e.g. the
  MicIRP collection CP-JKU's DCASE 2023 system used;
- the built-in generic bank (no download): seeded random microphone-like responses, each a smooth random EQ curve
  (random dB offsets at log-spaced control points), a high-pass and a low-pass corner and 0-2 resonances or dips,
  turned into a short linear-phase FIR. They are drawn from broad priors of their own, never from the synthetic data
  set's device filters (:mod:`asc_search.data.synth_model`), which would leak the unseen devices.

A bank is identified by its ``fingerprint`` (of its log-gains), recorded in run.json and teacher.json.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import FeatureProfile
from ..errors import DataError, quote

__all__ = [
    "GENERIC_SOURCE",
    "GENERIC_IRS",
    "IRBank",
    "generic_irs",
    "read_ir_folder",
    "ir_log_gains",
    "build_ir_bank",
    "ir_bank_from_record",
]

#: ``source`` of the built-in bank.
GENERIC_SOURCE = "generic"
#: Responses in the built-in bank.
GENERIC_IRS = 64
_IR_SECONDS = 0.008  # length of a generic response: 8 ms (128 taps at 16 kHz), short against every profile's window


@dataclass(frozen=True)
class IRBank:
    """Log-gains per mel band of a set of impulse responses, and where they came from."""

    log_gains: np.ndarray  # [n_irs, n_mels] float32, natural log of the power gain, centred per response
    names: tuple[str, ...]  # a name per response (file names, or generic-000 ...)
    source: str  # "generic" or the folder (absolute path)
    seed: int | None  # the generic bank's seed (None for a folder)
    profile: str  # the feature profile the gains are on

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(np.round(self.log_gains, 5), dtype=np.float32).tobytes())
        h.update("\n".join(self.names).encode("utf-8"))
        return h.hexdigest()[:16]

    def __len__(self) -> int:
        return int(self.log_gains.shape[0])

    def to_record(self) -> dict[str, Any]:
        """What run.json / teacher.json record: ``{source, seed, profile, n_irs, fingerprint}``."""
        return {"source": self.source, "seed": self.seed, "profile": self.profile, "n_irs": len(self),
                "fingerprint": self.fingerprint}


def _design_db(freqs: np.ndarray, rng: np.random.Generator, nyquist: float) -> np.ndarray:
    """One microphone-like magnitude response in dB at ``freqs`` (Hz)."""
    f = np.maximum(freqs, 1.0)
    lo, hi = np.log(20.0), np.log(nyquist)
    points = np.linspace(lo, hi, 8)
    eq = np.interp(np.log(f), points, rng.normal(0.0, 2.5, size=points.size))  # smooth random EQ, +-~5 dB
    highpass = float(np.exp(rng.uniform(np.log(30.0), np.log(500.0))))
    lowpass = float(np.exp(rng.uniform(np.log(0.3 * nyquist), np.log(1.2 * nyquist))))
    db = eq - 10 * np.log10(1 + (highpass / f) ** 4) - 10 * np.log10(1 + (f / lowpass) ** 8)
    for _ in range(int(rng.integers(0, 3))):  # resonances (+) and dips (-)
        centre = float(np.exp(rng.uniform(np.log(200.0), np.log(0.8 * nyquist))))
        width = rng.uniform(0.3, 1.5)  # octaves
        db = db + rng.uniform(-8.0, 8.0) * np.exp(-0.5 * (np.log2(f / centre) / (width / 2)) ** 2)
    return db


def generic_irs(sample_rate: int, n: int = GENERIC_IRS, seed: int = 0) -> list[np.ndarray]:
    """``n`` generic microphone-like impulse responses at ``sample_rate``: linear-phase FIRs (Hann-windowed) of
    8 ms whose magnitude follows :func:`_design_db`. Deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    taps = max(16, int(round(_IR_SECONDS * sample_rate)) | 1)
    freqs = np.fft.rfftfreq(taps, 1.0 / sample_rate)
    out = []
    for _ in range(n):
        mag = 10 ** (_design_db(freqs, rng, sample_rate / 2) / 20)
        ir = np.fft.fftshift(np.fft.irfft(mag, n=taps)) * np.hanning(taps)
        out.append(ir.astype(np.float32))
    return out


def read_ir_folder(folder: str | os.PathLike[str]) -> list[tuple[str, np.ndarray, int]]:
    """(name, mono response, rate) of every ``*.wav`` in ``folder`` (sorted by name; searched recursively)."""
    import soundfile as sf

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"dir_folder {quote(str(root))}: not a folder; expected a folder of WAV impulse responses",
                        params=("dir_folder",))
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
    if not files:
        raise DataError(f"dir_folder {root}: holds no .wav file; expected WAV impulse responses",
                        params=("dir_folder",))
    out = []
    for path in files:
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as exc:  # noqa: BLE001 - soundfile raises several types for undecodable files
            raise DataError(f"{path}: not an audio file soundfile can decode ({str(exc)[:200]})") from None
        ir = data.mean(axis=1)
        if ir.size == 0 or not np.isfinite(ir).all() or not np.any(ir):
            raise DataError(f"{path}: an impulse response must hold finite, not all-zero samples")
        out.append((str(path.relative_to(root)), ir, int(rate)))
    return out


@functools.lru_cache(maxsize=8)
def _mel_filterbank(profile: FeatureProfile) -> Any:
    """[n_fft // 2 + 1, n_mels] float64: the filterbank of :class:`~asc_search.data.features.LogMel`'s MelScale."""
    import torchaudio.functional as AF

    return AF.melscale_fbanks(profile.n_fft // 2 + 1, profile.f_min, profile.f_max or profile.sample_rate / 2,
                              profile.n_mels, profile.sample_rate, norm=None, mel_scale="htk").double()


def ir_log_gains(ir: np.ndarray, rate: int, profile: FeatureProfile) -> np.ndarray:
    """[n_mels] centred natural-log power gains of impulse response ``ir`` (at ``rate``) on ``profile``'s mel bands.

    The power response is taken on the profile's STFT grid (a response longer than ``n_fft`` is analysed at a finer
    grid and averaged over each STFT bin's width) and projected with the profile's mel filterbank: gain of band m =
    sum_f fb[f, m] |H(f)|^2 / sum_f fb[f, m]. A band without filter weight gets gain 1."""
    import torch
    import torchaudio.functional as AF

    x = torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))
    if rate != profile.sample_rate:
        x = AF.resample(x, rate, profile.sample_rate)
    n_fft = profile.n_fft
    k = max(1, int(np.ceil(x.numel() / n_fft)))
    power = torch.fft.rfft(x.double(), n=n_fft * k).abs() ** 2  # [n_fft * k / 2 + 1]
    if k > 1:  # average the fine grid over each STFT bin's width, then sample at the STFT bins
        kernel = torch.ones(1, 1, k, dtype=power.dtype) / k
        smooth = torch.nn.functional.conv1d(power.view(1, 1, -1), kernel, padding=k // 2).view(-1)[: power.numel()]
        power = smooth[::k][: n_fft // 2 + 1]
    fb = _mel_filterbank(profile)
    weight = fb.sum(dim=0)
    gain = torch.where(weight > 0, (power @ fb) / weight.clamp_min(1e-30), torch.ones_like(weight))
    log_gain = torch.log(gain.clamp_min(1e-12))
    used = weight > 0
    log_gain[used] -= log_gain[used].mean()
    return log_gain.float().numpy()


def build_ir_bank(profile: FeatureProfile, folder: str | os.PathLike[str] | None = None, n_generic: int = GENERIC_IRS,
                  seed: int = 0) -> IRBank:
    """The bank of ``folder``'s WAV responses, or (``folder`` None) the built-in generic bank of ``n_generic``
    responses drawn with ``seed``, as log-gains on ``profile``'s mel bands."""
    if folder is None:
        irs = generic_irs(profile.sample_rate, n_generic, seed)
        gains = [ir_log_gains(ir, profile.sample_rate, profile) for ir in irs]
        names = tuple(f"generic-{i:03d}" for i in range(len(irs)))
        return IRBank(np.stack(gains), names, GENERIC_SOURCE, int(seed), profile.name)
    found = read_ir_folder(folder)
    gains = [ir_log_gains(ir, rate, profile) for _, ir, rate in found]
    return IRBank(np.stack(gains), tuple(n for n, _, _ in found), str(Path(folder).resolve()), None, profile.name)


def ir_bank_from_record(record: dict[str, Any] | None, profile: FeatureProfile,
                        folder: str | os.PathLike[str] | None = None) -> IRBank:
    """The bank a run or teacher recorded (``IRBank.to_record()``), rebuilt (``folder`` replaces a moved folder) and
    checked against its fingerprint; no record: the generic bank (seed 0)."""
    if not record:
        return build_ir_bank(profile, folder)
    source = folder if folder is not None else (None if record.get("source") == GENERIC_SOURCE else record["source"])
    n = int(record.get("n_irs") or GENERIC_IRS)
    bank = build_ir_bank(profile, source, n_generic=n, seed=int(record.get("seed") or 0))
    if bank.fingerprint != record.get("fingerprint"):
        raise DataError(f"the device impulse responses of {quote(str(source or GENERIC_SOURCE))} have fingerprint "
                        f"{bank.fingerprint}, the run recorded {quote(record.get('fingerprint'))}: the folder changed; "
                        "give dir_folder with the responses the run used", params=("dir_folder",))
    return bank
