"""distill_loss against hand computations: CE, KD scaled by T^2, MSE and cosine embedding losses, mixup."""

import math

import pytest
import torch

from asc_search.errors import ConfigError
from asc_search.training.losses import DistillConfig, distill_loss


def _softmax(v):
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def test_plain_cross_entropy():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    loss, parts = distill_loss(s, torch.tensor([1]), DistillConfig())
    assert float(loss) == pytest.approx(-math.log(_softmax([1.0, 2.0, 0.5])[1]), rel=1e-6)
    assert set(parts) == {"ce", "loss"}


def test_kd_term_is_kl_teacher_student_times_t_squared():
    s, t, T = [1.0, 2.0, 0.5], [0.2, -1.0, 3.0], 3.0
    cfg = DistillConfig(kd_weight=0.75, temperature=T)
    loss, parts = distill_loss(torch.tensor([s]), torch.tensor([2]), cfg, teacher_logits=torch.tensor([t]))
    ps = _softmax([a / T for a in s])
    pt = _softmax([a / T for a in t])
    kl = sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt))
    ce = -math.log(_softmax(s)[2])
    assert parts["kd"] == pytest.approx(kl * T * T, rel=1e-5)
    assert parts["ce"] == pytest.approx(ce, rel=1e-6)
    assert float(loss) == pytest.approx(0.25 * ce + 0.75 * kl * T * T, rel=1e-5)


def test_embedding_losses_mse_and_cosine():
    se = torch.tensor([[[[1.0]], [[2.0]]], [[[0.0]], [[1.0]]]])  # [2, 2, 1, 1]
    te = torch.tensor([[[[2.0]], [[4.0]]], [[[1.0]], [[0.0]]]])
    y = torch.tensor([0, 1])
    logits = torch.zeros(2, 2)
    ce = math.log(2.0)
    _, p = distill_loss(logits, y, DistillConfig(emb_weight=2.0, emb_loss="mse"), student_emb=se, teacher_emb=te)
    mse = ((1 - 2) ** 2 + (2 - 4) ** 2 + (0 - 1) ** 2 + (1 - 0) ** 2) / 4
    assert p["emb"] == pytest.approx(mse) and p["loss"] == pytest.approx(ce + 2.0 * mse, rel=1e-6)
    _, p = distill_loss(logits, y, DistillConfig(emb_weight=1.0, emb_loss="cosine"), student_emb=se, teacher_emb=te)
    # sample 0: parallel vectors -> 0; sample 1: orthogonal -> 1
    assert p["emb"] == pytest.approx(0.5, abs=1e-6)


def test_mixup_mixes_labels_and_teacher_consistently():
    s = torch.tensor([[0.3, -0.2], [1.0, 0.5]])
    t = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 1])
    perm, lam = torch.tensor([1, 0]), torch.tensor([0.7, 0.6])
    cfg = DistillConfig(kd_weight=0.5, temperature=1.0)
    loss, parts = distill_loss(s, y, cfg, teacher_logits=t, mix=(perm, lam))
    soft = torch.tensor([[0.7, 0.3], [0.4, 0.6]])  # mixed one-hot targets
    ce = -(soft * torch.log_softmax(s, 1)).sum(1).mean()
    pt = torch.softmax(t, 1)
    mixed_pt = torch.stack([0.7 * pt[0] + 0.3 * pt[1], 0.6 * pt[1] + 0.4 * pt[0]])
    kd = (mixed_pt * (mixed_pt.log() - torch.log_softmax(s, 1))).sum(1).mean()
    assert parts["ce"] == pytest.approx(float(ce), rel=1e-6)
    assert parts["kd"] == pytest.approx(float(kd), rel=1e-5)


def test_bad_configs_and_missing_targets():
    with pytest.raises(ConfigError, match="kd_weight must lie in"):
        DistillConfig(kd_weight=1.5)
    with pytest.raises(ConfigError, match="emb_loss must be one of mse, cosine"):
        DistillConfig(emb_loss="l1")
    with pytest.raises(ConfigError, match="temperature"):
        DistillConfig(temperature=0)
    with pytest.raises(ConfigError, match="unknown key"):
        DistillConfig.from_dict({"kd": 1})
    with pytest.raises(ConfigError, match="teacher logits"):
        distill_loss(torch.zeros(1, 2), torch.tensor([0]), DistillConfig(kd_weight=0.5))
