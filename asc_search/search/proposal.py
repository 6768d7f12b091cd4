"""One proposal drawn from a search file (:class:`Proposal`: the student, distillation and training configs a trial
needs) and what it costs before any training (:class:`Cost`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._io import jsonable
from ..errors import ConfigError, quote

__all__ = ["EMBED_BLOCK_CHOICES", "Proposal", "Cost", "resolve_embed_block"]

#: Which student block's feature map is matched to the teacher embedding (relative to the proposal's depth).
EMBED_BLOCK_CHOICES = ("last", "penultimate")

def resolve_embed_block(choice: str | None, n_blocks: tuple[int, ...]) -> str:
    """Block name (``b<k>``) for an ``embed_block`` choice given blocks per stage; None means the last block."""
    total = sum(n_blocks)
    if choice in (None, "last"):
        return f"b{total}"
    if choice == "penultimate":
        return f"b{max(1, total - 1)}"
    raise ConfigError(f"embed_block must be one of {', '.join(EMBED_BLOCK_CHOICES)}, got {quote(choice)}")


@dataclass(frozen=True)
class Proposal:
    """One candidate: the three configs a trial needs, and the searched values that produced them."""

    student: Any  # asc_search.models.student.StudentConfig
    distill: Any  # asc_search.training.losses.DistillConfig
    train: Any  # asc_search.training.loop.TrainConfig
    params: dict[str, Any] = field(default_factory=dict)  # searched parameter values, by Optuna name

    def to_dict(self) -> dict[str, Any]:
        return {
            "student": jsonable(self.student.to_dict()),
            "distill": jsonable(self.distill.to_dict()),
            "train": jsonable(self.train.to_dict()),
            "params": jsonable(dict(self.params)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Proposal:
        """Rebuild a proposal from :meth:`to_dict` output (e.g. the ``config`` column of trials.parquet)."""
        from ..models.student import StudentConfig
        from ..training.loop import TrainConfig
        from ..training.losses import DistillConfig

        return cls(
            student=StudentConfig.from_dict(dict(data["student"])),
            distill=DistillConfig.from_dict(dict(data["distill"])),
            train=TrainConfig.from_dict(dict(data["train"])),
            params=dict(data.get("params", {})),
        )


@dataclass(frozen=True)
class Cost:
    """What a proposal costs, measured before any training."""

    params: int
    param_bytes: int  # the DCASE count: params x bytes of param_dtype
    macs: int
    passed: bool
    constraints: dict[str, float]  # relative excess per limit: > 0 means over budget
    seconds: float = 0.0
    counter: str = "torchinfo"  # who counted: "analytic" (rejected from the config alone) or "torchinfo"
    deployed_param_bytes: int | None = None  # the deployed graph's weights at param_dtype (BatchNorm folded)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
