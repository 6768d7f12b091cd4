"""The distillation losses: cross-entropy, logit knowledge distillation at a temperature, embedding matching.

    loss = (1 - kd_weight) * CE(student, y)
         + kd_weight * T^2 * KL(p_teacher^T || p_student^T)
         + emb_weight * D(student_emb, teacher_emb)

``p^T = softmax(logits / T)``. The KL term is Hinton's KD (the form CP-JKU's DCASE 2023 winner used: 0.02 CE +
0.98 KD with T = 2): the teacher's softened distribution is the target, the T^2 factor keeps its gradients on the
scale of the CE term. ``D`` is the mean squared error over all elements ("mse") or 1 - cosine similarity of the
flattened per-clip embeddings, averaged over the batch ("cosine"). ``student_emb`` must already be projected to
the teacher embedding's shape (the train-only :class:`asc_search.models.heads.ProjectionHead`).

Mixup is handled consistently: pass ``mix=(perm, lam)`` (clip i was mixed as lam_i * x_i + (1 - lam_i) * x_perm[i])
and the CE target, the teacher distribution and the teacher embedding are all mixed with the same weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..config import reject_unknown_keys
from ..errors import ConfigError, quote

__all__ = ["EMB_LOSSES", "DistillConfig", "distill_terms"]

EMB_LOSSES = ("mse", "cosine")


@dataclass(frozen=True)
class DistillConfig:
    """Weights of the distillation terms. All zero = plain cross-entropy training."""

    kd_weight: float = 0.0  # weight of the KD term; CE gets 1 - kd_weight (0 <= kd_weight <= 1)
    temperature: float = 2.0  # softmax temperature T of the KD term (> 0)
    emb_weight: float = 0.0  # weight of the embedding-matching term (>= 0)
    emb_loss: str = "mse"  # "mse" or "cosine"

    def __post_init__(self) -> None:
        for key in ("kd_weight", "temperature", "emb_weight"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"distill.{key} must be a number, got {quote(value)}")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise ConfigError(f"distill.kd_weight must lie in [0, 1], got {quote(self.kd_weight)}")
        if not self.temperature > 0.0:
            raise ConfigError(f"distill.temperature must be > 0, got {quote(self.temperature)}")
        if not self.emb_weight >= 0.0:
            raise ConfigError(f"distill.emb_weight must be >= 0, got {quote(self.emb_weight)}")
        if self.emb_loss not in EMB_LOSSES:
            raise ConfigError(f"distill.emb_loss must be one of {', '.join(EMB_LOSSES)}, got {quote(self.emb_loss)}")

    @property
    def uses_teacher_logits(self) -> bool:
        return self.kd_weight > 0.0

    @property
    def uses_embeddings(self) -> bool:
        return self.emb_weight > 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        reject_unknown_keys(cls, data, "distill")
        return cls(**data)


def _mix_weights(lam: torch.Tensor | float, n: int, ref: torch.Tensor) -> torch.Tensor:
    lam_t = torch.as_tensor(lam, dtype=torch.float32, device=ref.device)
    if lam_t.ndim == 0:
        lam_t = lam_t.expand(n)
    return lam_t


def _expand(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return w.view(-1, *([1] * (like.ndim - 1)))


def _mixed(x: torch.Tensor, mix: tuple[torch.Tensor, torch.Tensor | float]) -> torch.Tensor:
    """``x`` mixed with its permuted rows by the clip-wise mixup weights: w * x + (1 - w) * x[perm]."""
    perm, lam = mix
    w = _expand(_mix_weights(lam, x.shape[0], x), x)
    return w * x + (1 - w) * x[perm]


def distill_terms(
    student_logits: torch.Tensor,
    y: torch.Tensor,
    cfg: DistillConfig | None = None,
    teacher_logits: torch.Tensor | None = None,
    student_emb: torch.Tensor | None = None,
    teacher_emb: torch.Tensor | None = None,
    mix: tuple[torch.Tensor, torch.Tensor | float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The combined loss (a differentiable scalar) and its parts, detached tensors (no host sync): ``ce``, ``kd`` and
    ``emb`` (when used) and ``loss``. ``y``: integer labels [N] or soft targets [N, K]; ``mix=(perm, lam)``: the
    clips were mixed as lam_i * x_i + (1 - lam_i) * x_perm[i]. See the module docstring."""
    cfg = cfg or DistillConfig()
    s = student_logits.float()
    n = s.shape[0]
    parts: dict[str, torch.Tensor] = {}

    # cross-entropy, with integer labels, soft targets [N, K] or mixup pairs
    if y.is_floating_point():
        target = y.float()
        if mix is not None:
            target = _mixed(target, mix)
        ce = -(target * F.log_softmax(s, dim=1)).sum(1).mean()
    elif mix is not None:
        perm, lam = mix
        w = _mix_weights(lam, n, s)
        ce_a = F.cross_entropy(s, y, reduction="none")
        ce_b = F.cross_entropy(s, y[perm], reduction="none")
        ce = (w * ce_a + (1 - w) * ce_b).mean()
    else:
        ce = F.cross_entropy(s, y)
    parts["ce"] = ce.detach()
    loss = (1.0 - cfg.kd_weight) * ce

    if cfg.kd_weight > 0.0:
        if teacher_logits is None:
            raise ConfigError("distill.kd_weight > 0 needs teacher logits (build the teacher cache first)")
        t = cfg.temperature
        p_t = F.softmax(teacher_logits.float() / t, dim=1)
        if mix is not None:
            p_t = _mixed(p_t, mix)
        log_p_s = F.log_softmax(s / t, dim=1)
        kd = F.kl_div(log_p_s, p_t, reduction="batchmean") * (t * t)
        parts["kd"] = kd.detach()
        loss = loss + cfg.kd_weight * kd

    if cfg.emb_weight > 0.0:
        if student_emb is None or teacher_emb is None:
            raise ConfigError(
                "distill.emb_weight > 0 needs the projected student embedding and the teacher embedding"
            )
        se = student_emb.float()
        te = teacher_emb.float()
        if mix is not None:
            te = _mixed(te, mix)
        if se.shape != te.shape:
            raise ConfigError(
                f"projected student embedding has shape {tuple(se.shape)}, the teacher embedding {tuple(te.shape)}"
            )
        if cfg.emb_loss == "mse":
            emb = F.mse_loss(se, te)
        else:
            emb = (1.0 - F.cosine_similarity(se.flatten(1), te.flatten(1), dim=1, eps=1e-8)).mean()
        parts["emb"] = emb.detach()
        loss = loss + cfg.emb_weight * emb

    parts["loss"] = loss.detach()
    return loss, parts

