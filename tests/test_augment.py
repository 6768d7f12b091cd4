"""The augmentations do what they claim, on the axis they claim, and nothing else: each test would fail for a no-op,
for the wrong axis or for a change outside what is augmented. All draws are seeded."""

import numpy as np
import pytest
import torch

from asc_search.training.augment import Masking, freq_mixstyle, mixup, time_roll

B, F, T = 8, 12, 20


def _batch(seed=0):
    """[B, 1, F, T]: every clip has its own per-band level and spread, plus a time pattern."""
    g = torch.Generator().manual_seed(seed)
    level = torch.randn(B, 1, F, 1, generator=g) * 3
    spread = torch.rand(B, 1, F, 1, generator=g) + 0.5
    return level + spread * torch.randn(B, 1, F, T, generator=g)


def _band_stats(x, eps=1e-6):
    """Per clip and frequency band: mean and std over channel and time (what Freq-MixStyle re-styles)."""
    return x.mean(dim=(1, 3)), (x.var(dim=(1, 3)) + eps).sqrt()


def test_freq_mixstyle_mixes_frequency_statistics_only():
    x = _batch()
    out = freq_mixstyle(x, p=1.0, alpha=0.3, rng=np.random.default_rng(0))
    assert out.shape == x.shape and not torch.allclose(out, x, atol=1e-3)  # not a no-op
    # 1) within each (clip, band) the time course is kept up to scale and offset: only band statistics change
    def standardise(v):
        return (v - v.mean(dim=-1, keepdim=True)) / v.std(dim=-1, keepdim=True)

    torch.testing.assert_close(standardise(out), standardise(x), atol=1e-4, rtol=1e-4)
    # 2) each clip's new band means and stds are ONE mix lam * own + (1 - lam) * a partner's, over all bands
    mu, sig = _band_stats(x)
    mu_out, sig_out = _band_stats(out)
    restyled = 0
    for i in range(B):
        best = None
        for j in range(B):
            d = mu[i] - mu[j]
            if j != i and d.norm() < 1e-6:
                continue
            lam = 1.0 if j == i else float(((mu_out[i] - mu[j]) @ d) / (d @ d))
            err = (mu_out[i] - (lam * mu[i] + (1 - lam) * mu[j])).abs().max()
            err_sig = (sig_out[i] - (lam * sig[i] + (1 - lam) * sig[j])).abs().max()
            if 0.0 <= lam <= 1.0 + 1e-6 and err < 1e-3 and err_sig < 1e-3:
                best = j
        assert best is not None, f"clip {i}: band statistics are not a mix of its own and one partner's"
        restyled += best != i and not torch.allclose(mu_out[i], mu[i], atol=1e-3)
    assert restyled >= B // 2  # most clips took on another clip's style


def test_freq_mixstyle_is_seeded_and_skipped_with_probability_1_minus_p():
    x = _batch()
    a = freq_mixstyle(x, 1.0, 0.3, np.random.default_rng(5))
    b = freq_mixstyle(x, 1.0, 0.3, np.random.default_rng(5))
    c = freq_mixstyle(x, 1.0, 0.3, np.random.default_rng(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert freq_mixstyle(x, 0.0, 0.3, np.random.default_rng(0)) is x
    torch.testing.assert_close(freq_mixstyle(x[:1], 1.0, 0.3, np.random.default_rng(0)), x[:1])
    applied = sum(not torch.equal(freq_mixstyle(x, 0.4, 0.3, np.random.default_rng(s)), x) for s in range(200))
    assert 50 < applied < 110  # p = 0.4 of 200 batches, binomial sd ~7


def test_mixup_mixes_pairs_with_the_drawn_weights():
    x = _batch()
    mixed, (perm, lam) = mixup(x, alpha=0.3, rng=np.random.default_rng(1))
    assert sorted(perm.tolist()) == list(range(B)) and perm.tolist() != list(range(B))
    assert lam.shape == (B,) and bool((lam >= 0.5).all()) and bool((lam <= 1).all())  # own clip dominates
    assert bool((lam < 0.99).any())  # some clips really mixed
    for i in range(B):
        torch.testing.assert_close(mixed[i], lam[i] * x[i] + (1 - lam[i]) * x[perm[i]])
    again, (perm2, lam2) = mixup(x, alpha=0.3, rng=np.random.default_rng(1))
    assert torch.equal(again, mixed) and torch.equal(perm2, perm) and torch.equal(lam2, lam)


@pytest.mark.parametrize("axis, limit", [("freq", 5), ("time", 6)])
def test_masking_zeros_whole_bands_or_frames_only(axis, limit):
    """A frequency mask zeros some whole bands (all frames), a time mask some whole frames (all bands): one contiguous
    run of at most ``limit`` per clip, its own for each clip; nothing else changes."""
    x = _batch().abs() + 1.0  # no zeros before masking
    torch.manual_seed(0)
    out = Masking(freq_mask=limit if axis == "freq" else 0, time_mask=limit if axis == "time" else 0)(x)
    changed = (out != x)[:, 0]  # [B, F, T]
    assert bool((out[:, 0][changed] == 0).all()), "masking changed values to something other than 0"
    if axis == "time":
        changed = changed.transpose(1, 2)  # [B, T, F]: rows are now frames
    masks = []
    for i in range(B):
        rows = torch.nonzero(changed[i].any(dim=1)).flatten().tolist()
        assert all(bool(changed[i, r].all()) for r in rows), f"a {axis} mask must cover its rows entirely"
        if rows:
            assert rows == list(range(rows[0], rows[0] + len(rows))), "one contiguous run per clip"
        masks.append((rows[0] if rows else None, len(rows)))
    assert sum(w > 0 for _, w in masks) >= B // 2 and max(w for _, w in masks) <= limit
    assert len(set(masks)) > 1  # a mask of its own per clip
    assert Masking(0, 0)(x) is x


def test_time_roll_shifts_along_time_only_and_circularly():
    x = _batch()
    out = time_roll(x, max_shift=4, rng=np.random.default_rng(3))
    shifts = []
    for i in range(B):
        match = [s for s in range(-4, 5) if torch.equal(out[i], torch.roll(x[i], s, dims=-1))]
        assert match, f"clip {i} is not x rolled along time by at most 4 frames"
        shifts.append(match[0])
    assert any(shifts) and len(set(shifts)) > 1  # clips are shifted, each by its own draw
    # circular: what leaves one end comes back at the other (torch.roll above); the frequency axis is untouched
    torch.testing.assert_close(out.sum(dim=-1), x.sum(dim=-1))
    assert time_roll(x, 0, np.random.default_rng(0)) is x
    assert torch.equal(out, time_roll(x, 4, np.random.default_rng(3)))


@pytest.mark.parametrize("shape", [(4, 1, 6, 9), (3, 2, 5, 7)])
def test_augmentations_keep_shape_and_dtype(shape):
    x = torch.randn(*shape)
    rng = np.random.default_rng(0)
    for out in (freq_mixstyle(x, 1.0, 0.3, rng), mixup(x, 0.3, rng)[0], time_roll(x, 2, rng), Masking(2, 2)(x)):
        assert out.shape == x.shape and out.dtype == x.dtype


def test_device_ir_adds_exactly_the_chosen_responses_log_gain_to_the_chosen_clips():
    from asc_search.training.augment import device_ir

    x = _batch()
    gains = torch.randn(5, F)
    out = device_ir(x, gains, p=0.5, rng=np.random.default_rng(3))
    # the same draws, in the same order: which clips, then which response
    rng = np.random.default_rng(3)
    chosen, which = rng.random(B) < 0.5, rng.integers(0, 5, size=B)
    assert 0 < chosen.sum() < B  # the seed picks some clips and leaves others
    for i in range(B):
        want = x[i] + gains[which[i]][None, :, None] if chosen[i] else x[i]
        torch.testing.assert_close(out[i], want)  # the whole band gain, constant over time, on that clip only
    assert torch.equal(device_ir(x, gains, p=1.0, rng=np.random.default_rng(0)) - x != 0,
                       torch.ones_like(x, dtype=torch.bool))  # p = 1: every clip (random gains are never 0)


def test_device_ir_off_is_a_no_op_that_draws_nothing():
    from asc_search.training.augment import device_ir

    x, rng = _batch(), np.random.default_rng(0)
    before = rng.bit_generator.state
    assert device_ir(x, torch.randn(3, F), p=0.0, rng=rng) is x
    assert rng.bit_generator.state == before  # a run with dir_p 0 draws exactly what it drew before DIR existed
