"""Running a trained model: the ONE batched forward loop (:func:`predict`) and the mixed-precision helpers that the
training loop shares with it.

``predict`` serves validation inside :func:`asc_search.training.fit`, the teacher's and the exported student's test
scores, and the teacher embedding (Phase I), which asks for the feature maps of ``forward_with_embedding`` too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn as nn

__all__ = ["amp_setup", "autocast", "predict"]


def amp_setup(device: torch.device, enabled: bool) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a GradScaler is needed) for ``device``: bf16 on CUDA where supported, else
    fp16 with a scaler; None (float32) on the CPU or when ``enabled`` is False."""
    if device.type != "cuda" or not enabled:
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op context when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    embedding: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, K] (float32, CPU) of ``model`` on ``x``, ``batch_size`` clips per forward pass on ``device``.
    Puts the model in eval mode.

    ``embedding``: a function of the feature map of ``model.forward_with_embedding`` (e.g. a pooling; ``lambda f: f``
    keeps it whole), applied per batch; then the result is ``(logits, embeddings)`` with the embeddings
    concatenated over the batches (float32, CPU).
    """
    device = torch.device(device)
    model.eval()
    logits, embs = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True).float()
        with autocast(device, amp_dtype):
            if embedding is None:
                out = model(xb)
            else:
                out, fmap = model.forward_with_embedding(xb)
                embs.append(embedding(fmap.float()).cpu())
        logits.append(out.float().cpu())
    all_logits = torch.cat(logits) if logits else torch.empty(0, 0)
    if embedding is None:
        return all_logits
    return all_logits, (torch.cat(embs) if embs else torch.empty(0))
