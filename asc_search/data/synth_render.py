"""Rendering the built-in synthetic data (:mod:`asc_search.data.synth`): a chunk of recording moments through
their scene's sound model (background, hum, event streams, reverberation) and through each device that records
them, written as 24-bit WAV files. Every draw comes from one numpy Generator seeded by (seed, chunk), so a chunk
renders the same whichever process renders it."""

from __future__ import annotations

import os

import numpy as np

from ..config import ALL_DEVICES
from .synth_model import CLIP_JITTER, DEVICES, EVENT_KINDS, device_response

__all__ = ["SAMPLE_RATE", "N_SAMPLES", "render_chunk"]

SAMPLE_RATE = 44_100
N_SAMPLES = SAMPLE_RATE  # 1 s clips
_CONTROL_RATE = 1000  # Hz: envelopes and pitch tracks are built at this rate, then interpolated


# ------------------------------------------------------------------------------------------ primitives
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


# ------------------------------------------------------------------------------------------ one chunk
def _loc(moments: list[dict], key: str) -> np.ndarray:
    """The locations' value of ``key``, one per moment."""
    return np.array([m["loc_params"][key] for m in moments], dtype=np.float64)


def _jitter(moments: list[dict], key: str, rng: np.random.Generator) -> np.ndarray:
    """Each clip's value of ``key``: its location's, jittered by a fraction of the scene's location spread."""
    spread = np.array([m["loc_params"]["spread"][key] for m in moments])
    return _loc(moments, key) + rng.normal(0, 1, len(moments)) * spread * CLIP_JITTER


def _background(moments: list[dict], rng: np.random.Generator, f: np.ndarray,
                t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(background at 0 dB: coloured noise, per-location low-pass, slow swell; each clip's background level)."""
    b = len(moments)
    bg_level = _jitter(moments, "bg_level", rng)
    slope = np.maximum(0.0, _jitter(moments, "bg_slope", rng))
    lowpass = 2.0 ** _loc(moments, "bg_lowpass")
    shape = (f[None, :] / 1000.0) ** (-slope[:, None] / 2) / np.sqrt(1 + (f[None, :] / lowpass[:, None]) ** 4)
    bg = _shaped_noise(rng, b, shape.astype(np.float32))
    swell_rate = rng.uniform(0.2, 1.5, b)
    swell = 1 + _loc(moments, "bg_swell")[:, None] * np.sin(
        2 * np.pi * swell_rate[:, None] * t + rng.uniform(0, 6.3, (b, 1)))
    bg = bg * swell.astype(np.float32)
    return _rms_normalise(bg, np.zeros(b)), bg_level  # everything else is relative to the background


def _hum(moments: list[dict], rng: np.random.Generator) -> np.ndarray | None:
    """Harmonic hum with drifting speed for the locations that have one (zero rows elsewhere); None if none has."""
    has_hum = np.array([m["loc_params"]["hum"] for m in moments])
    if not has_hum.any():
        return None
    b = len(moments)
    f0 = 2.0 ** _jitter(moments, "hum_f0", rng)
    drift = 1 + rng.uniform(-0.06, 0.06, (b, 1)) * np.linspace(-1, 1, _CONTROL_RATE + 1)[None, :]
    wobble = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.5, 4, (b, 1)) * np.linspace(0, 1, _CONTROL_RATE + 1))
    track = _upsample((f0[:, None] * drift * wobble).astype(np.float32))
    rolloff = np.exp(-0.35 * _loc(moments, "hum_bright")) * np.exp(rng.normal(0, 0.05, b))
    return _rms_normalise(_harmonic(track, rolloff, 12, rng), _loc(moments, "hum_level")) * has_hum[:, None]


#: Tonal events: (duration range s, attack s, envelope, start frequency range Hz, glide range Hz/s, harmonics,
#: roll-off).
_TONAL = dict(
    talk=((0.1, 0.3), 0.015, "gate", (90, 260), (-150, 150), 10, 1.0),
    beep=((0.1, 0.4), 0.005, "gate", (400, 2200), (0, 0), 3, 2.5),
    music=((0.15, 0.5), 0.01, "decay", (150, 800), (0, 0), 5, 1.4),
    chirp=((0.03, 0.15), 0.005, "gate", (2200, 7500), (-30_000, 30_000), 2, 3.0),
    squeal=((0.3, 1.0), 0.05, "gate", (1500, 5000), (-400, 400), 2, 3.0),
)


def _event_sound(kind: str, counts: np.ndarray, rng: np.random.Generator, f: np.ndarray) -> np.ndarray:
    """[B, N] the events of ``kind`` (``counts`` per clip), each clip's stream at 0 dB peak level."""
    b = len(counts)
    if kind == "step":
        t0, dur, amp, _ = _events(rng, counts, (0.012, 0.04), b)
        env = _envelope(t0, dur, amp, 0.002, "decay")
        centre = rng.uniform(800, 3000, (b, 1))
        carrier = _shaped_noise(rng, b, (np.exp(-0.5 * (np.log2(f / centre) / 1.2) ** 2)).astype(np.float32))
    elif kind == "babble":
        t0, dur, amp, _ = _events(rng, counts, (0.08, 0.25), b)
        env = _envelope(t0, dur, amp, 0.02, "gate")
        speech = np.exp(-0.5 * (np.log2(f / 500) / 1.3) ** 2) + 0.4 * np.exp(-0.5 * (np.log2(f / 2000) / 0.8) ** 2)
        carrier = _shaped_noise(rng, b, speech.astype(np.float32)[None, :])
    elif kind == "passby":
        t0, dur, amp, _ = _events(rng, counts, (0.25, 0.7), b)
        t0 = t0 - dur  # bump peaks at t0 + dur: let peaks fall inside the clip
        env = _envelope(t0, dur, amp, 0.05, "bump")
        corner = rng.uniform(600, 2500, (b, 1))
        carrier = _shaped_noise(rng, b, ((f / 200) ** -0.5 / np.sqrt(1 + (f / corner) ** 4)).astype(np.float32))
    else:
        dur_range, attack, env_shape, f_range, slope_range, n_harm, roll = _TONAL[kind]
        t0, dur, amp, _ = _events(rng, counts, dur_range, b)
        env = _envelope(t0, dur, amp, attack, env_shape)
        f_start = np.exp(rng.uniform(np.log(f_range[0]), np.log(f_range[1]), size=t0.shape))
        f_slope = rng.uniform(slope_range[0], slope_range[1], size=t0.shape)
        track = _upsample(_active_track(t0, dur, amp, f_start, f_slope).astype(np.float32))
        carrier = _harmonic(track, np.full(b, np.exp(-0.35 * roll)), n_harm, rng)
        carrier = _rms_normalise(carrier, np.zeros(b))
    return carrier * _upsample(env.astype(np.float32))


def _add_events(mix: np.ndarray, moments: list[dict], rng: np.random.Generator, f: np.ndarray) -> None:
    """Add every kind's Poisson event stream, at its location's rate and level relative to the background."""
    b = len(moments)
    for kind in EVENT_KINDS:
        rate = np.array([m["loc_params"]["rates"][kind] for m in moments]) * np.exp(rng.normal(0, 0.25, b))
        level = np.array([m["loc_params"]["levels"][kind] for m in moments]) + rng.normal(0, 1.5, b)
        counts = rng.poisson(np.maximum(rate, 0) * _EVENT_SPAN)
        rows = np.flatnonzero(counts > 0)  # only clips holding at least one event of this kind are rendered
        if len(rows):
            mix[rows] += _event_sound(kind, counts[rows], rng, f) * _db(level[rows])[:, None].astype(np.float32)


def _reverberate(mix: np.ndarray, moments: list[dict], rng: np.random.Generator, t: np.ndarray,
                 bg_level: np.ndarray) -> np.ndarray:
    """Spectrum of dry + wet * (mix circularly convolved with a decaying-noise impulse response), at the clip's
    background level (which sets the scene's loudness)."""
    b = len(moments)
    rt60 = np.clip(_loc(moments, "rt60") * np.exp(rng.normal(0, 0.1, b)), 0.05, 3.0)
    decay = np.exp(-6.91 * t[None, :] / rt60[:, None]).astype(np.float32)
    ir = rng.standard_normal((b, N_SAMPLES), dtype=np.float32) * decay
    ir[:, :int(0.004 * SAMPLE_RATE)] = 0.0  # first reflections after 4 ms
    ir_spec = np.fft.rfft(ir, axis=1)
    ir_spec /= np.sqrt(np.mean(np.abs(ir_spec) ** 2, axis=1, keepdims=True)) + 1e-12
    wet = _loc(moments, "wet") * np.exp(rng.normal(0, 0.15, b))
    spec = np.fft.rfft(mix, axis=1) * (1 + wet[:, None].astype(np.float32) * ir_spec)
    spec *= _db(bg_level)[:, None].astype(np.float32)
    return spec


def _record(spec: np.ndarray, clip_lists: list, rng: np.random.Generator, freqs: np.ndarray,
            out_dir: str) -> list[tuple[str, int]]:
    """Each device renders all its clips of the chunk at once (response, gain, self-noise, clipping) and writes
    them; returns [(filename, frames)]."""
    import soundfile as sf

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
        response = device_response(dev, freqs)[None, :]
        y = np.fft.irfft(spec[idx] * response * gain, n=N_SAMPLES, axis=1).astype(np.float32)
        y += rng.standard_normal(y.shape, dtype=np.float32) * np.float32(_db(dev.noise_db))
        if dev.clip > 0:
            y = dev.clip * np.tanh(y / dev.clip) if dev.soft else np.clip(y, -dev.clip, dev.clip)
        np.clip(y, -1.0, 1.0 - 2.0**-23, out=y)
        for row, (_, filename) in enumerate(items):
            sf.write(os.path.join(out_dir, filename), y[row], SAMPLE_RATE, subtype="PCM_24", format="WAV")
            written.append((filename, N_SAMPLES))
    return written


def render_chunk(args: tuple) -> list[tuple[str, int]]:
    """Render one chunk ``(out_dir, seed, chunk_id, moments, clip_lists)`` of moments through their devices and
    write the WAVs. Returns [(filename, frames)]."""
    out_dir, seed, chunk_id, moments, clip_lists = args
    rng = np.random.default_rng([seed, 2, chunk_id])
    freqs = np.fft.rfftfreq(N_SAMPLES, 1 / SAMPLE_RATE).astype(np.float32)
    f = np.maximum(freqs, 10.0)
    t = np.arange(N_SAMPLES, dtype=np.float32) / SAMPLE_RATE
    mix, bg_level = _background(moments, rng, f, t)
    hum = _hum(moments, rng)
    if hum is not None:
        mix += hum
    _add_events(mix, moments, rng, f)
    return _record(_reverberate(mix, moments, rng, t, bg_level), clip_lists, rng, freqs, out_dir)
