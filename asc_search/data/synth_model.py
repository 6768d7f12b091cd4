"""What the built-in synthetic data models (:mod:`asc_search.data.synth`): each scene's priors over its sound
(background, hum, event streams, reverberation), a recording location's draw from them, and the devices' fixed
transfer functions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import ALL_DEVICES, DCASE_LABELS

__all__ = [
    "EVENT_KINDS",
    "ScenePrior",
    "SCENES",
    "CLIP_JITTER",
    "RATE_SPREAD",
    "Device",
    "DEVICES",
    "device_response",
    "draw_location",
]

# ------------------------------------------------------------------------------------------- scene priors
# Each entry: (mean, spread). Levels in dB re full scale; rates in events/s (log-normal around the mean).
# Location draws: value ~ N(mean, spread); clip jitter is a fraction of that (see CLIP_JITTER).
EVENT_KINDS = ("step", "talk", "babble", "passby", "beep", "music", "chirp", "squeal")


@dataclass(frozen=True)
class ScenePrior:
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


def _p(**kw) -> ScenePrior:
    rates = {k: 0.0 for k in EVENT_KINDS}
    rates.update(kw.pop("rates"))
    levels = {k: 0.0 for k in EVENT_KINDS}
    levels.update(kw.pop("levels"))
    return ScenePrior(rates=rates, levels=levels, **kw)


SCENES: dict[str, ScenePrior] = {
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
CLIP_JITTER = 0.35
#: Log-normal spread of event rates between locations (natural log units).
RATE_SPREAD = 0.35


# ------------------------------------------------------------------------------------------------ devices
@dataclass(frozen=True)
class Device:
    highpass: float  # Hz, 2nd-order corner
    lowpass: float  # Hz, 4th-order corner (bandwidth)
    peaks: tuple[tuple[float, float, float], ...]  # (centre Hz, gain dB, width in octaves)
    gain_db: float  # overall gain
    noise_db: float  # self-noise RMS (dBFS)
    clip: float  # clipping level (full scale = 1); <= 0: no clipping
    soft: bool  # soft (tanh) or hard clipping


DEVICES: dict[str, Device] = {
    "a": Device(20, 19_000, ((6000, 1.0, 1.5),), 0.0, -88, 0.0, True),
    "b": Device(90, 15_000, ((3000, 3.0, 1.0), (300, -2.0, 1.0)), -2.0, -80, 0.0, True),
    "c": Device(160, 11_500, ((1200, -3.0, 1.2), (5000, 4.0, 0.8)), 2.0, -78, 0.9, True),
    "s1": Device(220, 8_000, ((2000, 5.0, 0.8),), 4.0, -74, 0.0, True),
    "s2": Device(110, 12_000, ((8000, -6.0, 1.5), (700, 2.5, 1.0)), -1.0, -76, 0.0, True),
    "s3": Device(300, 7_000, ((4000, 6.0, 0.6),), 1.0, -72, 0.3, True),
    # unseen in training
    "s4": Device(420, 5_200, ((1500, 8.0, 0.7),), 6.0, -66, 0.0, True),
    "s5": Device(130, 4_000, ((900, 3.0, 1.0),), 3.0, -70, 0.15, False),
    "s6": Device(60, 10_000, ((2500, -10.0, 0.5), (800, 6.0, 0.6)), -4.0, -60, 0.0, True),
}
assert tuple(DEVICES) == ALL_DEVICES


def device_response(device: Device, freqs: np.ndarray) -> np.ndarray:
    """Magnitude response (linear) of ``device`` at ``freqs`` (Hz)."""
    f = np.maximum(freqs, 1.0)
    db = -10 * np.log10(1 + (device.highpass / f) ** 4) - 10 * np.log10(1 + (f / device.lowpass) ** 8)
    for centre, gain, width in device.peaks:
        db = db + gain * np.exp(-0.5 * (np.log2(f / centre) / width) ** 2)
    return (10 ** ((db + device.gain_db) / 20)).astype(np.float32)


def draw_location(prior: ScenePrior, rng: np.random.Generator) -> dict:
    """A recording location's parameters, drawn from its scene's prior (clips jitter around them)."""
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
        rates={k: float(v * math.exp(rng.normal(0, RATE_SPREAD))) for k, v in prior.rates.items()},
        levels={k: float(v + rng.normal(0, 2)) for k, v in prior.levels.items()},
        rt60=float(np.clip(n(prior.rt60), 0.05, 2.5)),
        wet=float(np.clip(n(prior.wet), 0.02, 0.9)),
        spread=dict(bg_level=prior.bg_level[1], bg_slope=prior.bg_slope[1], hum_f0=prior.hum_f0[1]),
    )
