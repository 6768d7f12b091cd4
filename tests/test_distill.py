"""distill_terms (the loss the training loop calls) against hand computations: plain CE when the distillation weights
are zero, KD = T^2 KL(p_teacher^T || p_student^T), MSE and cosine embedding losses, mixup mixing every target alike."""

import math

import pytest
import torch

from asc_search.errors import ConfigError
from asc_search.training.losses import DistillConfig, distill_terms


def _softmax(v):
    e = [math.exp(a) for a in v]
    return [a / sum(e) for a in e]


def _floats(parts):
    return {k: float(v) for k, v in parts.items()}


def test_zero_weights_give_plain_cross_entropy_whatever_the_teacher_says():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    y = torch.tensor([1, 2])
    expected = -(math.log(_softmax([1.0, 2.0, 0.5])[1]) + math.log(_softmax([0.0, -1.0, 3.0])[2])) / 2
    loss, parts = distill_terms(s, y, DistillConfig())
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert set(parts) == {"ce", "loss"} and all(not v.requires_grad for v in parts.values())
    # teacher targets given but weighted 0: ignored, the loss is the same CE
    loss2, parts2 = distill_terms(s, y, DistillConfig(kd_weight=0.0, emb_weight=0.0, temperature=4.0),
                                  teacher_logits=torch.randn(2, 3), student_emb=torch.randn(2, 4, 1, 1),
                                  teacher_emb=torch.randn(2, 4, 1, 1))
    assert float(loss2) == pytest.approx(expected, rel=1e-6) and set(parts2) == {"ce", "loss"}


def test_kd_term_is_t_squared_kl_of_teacher_to_student():
    s, t, T = [1.0, 2.0, 0.5], [0.2, -1.0, 3.0], 3.0
    cfg = DistillConfig(kd_weight=0.75, temperature=T)
    loss, parts = distill_terms(torch.tensor([s], requires_grad=True), torch.tensor([2]), cfg,
                                teacher_logits=torch.tensor([t]))
    ps = _softmax([a / T for a in s])
    pt = _softmax([a / T for a in t])
    kl = sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt))
    ce = -math.log(_softmax(s)[2])
    p = _floats(parts)
    assert p["kd"] == pytest.approx(kl * T * T, rel=1e-5)
    assert p["ce"] == pytest.approx(ce, rel=1e-6)
    assert float(loss.detach()) == pytest.approx(0.25 * ce + 0.75 * kl * T * T, rel=1e-5) == p["loss"]
    assert loss.requires_grad  # differentiable: the loop backpropagates it
    # a student that copies the teacher has no KD loss left
    _, same = distill_terms(torch.tensor([t]), torch.tensor([2]), cfg, teacher_logits=torch.tensor([t]))
    assert float(same["kd"]) == pytest.approx(0.0, abs=1e-6)


def test_embedding_losses_mse_and_cosine():
    se = torch.tensor([[[[1.0]], [[2.0]]], [[[0.0]], [[1.0]]]])  # [2, 2, 1, 1]
    te = torch.tensor([[[[2.0]], [[4.0]]], [[[1.0]], [[0.0]]]])
    y = torch.tensor([0, 1])
    logits = torch.zeros(2, 2)
    ce = math.log(2.0)
    _, p = distill_terms(logits, y, DistillConfig(emb_weight=2.0, emb_loss="mse"), student_emb=se, teacher_emb=te)
    mse = ((1 - 2) ** 2 + (2 - 4) ** 2 + (0 - 1) ** 2 + (1 - 0) ** 2) / 4
    p = _floats(p)
    assert p["emb"] == pytest.approx(mse) and p["loss"] == pytest.approx(ce + 2.0 * mse, rel=1e-6)
    _, p = distill_terms(logits, y, DistillConfig(emb_weight=1.0, emb_loss="cosine"), student_emb=se, teacher_emb=te)
    # sample 0: parallel vectors -> 0 (the scale does not matter); sample 1: orthogonal -> 1
    assert float(p["emb"]) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ConfigError, match=r"projected student embedding has shape \(2, 2, 1, 1\)"):
        distill_terms(logits, y, DistillConfig(emb_weight=1.0), student_emb=se, teacher_emb=te.expand(2, 2, 2, 1))


def test_mixup_mixes_labels_teacher_distributions_and_embeddings_alike():
    s = torch.tensor([[0.3, -0.2], [1.0, 0.5]])
    t = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    se = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    te = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 1])
    perm, lam = torch.tensor([1, 0]), torch.tensor([0.7, 0.6])
    cfg = DistillConfig(kd_weight=0.5, temperature=1.0, emb_weight=1.0, emb_loss="mse")
    loss, parts = distill_terms(s, y, cfg, teacher_logits=t, student_emb=se, teacher_emb=te, mix=(perm, lam))
    soft = torch.tensor([[0.7, 0.3], [0.4, 0.6]])  # mixed one-hot targets
    ce = -(soft * torch.log_softmax(s, 1)).sum(1).mean()
    pt = torch.softmax(t, 1)
    mixed_pt = torch.stack([0.7 * pt[0] + 0.3 * pt[1], 0.6 * pt[1] + 0.4 * pt[0]])
    kd = (mixed_pt * (mixed_pt.log() - torch.log_softmax(s, 1))).sum(1).mean()
    mixed_te = torch.stack([0.7 * te[0] + 0.3 * te[1], 0.6 * te[1] + 0.4 * te[0]])
    emb = ((se - mixed_te) ** 2).mean()
    p = _floats(parts)
    assert p["ce"] == pytest.approx(float(ce), rel=1e-6)
    assert p["kd"] == pytest.approx(float(kd), rel=1e-5)
    assert p["emb"] == pytest.approx(float(emb), rel=1e-6)
    assert float(loss) == pytest.approx(0.5 * float(ce) + 0.5 * float(kd) + float(emb), rel=1e-5)
    # soft labels [N, K] are mixed the same way as integer labels
    _, soft_parts = distill_terms(s, torch.eye(2), DistillConfig(), mix=(perm, lam))
    assert float(soft_parts["ce"]) == pytest.approx(float(ce), rel=1e-6)
    # a scalar lam mixes every clip with the same weight
    _, scalar = distill_terms(s, y, DistillConfig(), mix=(perm, 0.7))
    both = -(torch.tensor([[0.7, 0.3], [0.3, 0.7]]) * torch.log_softmax(s, 1)).sum(1).mean()
    assert float(scalar["ce"]) == pytest.approx(float(both), rel=1e-6)


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
        distill_terms(torch.zeros(1, 2), torch.tensor([0]), DistillConfig(kd_weight=0.5))
    with pytest.raises(ConfigError, match="projected student embedding and the teacher embedding"):
        distill_terms(torch.zeros(1, 2), torch.tensor([0]), DistillConfig(emb_weight=0.5))
