"""Built-in synthetic data in exactly the TAU Urban Acoustic Scenes 2022 Mobile layout.

What it models (per clip, 1 s mono 44.1 kHz 24-bit):

* a *scene* = a sound generator with broad priors over: diffuse background noise (spectral slope, low-pass, level,
  slow swelling), tonal parts (engine / motor / ventilation hum with harmonics and speed drift), and Poisson
  streams of events of seven kinds (footsteps, talkers, crowd babble, vehicle pass-bys, beeps and chimes, music
  notes, bird chirps, brake / rail squeal), each with its own rate and level; then room or cabin reverberation
  (exponentially decaying noise impulse response, scene-dependent RT60 and wet level);
* a *recording location* (``identifier``) draws its own parameters from its scene's prior, so two locations of one
  scene sound different and neighbouring scenes overlap (bus vs tram, airport vs mall vs metro station, street
  pedestrian vs public square); each clip then jitters around its location;
* *devices* a, b, c, s1-s6 = fixed transfer functions: high-pass and low-pass corners (bandwidth), resonances and
  dips (frequency response), gain, self-noise floor and soft or hard clipping. Clips of one moment are recorded by
  several devices, as in TAU; s4-s6 appear only in the test split, where they cost accuracy as in the real task.

What it does not model: real sound sources and their semantics, speech content, spatial (stereo) cues, long-term
temporal structure across a 10 s recording (segments are independent 1 s draws), the real devices' measured
responses, codec artefacts, or the real data set's class confusions. Use it to exercise the tool and compare
methods, not to report challenge numbers.

Deterministic for a seed: every random draw comes from numpy Generators seeded from (seed, chunk), independent of
how many worker processes render the chunks.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_output_dir
from .._progress import OnEvent, progress
from ..config import ALL_DEVICES, DCASE_LABELS, SEEN_DEVICES
from ..errors import ConfigError, DataError

__all__ = ["SAMPLE_RATE", "CITIES", "SCENES", "DEVICES", "synthesize", "plan_dataset"]

SAMPLE_RATE = 44_100
N_SAMPLES = SAMPLE_RATE  # 1 s clips
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "prague", "stockholm", "vienna")
TEST_FRACTION = 0.25  # share of clips in the test split
DEVICE_A_SHARE = 0.62  # share of device a among train clips (TAU: ~73 %)
TEST_DEVICES_PER_MOMENT = 3  # each test moment is recorded by this many devices (all 9 appear equally)
_CONTROL_RATE = 1000  # Hz: envelopes and pitch tracks are built at this rate, then interpolated
_CHUNK = 64  # base clips rendered per task

# ------------------------------------------------------------------------------------------- scene priors
# Each entry: (mean, spread). Levels in dB re full scale; rates in events/s (log-normal around the mean).
# Location draws: value ~ N(mean, spread); clip jitter is a fraction of that (see _CLIP_JITTER).
_EVENT_KINDS = ("step", "talk", "babble", "passby", "beep", "music", "chirp", "squeal")


@dataclass(frozen=True)
class _ScenePrior:
    bg_level: tuple[float, float]  # background RMS level (dBFS)
    bg_slope: tuple[float, float]  # power spectrum ~ f^-slope (0 white, 1 pink, 2 brown)
    bg_lowpass: tuple[float, float]  # log2 of the background's low-pass corner (Hz)
    bg_swell: tuple[float, float]  # depth (0..1) of slow level swelling
    hum_prob: float  # probability a location has a tonal hum
    hum_f0: tuple[float, float]  # log2 of the hum fundamental (Hz)
    hum_level: tuple[float, float]  # dB relative to the background
    hum_bright: tuple[float, float]  # harmonic roll-off exponent (low = bright)
    rates: dict  # kind -> mean events per second
    levels: dict  # kind -> event level in dB relative to the background
    rt60: tuple[float, float]  # reverberation time (s)
    wet: tuple[float, float]  # reverberant level (linear gain of the reverberant part)


def _p(**kw) -> _ScenePrior:
    rates = {k: 0.0 for k in _EVENT_KINDS}
    rates.update(kw.pop("rates"))
    levels = {k: 0.0 for k in _EVENT_KINDS}
    levels.update(kw.pop("levels"))
    return _ScenePrior(rates=rates, levels=levels, **kw)


SCENES: dict[str, _ScenePrior] = {
    # indoor, large and reverberant: PA chimes, crowd, ventilation hum
    "airport": _p(
        bg_level=(-38, 2.5), bg_slope=(1.0, 0.2), bg_lowpass=(12.5, 0.5), bg_swell=(0.1, 0.08),
        hum_prob=0.6, hum_f0=(7.0, 0.4), hum_level=(-8, 3), hum_bright=(1.6, 0.3),
        rates=dict(step=1.5, talk=1.0, babble=6.0, beep=0.45, music=0.2, passby=0.1),
        levels=dict(step=-2, talk=4, babble=1, beep=8, music=-2, passby=2),
        rt60=(1.4, 0.3), wet=(0.6, 0.12)),
    # engine hum low and strong, muffled dark background, small cabin
    "bus": _p(
        bg_level=(-31, 2.5), bg_slope=(1.9, 0.2), bg_lowpass=(11.2, 0.4), bg_swell=(0.25, 0.1),
        hum_prob=0.95, hum_f0=(6.2, 0.3), hum_level=(-1, 3), hum_bright=(1.2, 0.3),
        rates=dict(talk=0.7, babble=1.0, beep=0.12, squeal=0.05, step=0.2),
        levels=dict(talk=4, babble=-3, beep=4, squeal=0, step=-4),
        rt60=(0.3, 0.08), wet=(0.3, 0.08)),
    # loud, motor whine in the mid range, rail squeal, swelling rumble
    "metro": _p(
        bg_level=(-27, 2.5), bg_slope=(1.5, 0.25), bg_lowpass=(11.8, 0.4), bg_swell=(0.4, 0.12),
        hum_prob=0.9, hum_f0=(9.0, 0.4), hum_level=(-5, 3), hum_bright=(1.0, 0.3),
        rates=dict(talk=0.3, babble=0.8, squeal=0.45, beep=0.1),
        levels=dict(talk=2, babble=-4, squeal=4, beep=2),
        rt60=(0.35, 0.1), wet=(0.35, 0.1)),
    # very reverberant hall, footsteps, crowd, arriving trains, announcement beeps
    "metro_station": _p(
        bg_level=(-35, 2.5), bg_slope=(1.25, 0.25), bg_lowpass=(12.2, 0.5), bg_swell=(0.2, 0.1),
        hum_prob=0.4, hum_f0=(7.5, 0.5), hum_level=(-10, 3), hum_bright=(1.2, 0.3),
        rates=dict(step=2.5, talk=0.8, babble=4.0, passby=0.3, squeal=0.15, beep=0.2),
        levels=dict(step=1, talk=3, babble=-1, passby=6, squeal=3, beep=5),
        rt60=(1.8, 0.35), wet=(0.7, 0.12)),
    # quiet, wind-like dark background, many bird chirps, dry
    "park": _p(
        bg_level=(-47, 3), bg_slope=(1.4, 0.25), bg_lowpass=(10.8, 0.5), bg_swell=(0.4, 0.12),
        hum_prob=0.1, hum_f0=(6.0, 0.5), hum_level=(-12, 3), hum_bright=(1.6, 0.3),
        rates=dict(chirp=3.0, talk=0.3, step=0.4, passby=0.15, babble=0.4),
        levels=dict(chirp=10, talk=4, step=0, passby=-2, babble=-4),
        rt60=(0.15, 0.05), wet=(0.1, 0.05)),
    # open square: bright splashing background (fountain), talkers, some birds
    "public_square": _p(
        bg_level=(-41, 2.5), bg_slope=(0.6, 0.2), bg_lowpass=(12.8, 0.4), bg_swell=(0.15, 0.08),
        hum_prob=0.2, hum_f0=(6.2, 0.5), hum_level=(-10, 3), hum_bright=(1.4, 0.3),
        rates=dict(talk=1.2, babble=2.5, step=1.0, chirp=0.6, passby=0.3, music=0.1),
        levels=dict(talk=5, babble=-2, step=-1, chirp=5, passby=2, music=0),
        rt60=(0.5, 0.12), wet=(0.3, 0.08)),
    # indoor, reverberant: background music, crowd
    "shopping_mall": _p(
        bg_level=(-38, 2.5), bg_slope=(1.0, 0.2), bg_lowpass=(12.3, 0.5), bg_swell=(0.1, 0.08),
        hum_prob=0.5, hum_f0=(6.9, 0.4), hum_level=(-10, 3), hum_bright=(1.5, 0.3),
        rates=dict(babble=6.0, talk=1.0, step=1.8, music=3.0, beep=0.08),
        levels=dict(babble=0, talk=3, step=-2, music=4, beep=3),
        rt60=(1.0, 0.25), wet=(0.5, 0.12)),
    # footsteps and talkers dominate, occasional car
    "street_pedestrian": _p(
        bg_level=(-39, 2.5), bg_slope=(1.3, 0.25), bg_lowpass=(11.9, 0.5), bg_swell=(0.25, 0.1),
        hum_prob=0.25, hum_f0=(5.6, 0.4), hum_level=(-8, 3), hum_bright=(1.5, 0.3),
        rates=dict(step=3.5, talk=1.5, babble=2.0, passby=0.5, chirp=0.1, beep=0.05),
        levels=dict(step=3, talk=5, babble=-2, passby=4, chirp=2, beep=3),
        rt60=(0.4, 0.1), wet=(0.25, 0.08)),
    # frequent loud pass-bys, idling engines, horns
    "street_traffic": _p(
        bg_level=(-33, 2.5), bg_slope=(1.7, 0.25), bg_lowpass=(11.6, 0.5), bg_swell=(0.4, 0.12),
        hum_prob=0.6, hum_f0=(5.4, 0.3), hum_level=(-5, 3), hum_bright=(1.2, 0.3),
        rates=dict(passby=2.2, step=0.4, talk=0.2, beep=0.2, squeal=0.05),
        levels=dict(passby=9, step=-2, talk=2, beep=7, squeal=2),
        rt60=(0.3, 0.08), wet=(0.2, 0.06)),
    # electric motor whine (higher than the bus engine), bells, rail squeal
    "tram": _p(
        bg_level=(-32, 2.5), bg_slope=(1.55, 0.25), bg_lowpass=(11.5, 0.4), bg_swell=(0.25, 0.1),
        hum_prob=0.9, hum_f0=(8.0, 0.3), hum_level=(-4, 3), hum_bright=(1.1, 0.3),
        rates=dict(talk=0.5, babble=1.0, squeal=0.3, beep=0.3, step=0.2),
        levels=dict(talk=3, babble=-3, squeal=3, beep=6, step=-4),
        rt60=(0.3, 0.08), wet=(0.3, 0.08)),
}
assert tuple(SCENES) == DCASE_LABELS

#: How much a clip varies around its location (fraction of the scene's location spread).
_CLIP_JITTER = 0.35
#: Log-normal spread of event rates between locations (natural log units).
_RATE_SPREAD = 0.35


# ------------------------------------------------------------------------------------------------ devices
@dataclass(frozen=True)
class _Device:
    highpass: float  # Hz, 2nd-order corner
    lowpass: float  # Hz, 4th-order corner (bandwidth)
    peaks: tuple[tuple[float, float, float], ...]  # (centre Hz, gain dB, width in octaves)
    gain_db: float  # overall gain
    noise_db: float  # self-noise RMS (dBFS)
    clip: float  # clipping level (full scale = 1); <= 0: no clipping
    soft: bool  # soft (tanh) or hard clipping


DEVICES: dict[str, _Device] = {
    "a": _Device(20, 19_000, ((6000, 1.0, 1.5),), 0.0, -88, 0.0, True),
    "b": _Device(90, 15_000, ((3000, 3.0, 1.0), (300, -2.0, 1.0)), -2.0, -80, 0.0, True),
    "c": _Device(160, 11_500, ((1200, -3.0, 1.2), (5000, 4.0, 0.8)), 2.0, -78, 0.9, True),
    "s1": _Device(220, 8_000, ((2000, 5.0, 0.8),), 4.0, -74, 0.0, True),
    "s2": _Device(110, 12_000, ((8000, -6.0, 1.5), (700, 2.5, 1.0)), -1.0, -76, 0.0, True),
    "s3": _Device(300, 7_000, ((4000, 6.0, 0.6),), 1.0, -72, 0.3, True),
    # unseen in training
    "s4": _Device(420, 5_200, ((1500, 8.0, 0.7),), 6.0, -66, 0.0, True),
    "s5": _Device(130, 4_000, ((900, 3.0, 1.0),), 3.0, -70, 0.15, False),
    "s6": _Device(60, 10_000, ((2500, -10.0, 0.5), (800, 6.0, 0.6)), -4.0, -60, 0.0, True),
}
assert tuple(DEVICES) == ALL_DEVICES


def _device_response(device: _Device, freqs: np.ndarray) -> np.ndarray:
    """Magnitude response (linear) of ``device`` at ``freqs`` (Hz)."""
    f = np.maximum(freqs, 1.0)
    db = -10 * np.log10(1 + (device.highpass / f) ** 4) - 10 * np.log10(1 + (f / device.lowpass) ** 8)
    for centre, gain, width in device.peaks:
        db = db + gain * np.exp(-0.5 * (np.log2(f / centre) / width) ** 2)
    return (10 ** ((db + device.gain_db) / 20)).astype(np.float32)


# ------------------------------------------------------------------------------------------------- plan
def _counts(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def plan_dataset(n_clips: int, seed: int = 0) -> tuple[list[dict], list[tuple[int, str]]]:
    """Decide every clip: returns (moments, clips) where a moment is one scene recording (scene, city, location,
    segment, index, split, acoustic parameters) and clips are (moment index, device) pairs."""
    if n_clips < 100:
        raise ConfigError(f"--clips must be at least 100 (every scene, split and device needs clips), got {n_clips}")
    rng = np.random.default_rng([seed, 1])
    n_test = int(round(n_clips * TEST_FRACTION))
    n_train = n_clips - n_test
    n_a = int(round(n_train * DEVICE_A_SHARE))
    other = [d for d in SEEN_DEVICES if d != "a"]
    other_counts = _counts(n_train - n_a, len(other))
    n_test_moments = math.ceil(n_test / TEST_DEVICES_PER_MOMENT)

    moments: list[dict] = []
    clips: list[tuple[int, str]] = []
    location_counter = 0
    cities = list(CITIES)
    for split, n_moments in (("train", n_a), ("test", n_test_moments)):
        per_scene = _counts(n_moments, len(DCASE_LABELS))
        start = len(moments)
        for s_idx, scene in enumerate(DCASE_LABELS):
            n_s = per_scene[s_idx]
            if split == "train":
                n_locs = int(np.clip(round(n_s / 10), 3, 60))
            else:
                n_locs = int(np.clip(round(n_s / 5), 1, 30))
            n_locs = max(1, min(n_locs, n_s))
            loc_sizes = _counts(n_s, n_locs)
            for size in loc_sizes:
                city = cities[int(rng.integers(len(cities)))]
                location = str(1000 + 10 * location_counter + int(rng.integers(10)))
                location_counter += 1
                params = _draw_location(SCENES[scene], rng)
                for k in range(size):
                    segment, index = divmod(k, 10)
                    moments.append(
                        dict(scene=scene, city=city, location=location, segment=str(10_000 * (segment + 1)),
                             index=index, split=split, loc_params=params)
                    )
        ids = list(range(start, len(moments)))
        if split == "train":
            clips.extend((i, "a") for i in ids)
            for device, count in zip(other, other_counts):
                chosen = rng.choice(ids, size=min(count, len(ids)), replace=False)
                clips.extend((int(i), device) for i in sorted(chosen))
        else:
            order = rng.permutation(ids)
            slots: list[tuple[int, str]] = []
            for j in range(0, len(order), 3):
                perm = rng.permutation(ALL_DEVICES)
                for g, i in enumerate(order[j : j + 3]):
                    for device in perm[3 * g : 3 * g + 3]:
                        slots.append((int(i), str(device)))
            keep = np.sort(rng.permutation(len(slots))[:n_test])
            clips.extend(slots[k] for k in keep)
    return moments, clips


def _draw_location(prior: _ScenePrior, rng: np.random.Generator) -> dict:
    def n(pair):
        return float(rng.normal(pair[0], pair[1]))

    return dict(
        bg_level=n(prior.bg_level),
        bg_slope=max(0.0, n(prior.bg_slope)),
        bg_lowpass=float(np.clip(n(prior.bg_lowpass), 9.5, 14.2)),
        bg_swell=float(np.clip(n(prior.bg_swell), 0.0, 0.9)),
        hum=bool(rng.random() < prior.hum_prob),
        hum_f0=float(np.clip(n(prior.hum_f0), 4.6, 10.5)),
        hum_level=n(prior.hum_level),
        hum_bright=max(0.5, n(prior.hum_bright)),
        rates={k: float(v * math.exp(rng.normal(0, _RATE_SPREAD))) for k, v in prior.rates.items()},
        levels={k: float(v + rng.normal(0, 2)) for k, v in prior.levels.items()},
        rt60=float(np.clip(n(prior.rt60), 0.05, 2.5)),
        wet=float(np.clip(n(prior.wet), 0.02, 0.9)),
        spread=dict(bg_level=prior.bg_level[1], bg_slope=prior.bg_slope[1], hum_f0=prior.hum_f0[1]),
    )


# ----------------------------------------------------------------------------------------------- render
def _db(x):
    return 10.0 ** (np.asarray(x, dtype=np.float64) / 20.0)


def _rms_normalise(x: np.ndarray, level_db: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True)) + 1e-12
    return (x * (_db(level_db)[:, None] / rms)).astype(np.float32)


def _upsample(control: np.ndarray) -> np.ndarray:
    """[B, C] control-rate signal (C = 1000 + 1) -> [B, N_SAMPLES] by linear interpolation."""
    pos = np.arange(N_SAMPLES, dtype=np.float64) * (_CONTROL_RATE / SAMPLE_RATE)
    lo = pos.astype(np.int64)
    frac = (pos - lo).astype(np.float32)
    return control[:, lo] * (1 - frac) + control[:, lo + 1] * frac


def _shaped_noise(rng, batch: int, shape: np.ndarray) -> np.ndarray:
    """Gaussian noise with magnitude spectrum ``shape`` ([B, F] or [F]), unit RMS."""
    n_freq = N_SAMPLES // 2 + 1
    spec = (rng.standard_normal((batch, n_freq), dtype=np.float32)
            + 1j * rng.standard_normal((batch, n_freq), dtype=np.float32)) * shape
    x = np.fft.irfft(spec.astype(np.complex64), n=N_SAMPLES, axis=1).astype(np.float32)
    return _rms_normalise(x, np.zeros(batch))


_EVENT_SPAN = 1.4  # events start in [-0.4, 1.0) s, so tails of earlier events reach into the clip


def _events(rng, counts: np.ndarray, dur_range, batch: int):
    """Event times for ``counts`` events per clip: returns (t0, dur, amp, mask) each [B, E]."""
    e = max(1, int(counts.max()))
    t0 = rng.uniform(1.0 - _EVENT_SPAN, 1.0, size=(batch, e))
    dur = np.exp(rng.uniform(np.log(dur_range[0]), np.log(dur_range[1]), size=(batch, e)))
    amp = _db(rng.normal(0, 3, size=(batch, e)))
    mask = np.arange(e)[None, :] < counts[:, None]
    return t0, dur, amp * mask, mask


def _envelope(t0, dur, amp, attack: float, shape: str) -> np.ndarray:
    """Sum of event envelopes at the control rate: [B, C]."""
    t = np.arange(_CONTROL_RATE + 1) / _CONTROL_RATE
    rel = t[None, None, :] - t0[:, :, None]  # [B, E, C]
    d = dur[:, :, None]
    if shape == "decay":  # impact: fast attack, exponential decay with time constant dur
        env = np.where(rel >= 0, np.exp(-np.maximum(rel, 0) / d) * np.minimum(1, rel / attack + 1e-9), 0.0)
    elif shape == "bump":  # pass-by: smooth rise and fall over dur
        env = np.exp(-0.5 * ((rel - d) / (d / 2.5)) ** 2)
    else:  # "gate": flat with short ramps, length dur
        env = np.clip(np.minimum(rel / attack, (d - rel) / attack), 0, 1)
    out = np.einsum("bec,be->bc", env.astype(np.float32), amp.astype(np.float32))
    return out


def _active_track(t0, dur, amp, f_start, f_slope) -> np.ndarray:
    """Control-rate frequency track following the loudest active event: [B, C]."""
    t = np.arange(_CONTROL_RATE + 1) / _CONTROL_RATE
    rel = t[None, None, :] - t0[:, :, None]
    active = (rel >= 0) & (rel <= dur[:, :, None])
    score = np.where(active, amp[:, :, None], -1.0)
    which = np.argmax(score, axis=1)  # [B, C]
    rel_w = np.take_along_axis(rel, which[:, None, :], axis=1)[:, 0]
    f0 = np.take_along_axis(f_start, which, axis=1)
    slope = np.take_along_axis(f_slope, which, axis=1)
    return np.clip(f0 + slope * np.clip(rel_w, 0, None), 30, 18_000)


def _harmonic(freq: np.ndarray, rolloff: np.ndarray, n_harmonics: int, rng) -> np.ndarray:
    """Harmonic tone on a per-sample frequency track [B, N]: sum_k a^k sin(k phase), k = 1..K, in closed form.

    ``rolloff`` [B] in (0, 1) is a (geometric roll-off per harmonic: low = dull, high = bright); K is
    ``n_harmonics``, lowered per row so no harmonic passes 18 kHz. Cost does not grow with K.
    """
    phase = np.cumsum(freq, axis=1, dtype=np.float64)
    phase *= 2 * np.pi / SAMPLE_RATE
    phase += rng.uniform(0, 2 * np.pi, size=(freq.shape[0], 1))
    phase = np.mod(phase, 2 * np.pi).astype(np.float32)
    top = freq.max(axis=1)
    k = np.clip(np.floor(18_000 / np.maximum(top, 1.0)), 1, n_harmonics).astype(np.float32)[:, None]
    a = np.clip(rolloff, 0.05, 0.95).astype(np.float32)[:, None]
    # Im(z (1 - z^K) / (1 - z)) with z = a e^{i phase}, in real float32 arithmetic (SIMD sin/cos)
    zr, zi = a * np.cos(phase), a * np.sin(phase)
    kphase = k * phase
    ak = a**k
    one_zkr, zki = 1 - ak * np.cos(kphase), ak * np.sin(kphase)
    nr = zr * one_zkr + zi * zki
    ni = zi * one_zkr - zr * zki
    dr = 1 - zr
    return ((nr * zi + ni * dr) / (dr * dr + zi * zi)).astype(np.float32)


def _render_chunk(args) -> list[tuple[str, int]]:
    """Render one chunk of moments through their devices and write the WAVs. Returns [(filename, frames)]."""
    import soundfile as sf

    out_dir, seed, chunk_id, moments, clip_lists = args
    rng = np.random.default_rng([seed, 2, chunk_id])
    b = len(moments)
    freqs = np.fft.rfftfreq(N_SAMPLES, 1 / SAMPLE_RATE).astype(np.float32)
    f = np.maximum(freqs, 10.0)

    def loc(key):
        return np.array([m["loc_params"][key] for m in moments], dtype=np.float64)

    def jitter(key):
        spread = np.array([m["loc_params"]["spread"][key] for m in moments])
        return loc(key) + rng.normal(0, 1, b) * spread * _CLIP_JITTER

    bg_level = jitter("bg_level")
    slope = np.maximum(0.0, jitter("bg_slope"))
    lowpass = 2.0 ** loc("bg_lowpass")
    # --- background: coloured noise with a per-location low-pass and a slow swell
    shape = (f[None, :] / 1000.0) ** (-slope[:, None] / 2) / np.sqrt(1 + (f[None, :] / lowpass[:, None]) ** 4)
    bg = _shaped_noise(rng, b, shape.astype(np.float32))
    swell_rate = rng.uniform(0.2, 1.5, b)
    t = np.arange(N_SAMPLES, dtype=np.float32) / SAMPLE_RATE
    swell = 1 + loc("bg_swell")[:, None] * np.sin(2 * np.pi * swell_rate[:, None] * t + rng.uniform(0, 6.3, (b, 1)))
    bg = bg * swell.astype(np.float32)
    mix = _rms_normalise(bg, np.zeros(b))  # background at 0 dB; everything else relative to it

    # --- hum: harmonic tone with drifting speed
    has_hum = np.array([m["loc_params"]["hum"] for m in moments])
    if has_hum.any():
        f0 = 2.0 ** jitter("hum_f0")
        drift = 1 + rng.uniform(-0.06, 0.06, (b, 1)) * np.linspace(-1, 1, _CONTROL_RATE + 1)[None, :]
        wobble = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.5, 4, (b, 1)) * np.linspace(0, 1, _CONTROL_RATE + 1))
        track = _upsample((f0[:, None] * drift * wobble).astype(np.float32))
        rolloff = np.exp(-0.35 * loc("hum_bright")) * np.exp(rng.normal(0, 0.05, b))
        hum = _rms_normalise(_harmonic(track, rolloff, 12, rng), loc("hum_level"))
        mix += hum * has_hum[:, None]

    # --- events
    def rates(kind):
        return np.array([m["loc_params"]["rates"][kind] for m in moments]) * np.exp(rng.normal(0, 0.25, b))

    def level(kind):
        return np.array([m["loc_params"]["levels"][kind] for m in moments]) + rng.normal(0, 1.5, b)

    for kind in _EVENT_KINDS:
        r_all = rates(kind)
        lev_all = level(kind)
        counts = rng.poisson(np.maximum(r_all, 0) * _EVENT_SPAN)
        rows = np.flatnonzero(counts > 0)  # only clips holding at least one event of this kind are rendered
        if len(rows) == 0:
            continue
        r, lev, b_ev = counts[rows], lev_all[rows], len(rows)
        if kind == "step":
            t0, dur, amp, _ = _events(rng, r, (0.012, 0.04), b_ev)
            env = _envelope(t0, dur, amp, 0.002, "decay")
            centre = rng.uniform(800, 3000, (b_ev, 1))
            carrier = _shaped_noise(rng, b_ev, (np.exp(-0.5 * (np.log2(f / centre) / 1.2) ** 2)).astype(np.float32))
        elif kind == "babble":
            t0, dur, amp, _ = _events(rng, r, (0.08, 0.25), b_ev)
            env = _envelope(t0, dur, amp, 0.02, "gate")
            speech = np.exp(-0.5 * (np.log2(f / 500) / 1.3) ** 2) + 0.4 * np.exp(-0.5 * (np.log2(f / 2000) / 0.8) ** 2)
            carrier = _shaped_noise(rng, b_ev, speech.astype(np.float32)[None, :])
        elif kind == "passby":
            t0, dur, amp, _ = _events(rng, r, (0.25, 0.7), b_ev)
            t0 = t0 - dur  # bump peaks at t0 + dur: let peaks fall inside the clip
            env = _envelope(t0, dur, amp, 0.05, "bump")
            corner = rng.uniform(600, 2500, (b_ev, 1))
            carrier = _shaped_noise(rng, b_ev, ((f / 200) ** -0.5 / np.sqrt(1 + (f / corner) ** 4)).astype(np.float32))
        else:
            tonal = dict(
                talk=((0.1, 0.3), 0.015, "gate", (90, 260), (-150, 150), 10, 1.0),
                beep=((0.1, 0.4), 0.005, "gate", (400, 2200), (0, 0), 3, 2.5),
                music=((0.15, 0.5), 0.01, "decay", (150, 800), (0, 0), 5, 1.4),
                chirp=((0.03, 0.15), 0.005, "gate", (2200, 7500), (-30_000, 30_000), 2, 3.0),
                squeal=((0.3, 1.0), 0.05, "gate", (1500, 5000), (-400, 400), 2, 3.0),
            )[kind]
            dur_range, attack, env_shape, f_range, slope_range, n_harm, roll = tonal
            t0, dur, amp, _ = _events(rng, r, dur_range, b_ev)
            env = _envelope(t0, dur, amp, attack, env_shape)
            f_start = np.exp(rng.uniform(np.log(f_range[0]), np.log(f_range[1]), size=t0.shape))
            f_slope = rng.uniform(slope_range[0], slope_range[1], size=t0.shape)
            track = _upsample(_active_track(t0, dur, amp, f_start, f_slope).astype(np.float32))
            carrier = _harmonic(track, np.full(b_ev, np.exp(-0.35 * roll)), n_harm, rng)
            carrier = _rms_normalise(carrier, np.zeros(b_ev))
        env_full = _upsample(env.astype(np.float32))
        # level: event peak level relative to background
        mix[rows] += carrier * env_full * _db(lev)[:, None].astype(np.float32)

    # --- reverberation: dry + wet * (mix circularly convolved with a decaying-noise impulse response)
    rt60 = np.clip(loc("rt60") * np.exp(rng.normal(0, 0.1, b)), 0.05, 3.0)
    decay = np.exp(-6.91 * t[None, :] / rt60[:, None]).astype(np.float32)
    ir = rng.standard_normal((b, N_SAMPLES), dtype=np.float32) * decay
    ir[:, :int(0.004 * SAMPLE_RATE)] = 0.0  # first reflections after 4 ms
    ir_spec = np.fft.rfft(ir, axis=1)
    ir_spec /= np.sqrt(np.mean(np.abs(ir_spec) ** 2, axis=1, keepdims=True)) + 1e-12
    wet = loc("wet") * np.exp(rng.normal(0, 0.15, b))
    spec = np.fft.rfft(mix, axis=1) * (1 + wet[:, None].astype(np.float32) * ir_spec)
    # the scene's overall level: background level (per clip) sets the loudness
    spec *= _db(bg_level)[:, None].astype(np.float32)

    # --- devices: each device renders all its clips of the chunk at once
    by_device: dict[str, list[tuple[int, str]]] = {}
    for j, devices in enumerate(clip_lists):
        for device, filename in devices:
            by_device.setdefault(device, []).append((j, filename))
    written: list[tuple[str, int]] = []
    for device in sorted(by_device, key=ALL_DEVICES.index):
        items = by_device[device]
        dev = DEVICES[device]
        idx = np.array([j for j, _ in items])
        gain = _db(rng.normal(0, 1.5, len(idx))).astype(np.float32)[:, None]
        response = _device_response(dev, freqs)[None, :]
        y = np.fft.irfft(spec[idx] * response * gain, n=N_SAMPLES, axis=1).astype(np.float32)
        y += rng.standard_normal(y.shape, dtype=np.float32) * np.float32(_db(dev.noise_db))
        if dev.clip > 0:
            y = dev.clip * np.tanh(y / dev.clip) if dev.soft else np.clip(y, -dev.clip, dev.clip)
        np.clip(y, -1.0, 1.0 - 2.0**-23, out=y)
        for row, (_, filename) in enumerate(items):
            sf.write(os.path.join(out_dir, filename), y[row], SAMPLE_RATE, subtype="PCM_24", format="WAV")
            written.append((filename, N_SAMPLES))
    return written


# ------------------------------------------------------------------------------------------------- write
def synthesize(
    out_dir: str | os.PathLike, n_clips: int = 2000, seed: int = 0, workers: int | None = None,
    on_event: OnEvent | None = None,
) -> Path:
    """Write a synthetic data set of ``n_clips`` clips in the TAU layout at ``out_dir`` and return it.

    ``out_dir`` must not exist or be empty. Written under a temporary name beside it, then renamed: a crash never
    leaves a half data set. ``workers`` processes render in parallel (default: all cores, at most 2 per 1,000
    clips); the result does not depend on it. ``on_event`` receives ``progress`` events (clips written).
    """
    import pandas as pd

    if isinstance(n_clips, bool) or not isinstance(n_clips, int):
        raise ConfigError(f"n_clips must be an integer, got {n_clips!r}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty folder; expected a new or empty output folder")
    moments, clips = plan_dataset(n_clips, seed)

    rows = []
    per_moment: list[list[tuple[str, str]]] = [[] for _ in moments]
    for i, device in clips:
        m = moments[i]
        name = f"{m['scene']}-{m['city']}-{m['location']}-{m['segment']}-{m['index']}-{device}.wav"
        per_moment[i].append((device, name))
        rows.append(
            dict(filename=f"audio/{name}", scene_label=m["scene"], identifier=f"{m['city']}-{m['location']}",
                 source_label=device, split=m["split"])
        )
    table = pd.DataFrame(rows).sort_values("filename", kind="stable").reset_index(drop=True)
    if table["filename"].duplicated().any():  # pragma: no cover - the plan makes names unique
        raise RuntimeError("synthetic plan produced duplicate file names")

    with atomic_output_dir(out) as tmp:  # out is absent or an empty folder (checked above)
        audio = tmp / "audio"
        audio.mkdir()
        used = [i for i in range(len(moments)) if per_moment[i]]
        tasks = []
        for c, start in enumerate(range(0, len(used), _CHUNK)):
            ids = used[start : start + _CHUNK]
            tasks.append((str(audio), seed, c, [moments[i] for i in ids], [per_moment[i] for i in ids]))
        n_workers = workers or min(os.cpu_count() or 1, max(1, len(tasks) // 4), 8)
        _run_tasks(tasks, n_workers, on_event)

        meta = table[["filename", "scene_label", "identifier", "source_label"]]
        meta.to_csv(tmp / "meta.csv", sep="\t", index=False)
        setup = tmp / "evaluation_setup"
        setup.mkdir()
        train = table[table["split"] == "train"]
        test = table[table["split"] == "test"]
        train[["filename", "scene_label"]].to_csv(setup / "fold1_train.csv", sep="\t", index=False)
        test[["filename", "scene_label"]].to_csv(setup / "fold1_evaluate.csv", sep="\t", index=False)
        test[["filename"]].to_csv(setup / "fold1_test.csv", sep="\t", index=False)
        (tmp / "README.txt").write_text(
            f"Synthetic acoustic scenes in the TAU Urban Acoustic Scenes 2022 Mobile layout, written by asc-search "
            f"(asc_search.data.synth) with n_clips={n_clips}, seed={seed}. Not real recordings.\n",
            encoding="utf-8",
        )
    return out


def _run_tasks(tasks: list, n_workers: int, on_event: OnEvent | None = None) -> None:
    what = "synthesising clips"
    clips = lambda task: sum(len(devices) for devices in task[4])  # noqa: E731 - clips per chunk
    total = sum(clips(t) for t in tasks)
    if n_workers <= 1 or len(tasks) <= 1:
        for task in progress(tasks, what, on_event, total=total, weight=clips):
            _render_chunk(task)
        return
    import multiprocessing as mp

    # fork: the children only run numpy and soundfile, and fork needs no __main__ guard in the caller's script
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        for _ in progress(zip(tasks, pool.map(_render_chunk, tasks)), what, on_event, total=total,
                          weight=lambda pair: clips(pair[0])):
            pass
