"""asc_search.models.build: the one "student + projection head for a proposal"."""

from __future__ import annotations

import pytest
import torch

from asc_search.errors import CacheError
from asc_search.models.build import build_student_and_head
from asc_search.models.heads import ProjectionHead
from asc_search.models.student import StudentConfig
from asc_search.training.losses import DistillConfig

CFG = StudentConfig(base_channels=16, n_blocks=(2, 1), strides={"b2": (2, 1)}, embed_block="b2")


def test_head_only_when_embeddings_are_matched():
    for distill in (None, DistillConfig(), DistillConfig(kd_weight=0.9)):
        model, head = build_student_and_head(CFG, distill, (64, 1, 1))
        assert head is None and sum(p.numel() for p in model.parameters()) > 0
    model, head = build_student_and_head(CFG, DistillConfig(emb_weight=0.5), (64, 2, 3))
    assert isinstance(head, ProjectionHead) and head.embedding_shape == (64, 2, 3)
    # the head maps the student's exposed block (embed_block b2, not the last block) to the teacher's shape
    logits, fmap = model.forward_with_embedding(torch.randn(2, 1, 40, 51))
    assert logits.shape == (2, 10) and fmap.shape[1] == CFG.embedding_channels()
    assert head(fmap).shape == (2, 64, 2, 3)


def test_embedding_matching_needs_the_teacher_shape():
    with pytest.raises(CacheError, match="no teacher cache"):
        build_student_and_head(CFG, DistillConfig(emb_weight=1.0), None)
