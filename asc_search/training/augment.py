"""Batch augmentations on log-mel spectrograms [B, 1, F, T], the ones that matter for unseen devices.

- :func:`device_ir` (device impulse responses, CP-JKU DCASE 2023): with probability ``p`` per clip, add a random
  response's log mel-band gains (:mod:`asc_search.data.impulses`) to the clip's log-mel, broadcast over time: the
  clip as another device would have recorded it (exact for a response short compared with the analysis window).
- :func:`freq_mixstyle` (Schmid et al., CP-JKU DCASE 2022/2023): with probability ``p`` per batch, normalise each
  clip's per-frequency statistics (mean / std over channel and time) and re-style it with a Beta(alpha, alpha) mix
  of its own and another clip's statistics. Device characteristics live largely in these per-band statistics, so
  this simulates new devices.
- :func:`mixup`: per-clip lam ~ Beta(alpha, alpha) (folded to >= 0.5), x = lam x + (1 - lam) x[perm]; the loss mixes
  labels, teacher distributions and teacher embeddings with the same (perm, lam) (see :mod:`asc_search.training.losses`).
- frequency / time masking: torchaudio's ``FrequencyMasking`` / ``TimeMasking`` with independent masks per clip.
- :func:`time_roll`: circular shift along time by up to ``max_shift`` frames, per clip.

Random draws use the torch generator / numpy Generator passed in (or torch's global RNG for torchaudio's masks,
which :func:`asc_search.training.fit` seeds), so a seeded run is repeatable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchaudio.transforms as AT

from ..errors import ConfigError

__all__ = ["device_ir", "dir_bank_tensor", "freq_mixstyle", "mixup", "time_roll", "Masking"]


def device_ir(x: torch.Tensor, log_gains: torch.Tensor, p: float, rng: np.random.Generator) -> torch.Tensor:
    """Add ``log_gains[k]`` ([n_irs, F], one random k per clip) to each clip of ``x`` [B, C, F, T] with probability
    ``p``; ``p <= 0`` returns ``x`` untouched and draws nothing."""
    if p <= 0.0:
        return x
    b = x.shape[0]
    chosen = torch.from_numpy(rng.random(b) < p)
    which = torch.from_numpy(rng.integers(0, log_gains.shape[0], size=b))
    gains = log_gains.to(x.device, x.dtype)[which.to(x.device)] * chosen.to(x.device, x.dtype)[:, None]  # [B, F]
    return x + gains[:, None, :, None]


def dir_bank_tensor(p: float, gains: Any, n_mels: int) -> torch.Tensor | None:
    """An IR bank's log-gains as the float32 [n_irs, n_mels] tensor :func:`device_ir` takes when ``p`` > 0 (None when
    ``p`` is 0); ConfigError when they are missing or of another shape."""
    if p <= 0:
        return None
    if gains is None:
        raise ConfigError("train.dir_p > 0 needs device impulse responses: pass dir_log_gains (an IR bank's "
                          "log_gains, asc_search.data.impulses.build_ir_bank)")
    gains = torch.as_tensor(np.asarray(gains), dtype=torch.float32)
    if gains.ndim != 2 or gains.shape[0] < 1 or gains.shape[1] != n_mels:
        raise ConfigError(f"dir_log_gains must have shape [n_irs, {n_mels}] (the mel bins), got {tuple(gains.shape)}")
    return gains


def freq_mixstyle(
    x: torch.Tensor, p: float, alpha: float, rng: np.random.Generator, eps: float = 1e-6
) -> torch.Tensor:
    """Freq-MixStyle on [B, C, F, T]; returns ``x`` unchanged with probability 1 - p."""
    if p <= 0.0 or x.shape[0] < 2 or rng.random() > p:
        return x
    b = x.shape[0]
    f_mu = x.mean(dim=(1, 3), keepdim=True).detach()
    f_sig = (x.var(dim=(1, 3), keepdim=True) + eps).sqrt().detach()
    x_normed = (x - f_mu) / f_sig
    lam = torch.from_numpy(rng.beta(alpha, alpha, size=(b, 1, 1, 1)).astype(np.float32)).to(x.device, x.dtype)
    perm = torch.from_numpy(rng.permutation(b)).to(x.device)
    mu_mix = f_mu * lam + f_mu[perm] * (1 - lam)
    sig_mix = f_sig * lam + f_sig[perm] * (1 - lam)
    return x_normed * sig_mix + mu_mix


def mixup(
    x: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Mix each clip with a random partner; returns (mixed x, (perm, lam [B])) for :func:`distill_terms`."""
    b = x.shape[0]
    lam_np = rng.beta(alpha, alpha, size=b).astype(np.float32)
    lam_np = np.maximum(lam_np, 1.0 - lam_np)  # the clip's own label stays the dominant one
    lam = torch.from_numpy(lam_np).to(x.device)
    perm = torch.from_numpy(rng.permutation(b)).to(x.device)
    w = lam.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return w * x + (1 - w) * x[perm], (perm, lam)


def time_roll(x: torch.Tensor, max_shift: int, rng: np.random.Generator) -> torch.Tensor:
    """Roll each clip along the last (time) axis by an integer in [-max_shift, max_shift]."""
    if max_shift <= 0:
        return x
    b, t = x.shape[0], x.shape[-1]
    shifts = torch.from_numpy(rng.integers(-max_shift, max_shift + 1, size=b)).to(x.device)
    idx = (torch.arange(t, device=x.device)[None, :] - shifts[:, None]) % t  # [B, T]
    idx = idx.view(b, *([1] * (x.ndim - 2)), t).expand_as(x)
    return x.gather(-1, idx)


class Masking(torch.nn.Module):
    """SpecAugment-style masking: one frequency mask of up to ``freq_mask`` bins and one time mask of up to
    ``time_mask`` frames per clip (0 turns either off)."""

    def __init__(self, freq_mask: int = 0, time_mask: int = 0) -> None:
        super().__init__()
        self.freq = AT.FrequencyMasking(freq_mask, iid_masks=True) if freq_mask > 0 else None
        self.time = AT.TimeMasking(time_mask, iid_masks=True) if time_mask > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.freq is not None:
            x = self.freq(x)
        if self.time is not None:
            x = self.time(x)
        return x
