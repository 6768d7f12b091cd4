"""ONE training loop, used by the teacher (Phase I) and by every search trial (Phase II).

``fit(model, train, val, cfg, distill=None, head=None, on_epoch=None, start_state=None) -> FitResult``

- AdamW (or Adam) with weight decay; a per-step schedule: linear warm-up over ``warmup_epochs`` then cosine decay
  to ``lr * min_lr_ratio``.
- Batches drawn from a permutation by a seeded ``torch.Generator``; x is stored float16 (or float32) and turned into
  float32 per batch on the device. On CUDA the whole training set is moved to the GPU once when it fits
  ``device_data_max_bytes``.
- Device "auto" resolves to CUDA when present; there, mixed precision (bf16 autocast where supported, else fp16
  with a GradScaler). CPU otherwise, float32. ``num_threads`` sets torch's intra-op threads for the run.
- Augmentations (see :mod:`asc_search.augment`), each switchable: Freq-MixStyle, mixup (labels, teacher logits and
  teacher embeddings mixed consistently), frequency / time masking, time roll.
- Distillation: with a :class:`~asc_search.distill.DistillConfig` the loss is
  :func:`~asc_search.distill.distill_terms`; embedding matching runs the model's ``forward_with_embedding`` and the
  train-only projection ``head`` (its parameters are optimised too but never part of ``best_state``).
- After each epoch: validation macro accuracy and log loss; the best model state (by validation macro accuracy,
  ties -> lower log loss) is kept in memory. ``on_epoch(epoch, metrics, state)`` may return True to stop (Ray Tune /
  ASHA use it); ``state`` is everything needed to resume exactly via ``start_state``.
- A NaN or infinite loss raises :class:`DivergedError`.

No Ray, no printing: progress goes through ``on_epoch``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .._runtime import DEVICES, resolve_device, torch_threads
from ..config import reject_unknown_keys
from ..errors import AscSearchError, ConfigError
from . import metrics as M
from .augment import Masking, freq_mixstyle, mixup, time_roll
from .losses import DistillConfig, distill_terms

__all__ = [
    "OPTIMIZERS",
    "TrainConfig",
    "TensorData",
    "FitResult",
    "DivergedError",
    "fit",
    "predict",
]

OPTIMIZERS = ("adamw", "adam")


class DivergedError(AscSearchError):
    """The training loss became NaN or infinite."""

    def __init__(self, message: str, epoch: int = 0, step: int = 0) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Augmentations are off when their knob is 0."""

    epochs: int = 10  # passes over the training set
    lr: float = 1e-3  # peak learning rate (after warm-up)
    weight_decay: float = 1e-4  # decoupled (AdamW) or L2 (Adam) weight decay
    optimizer: str = "adamw"  # "adamw" or "adam"
    batch_size: int = 64  # clips per step (a smaller last batch is dropped when the set is larger than a batch)
    warmup_epochs: float = 1.0  # linear warm-up length (may be fractional); 0 = none
    min_lr_ratio: float = 0.01  # the cosine decays to lr * min_lr_ratio
    grad_clip: float = 0.0  # clip the global gradient norm to this (0 = off)
    seed: int = 0  # seeds batch order, augmentation draws and torch's global RNG (init, dropout)
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    amp: bool = True  # mixed precision on CUDA (bf16 when supported, else fp16 + GradScaler); ignored on CPU
    num_threads: int = 0  # torch intra-op threads during fit (0 = leave as is)
    eval_batch_size: int = 512  # clips per forward pass when scoring
    device_data_max_bytes: int = 4 << 30  # on CUDA, keep the training tensors on the GPU when they fit this
    # augmentations
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixup; 0 = off
    mixup_p: float = 1.0  # probability a batch is mixed (when mixup_alpha > 0)
    freq_mixstyle_p: float = 0.0  # probability a batch gets Freq-MixStyle; 0 = off
    freq_mixstyle_alpha: float = 0.3  # Beta(alpha, alpha) of the style mix
    freq_mask: int = 0  # max frequency-mask width in mel bins (torchaudio FrequencyMasking); 0 = off
    time_mask: int = 0  # max time-mask width in frames (torchaudio TimeMasking); 0 = off
    time_roll: int = 0  # max circular time shift in frames; 0 = off

    def __post_init__(self) -> None:
        def num(key: str, lo: float | None = None, lo_open: bool = False, integer: bool = False) -> None:
            value = getattr(self, key)
            ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
            if ok and lo is not None:
                ok = value > lo if lo_open else value >= lo
            if not ok:
                kind = "an integer" if integer else "a number"
                bound = "" if lo is None else (f" > {lo}" if lo_open else f" >= {lo}")
                raise ConfigError(f"train.{key} must be {kind}{bound}, got {value!r}")

        num("epochs", 1, integer=True)
        num("lr", 0, lo_open=True)
        num("weight_decay", 0)
        num("batch_size", 1, integer=True)
        num("warmup_epochs", 0)
        num("min_lr_ratio", 0)
        num("grad_clip", 0)
        num("seed", integer=True)
        num("num_threads", 0, integer=True)
        num("eval_batch_size", 1, integer=True)
        num("device_data_max_bytes", 0, integer=True)
        num("mixup_alpha", 0)
        num("freq_mixstyle_alpha", 0, lo_open=True)
        num("freq_mask", 0, integer=True)
        num("time_mask", 0, integer=True)
        num("time_roll", 0, integer=True)
        for key in ("mixup_p", "freq_mixstyle_p"):
            num(key, 0)
            if getattr(self, key) > 1:
                raise ConfigError(f"train.{key} must lie in [0, 1], got {getattr(self, key)!r}")
        if self.min_lr_ratio > 1:
            raise ConfigError(f"train.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"train.device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not isinstance(self.amp, bool):
            raise ConfigError(f"train.amp must be true or false, got {self.amp!r}")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        reject_unknown_keys(cls, data, "train")
        return cls(**data)


@dataclass
class TensorData:
    """One split as tensors: x [N, 1, F, T] (float16 or float32), y [N] int64, and the cached teacher targets."""

    x: torch.Tensor
    y: torch.Tensor
    teacher_logits: torch.Tensor | None = None  # [N, K]
    teacher_emb: torch.Tensor | None = None  # [N, C, H, W] (or any [N, ...])

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ConfigError(f"x must have shape [N, 1, n_mels, n_frames], got {tuple(self.x.shape)}")
        n = self.x.shape[0]
        self.y = torch.as_tensor(self.y).long()
        if self.y.shape != (n,):
            raise ConfigError(f"y must have shape [{n}] to match x, got {tuple(self.y.shape)}")
        for key in ("teacher_logits", "teacher_emb"):
            value = getattr(self, key)
            if value is not None and value.shape[0] != n:
                raise ConfigError(f"{key} has {value.shape[0]} rows but x has {n}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: torch.Tensor | np.ndarray) -> TensorData:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return TensorData(
            self.x[idx],
            self.y[idx],
            None if self.teacher_logits is None else self.teacher_logits[idx],
            None if self.teacher_emb is None else self.teacher_emb[idx],
        )


@dataclass
class FitResult:
    """What :func:`fit` returns. ``best_state`` is a CPU copy of the model's state dict (never the head's)."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_run: int = 0  # the last epoch completed
    stopped_early: bool = False  # on_epoch returned True
    head_state: dict[str, torch.Tensor] | None = None  # the projection head at the best epoch (train-only)
    device: str = "cpu"


def _amp_setup(device: torch.device, enabled: bool) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler)."""
    if device.type != "cuda" or not enabled:
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@torch.no_grad()
def predict(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    with_embedding: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Logits [N, K] (float32, CPU) of ``model`` on ``x``, batched; with ``with_embedding`` also the feature
    maps of ``forward_with_embedding``. Puts the model in eval mode."""
    device = torch.device(device)
    model.eval()
    logits, embs = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True).float()
        with _autocast(device, amp_dtype):
            if with_embedding:
                out, emb = model.forward_with_embedding(xb)
                embs.append(emb.float().cpu())
            else:
                out = model(xb)
        logits.append(out.float().cpu())
    k = logits[0].shape[1] if logits else 0
    all_logits = torch.cat(logits) if logits else torch.empty(0, k)
    if with_embedding:
        return all_logits, (torch.cat(embs) if embs else torch.empty(0))
    return all_logits


def _lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def _evaluate(model: nn.Module, data: TensorData, cfg: TrainConfig, device, amp_dtype) -> dict[str, float]:
    logits = predict(model, data.x, cfg.eval_batch_size, device, amp_dtype)
    return {
        "val_macro_accuracy": M.macro_accuracy(logits, data.y, logits.shape[1]),
        "val_accuracy": M.accuracy(logits, data.y),
        "val_log_loss": M.log_loss(logits, data.y),
    }


def _better(m: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    a, b = m.get("val_macro_accuracy"), best.get("val_macro_accuracy")
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return True  # no validation: the latest epoch is the best we know
    if a != b:
        return a > b
    return m.get("val_log_loss", math.inf) < best.get("val_log_loss", math.inf)


def fit(
    model: nn.Module,
    train: TensorData,
    val: TensorData | None,
    cfg: TrainConfig,
    distill: DistillConfig | None = None,
    head: nn.Module | None = None,
    on_epoch: Callable[[int, dict[str, Any], dict[str, Any]], bool | None] | None = None,
    start_state: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` on ``train``, score ``val`` each epoch, keep the best state. See the module docstring.

    ``on_epoch(epoch, metrics, state)``: ``epoch`` counts from 1; ``metrics`` holds ``epoch``, ``train_loss``
    (+ ``train_ce`` / ``train_kd`` / ``train_emb``), ``val_macro_accuracy``, ``val_accuracy``, ``val_log_loss``, ``lr``,
    ``epoch_time_s``; ``state`` holds live references (model, head, optimizer, scheduler and RNG states, history,
    best so far): save or copy it inside the callback. Pass such a state back as ``start_state`` to resume.
    """
    if len(train) == 0:
        raise ConfigError("the training split is empty")
    distill = distill or DistillConfig()
    if distill.uses_teacher_logits and train.teacher_logits is None:
        raise ConfigError("distill.kd_weight > 0 but the training data has no teacher logits")
    if distill.uses_embeddings:
        if train.teacher_emb is None:
            raise ConfigError("distill.emb_weight > 0 but the training data has no teacher embeddings")
        if head is None:
            raise ConfigError("distill.emb_weight > 0 needs a projection head (asc_search.models.heads.ProjectionHead)")
        if not hasattr(model, "forward_with_embedding"):
            raise ConfigError(f"{type(model).__name__} has no forward_with_embedding; embedding distillation needs it")
    n_mels, n_frames = train.x.shape[2], train.x.shape[3]
    if cfg.freq_mask >= n_mels:
        raise ConfigError(f"train.freq_mask ({cfg.freq_mask}) must be smaller than the {n_mels} mel bins")
    if cfg.time_mask >= n_frames or cfg.time_roll >= n_frames:
        raise ConfigError(
            f"train.time_mask ({cfg.time_mask}) and train.time_roll ({cfg.time_roll}) must be smaller than the "
            f"{n_frames} frames"
        )

    device = resolve_device(cfg.device)
    amp_dtype, use_scaler = _amp_setup(device, cfg.amp)
    with torch_threads(cfg.num_threads):
        return _fit(model, train, val, cfg, distill, head, on_epoch, start_state, device, amp_dtype, use_scaler)


def _fit(model, train, val, cfg, distill, head, on_epoch, start_state, device, amp_dtype, use_scaler) -> FitResult:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    use_emb = distill.uses_embeddings
    use_kd = distill.uses_teacher_logits

    model.to(device)
    if head is not None:
        head.to(device)
    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(train)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // bs)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total_steps, warmup_steps, cfg.min_lr_ratio))
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler) if use_scaler else None
    masking = Masking(cfg.freq_mask, cfg.time_mask).to(device)

    # where the training tensors live during the run
    on_dev = device.type == "cuda" and (
        sum(t.numel() * t.element_size() for t in (train.x, train.teacher_emb) if t is not None)
        <= cfg.device_data_max_bytes
    )
    store = device if on_dev else torch.device("cpu")
    tx = train.x.to(store)
    ty = train.y.to(store)
    tlog = train.teacher_logits.to(store) if (use_kd and train.teacher_logits is not None) else None
    temb = train.teacher_emb.to(store) if (use_emb and train.teacher_emb is not None) else None

    history: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_head: dict[str, torch.Tensor] | None = None
    best_metrics: dict[str, Any] | None = None
    best_epoch = 0
    first_epoch = 1
    if start_state is not None:
        model.load_state_dict(start_state["model"])
        if head is not None and start_state.get("head") is not None:
            head.load_state_dict(start_state["head"])
        optimizer.load_state_dict(start_state["optimizer"])
        scheduler.load_state_dict(start_state["scheduler"])
        if scaler is not None and start_state.get("scaler") is not None:
            scaler.load_state_dict(start_state["scaler"])
        gen.set_state(start_state["generator"])
        rng.bit_generator.state = start_state["numpy_rng"]
        torch.set_rng_state(start_state["torch_rng"])
        if device.type == "cuda" and start_state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(start_state["cuda_rng"], device)
        history = list(start_state.get("history", []))
        best_state = start_state.get("best_state")
        best_head = start_state.get("best_head")
        best_metrics = start_state.get("best_metrics")
        best_epoch = int(start_state.get("best_epoch", 0))
        first_epoch = int(start_state["epoch"]) + 1

    stopped = False
    epoch = first_epoch - 1
    for epoch in range(first_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        if head is not None:
            head.train()
        perm = torch.randperm(n, generator=gen)
        sums: dict[str, torch.Tensor] = {}
        for step in range(steps_per_epoch):
            idx = perm[step * bs : (step + 1) * bs].to(store)
            xb = tx[idx].to(device, non_blocking=True).float()
            yb = ty[idx].to(device, non_blocking=True)
            tl = tlog[idx].to(device, non_blocking=True).float() if tlog is not None else None
            te = temb[idx].to(device, non_blocking=True).float() if temb is not None else None
            # augmentations (in order: device style, mixing, masking, roll)
            if cfg.freq_mixstyle_p > 0:
                xb = freq_mixstyle(xb, cfg.freq_mixstyle_p, cfg.freq_mixstyle_alpha, rng)
            mix = None
            if cfg.mixup_alpha > 0 and xb.shape[0] > 1 and rng.random() < cfg.mixup_p:
                xb, mix = mixup(xb, cfg.mixup_alpha, rng)
            if cfg.freq_mask or cfg.time_mask:
                xb = masking(xb)
            if cfg.time_roll:
                xb = time_roll(xb, cfg.time_roll, rng)

            with _autocast(device, amp_dtype):
                if use_emb:
                    logits, fmap = model.forward_with_embedding(xb)
                    semb = head(fmap)
                else:
                    logits, semb = model(xb), None
            loss, parts = distill_terms(logits.float(), yb, distill, tl, None if semb is None else semb.float(), te, mix)
            if not bool(torch.isfinite(loss)):
                raise DivergedError(
                    f"training diverged: the loss became {float(loss.detach())} at epoch {epoch}, step {step + 1} "
                    f"(lr {scheduler.get_last_lr()[0]:.3g}); lower the learning rate or check the inputs",
                    epoch=epoch,
                    step=step + 1,
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
            scheduler.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
        train_parts = {("train_loss" if k == "loss" else f"train_{k}"): float(v) / steps_per_epoch for k, v in sums.items()}
        m: dict[str, Any] = {"epoch": epoch, **train_parts, "lr": scheduler.get_last_lr()[0]}
        if val is not None and len(val) > 0:
            m.update(_evaluate(model, val, cfg, device, amp_dtype))
        m["epoch_time_s"] = time.perf_counter() - t0
        history.append(m)
        if _better(m, best_metrics):
            best_state, best_metrics, best_epoch = _cpu_state(model), dict(m), epoch
            best_head = _cpu_state(head) if head is not None else None
        if on_epoch is not None:
            state = {
                "epoch": epoch,
                "model": model.state_dict(),
                "head": head.state_dict() if head is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "generator": gen.get_state(),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "history": history,
                "best_state": best_state,
                "best_head": best_head,
                "best_metrics": best_metrics,
                "best_epoch": best_epoch,
                "train_config": cfg.to_dict(),
            }
            if on_epoch(epoch, dict(m), state):
                stopped = epoch < cfg.epochs
                break

    if best_state is None:  # resumed from a finished state: nothing left to run
        best_state = _cpu_state(model)
        best_metrics = history[-1] if history else {}
    return FitResult(
        best_state=best_state,
        best_epoch=best_epoch,
        best_metrics=copy.deepcopy(best_metrics or {}),
        history=history,
        epochs_run=epoch,
        stopped_early=stopped,
        head_state=best_head,
        device=str(device),
    )
