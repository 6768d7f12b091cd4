"""The ONE way to build what a training run of a student needs: the student and, when its distillation matches
teacher embeddings, the train-only projection head (used by the search's trials, export's retraining and the
benchmarks alike)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..errors import CacheError
from .heads import ProjectionHead
from .student import StudentConfig, build_student

__all__ = ["build_student_and_head"]


def build_student_and_head(
    student: StudentConfig, distill: Any = None, embedding_shape: Sequence[int] | None = None
) -> tuple[nn.Module, ProjectionHead | None]:
    """``(model, head)``: the student of ``student`` and, when ``distill`` (a
    :class:`~asc_search.training.losses.DistillConfig`) matches embeddings (``emb_weight > 0``), a
    :class:`ProjectionHead` from the student's exposed block to the teacher embedding's ``(C, H, W)``; else
    ``head`` is None. Matching embeddings without ``embedding_shape`` (no teacher cache) is a CacheError."""
    model = build_student(student)
    if distill is None or not distill.uses_embeddings:
        return model, None
    if embedding_shape is None:
        raise CacheError("this proposal matches teacher embeddings (emb_weight > 0) but there is no teacher cache "
                         "to give their shape")
    return model, ProjectionHead(student.embedding_channels(), tuple(int(s) for s in embedding_shape))
