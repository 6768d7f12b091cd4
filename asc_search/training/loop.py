"""ONE training loop, used by the teacher (Phase I) and by every search trial (Phase II).

``fit(model, train, val, cfg, distill=None, head=None, on_epoch=None, start_state=None) -> FitResult``

- AdamW (or Adam) with weight decay; a per-step schedule: linear warm-up over ``warmup_epochs`` then cosine decay
  to ``lr * min_lr_ratio``.
- Batches drawn from a permutation by a seeded ``torch.Generator``; x is stored float16 (or float32) and turned into
  float32 per batch on the device. On CUDA the whole training set is moved to the GPU once when it fits
  ``device_data_max_bytes``. Model, head and batches run in ``memory_format`` (channels_last by default), the
  optimiser is fused, and on the CPU glibc keeps freed activations for the next step
  (:mod:`asc_search.training.perf`, :func:`asc_search._runtime.keep_freed_memory`); the caller's model is handed
  back in the contiguous format.
- Device "auto" resolves to CUDA when present; there, mixed precision (bf16 autocast where supported, else fp16
  with a GradScaler). CPU otherwise, float32. ``num_threads`` sets torch's intra-op threads for the run.
- Augmentations (:mod:`asc_search.training.augment`), each switchable: device impulse responses (``dir_p``, drawn
  from ``dir_log_gains``, an IR bank's [n_irs, n_mels] log-gains), Freq-MixStyle, mixup (labels, teacher logits
  and teacher embeddings mixed consistently), frequency / time masking, time roll.
- Distillation: with a :class:`~asc_search.training.losses.DistillConfig` the loss is
  :func:`~asc_search.training.losses.distill_terms`; embedding matching runs the model's ``forward_with_embedding``
  and the train-only projection ``head`` (its parameters are optimised too but never part of ``best_state``).
- After each epoch: validation macro accuracy and log loss; the best model state (by validation macro accuracy,
  ties -> lower log loss) is kept in memory. ``on_epoch(epoch, metrics, state)`` reports the epoch; ``state`` is a
  :class:`FitState`, everything needed to continue exactly via ``start_state`` (the search saves it as the trial's
  Ray Tune checkpoint; ASHA stops a trial by ending its worker, not through this callback, whose return value is
  ignored).
- A NaN or infinite loss raises :class:`DivergedError` naming the first bad epoch and step (checked every step on
  the CPU, every 32 steps on a GPU, where each check waits for the device).

No Ray, no printing: progress goes through ``on_epoch``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .._runtime import keep_freed_memory, release_freed_memory, resolve_device, torch_threads
from ..errors import ConfigError
from . import metrics as M
from .augment import Masking, device_ir, dir_bank_tensor, freq_mixstyle, mixup, time_roll
from .config import OPTIMIZERS, TrainConfig, steps_per_epoch
from .data import TensorData
from .inference import amp_setup, autocast, predict
from .losses import DistillConfig, distill_terms
from .perf import FiniteWatch, make_optimizer, memory_format
from .state import DivergedError, FitResult, FitState

__all__ = [
    "DivergedError",
    "FitState",
    "FitResult",
    "fit",
    # defined in state.py / config.py / data.py / inference.py; importable from here as before the splits
    "OPTIMIZERS",
    "TrainConfig",
    "TensorData",
    "predict",
]

OnEpoch = Callable[[int, dict[str, Any], "FitState"], Any]


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the state dict, contiguous whatever the training memory format (safetensors needs it)."""
    return {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in module.state_dict().items()}


def _lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def _better(m: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True
    a, b = m.get("val_macro_accuracy"), best.get("val_macro_accuracy")
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return True  # no validation: the latest epoch is the best we know
    if a != b:
        return a > b
    return m.get("val_log_loss", math.inf) < best.get("val_log_loss", math.inf)


def _check_inputs(model: nn.Module, train: TensorData, cfg: TrainConfig, distill: DistillConfig,
                  head: nn.Module | None) -> None:
    if len(train) == 0:
        raise ConfigError("the training split is empty")
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


class _Trainer:
    """The live objects of one :func:`fit` run: model and head, optimiser, schedule, RNGs, the training tensors where
    they live during the run, and the history and best epoch so far."""

    def __init__(self, model: nn.Module, train: TensorData, cfg: TrainConfig, distill: DistillConfig,
                 head: nn.Module | None, device: torch.device, dir_gains: torch.Tensor | None = None) -> None:
        self.model, self.head, self.cfg, self.distill, self.device = model, head, cfg, distill, device
        self.dir_gains = dir_gains.to(device) if dir_gains is not None else None
        self.amp_dtype, use_scaler = amp_setup(device, cfg.amp)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.fmt = memory_format(cfg.memory_format)
        model.to(device, memory_format=self.fmt)
        if head is not None:
            head.to(device, memory_format=self.fmt)
        self.params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
        self.optimizer = make_optimizer(cfg.optimizer, self.params, cfg.lr, cfg.weight_decay, device)
        self.n = len(train)
        self.batch_size = min(cfg.batch_size, self.n)
        self.steps_per_epoch = steps_per_epoch(self.n, cfg.batch_size)
        self.epochs = cfg.planned_epochs(self.n)  # cfg.epochs, raised to reach cfg.min_steps
        warmup_steps = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        schedule = _lr_lambda(self.steps_per_epoch * self.epochs, warmup_steps, cfg.min_lr_ratio)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.scaler = torch.amp.GradScaler(device.type, enabled=True) if use_scaler else None
        self.masking = Masking(cfg.freq_mask, cfg.time_mask).to(device)
        self._place(train)
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_head: dict[str, torch.Tensor] | None = None
        self.best_metrics: dict[str, Any] | None = None
        self.best_epoch = 0

    def _place(self, train: TensorData) -> None:
        """Keep the training tensors on the GPU when they fit ``device_data_max_bytes`` (CUDA), else on the CPU."""
        use_kd, use_emb = self.distill.uses_teacher_logits, self.distill.uses_embeddings
        size = sum(t.numel() * t.element_size() for t in (train.x, train.teacher_emb) if t is not None)
        on_dev = self.device.type == "cuda" and size <= self.cfg.device_data_max_bytes
        self.store = self.device if on_dev else torch.device("cpu")
        self.x = train.x.to(self.store)
        self.y = train.y.to(self.store)
        self.logits = train.teacher_logits.to(self.store) if use_kd and train.teacher_logits is not None else None
        self.emb = train.teacher_emb.to(self.store) if use_emb and train.teacher_emb is not None else None

    # ------------------------------------------------------------------------------------------- the state
    def capture(self, epoch: int) -> FitState:
        head = self.head
        return FitState(
            epoch=epoch,
            model=self.model.state_dict(),
            head=head.state_dict() if head is not None else None,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            generator=self.gen.get_state(),
            numpy_rng=self.rng.bit_generator.state,
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            history=self.history,
            best_state=self.best_state,
            best_head=self.best_head,
            best_metrics=self.best_metrics,
            best_epoch=self.best_epoch,
            train_config=self.cfg.to_dict(),
        )

    def restore(self, state: FitState) -> None:
        self.model.load_state_dict(state.model)
        if self.head is not None and state.head is not None:
            self.head.load_state_dict(state.head)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        if self.scaler is not None and state.scaler is not None:
            self.scaler.load_state_dict(state.scaler)
        self.gen.set_state(state.generator)
        self.rng.bit_generator.state = state.numpy_rng
        torch.set_rng_state(state.torch_rng)
        if self.device.type == "cuda" and state.cuda_rng is not None:
            torch.cuda.set_rng_state(state.cuda_rng, self.device)
        self.history = list(state.history)
        self.best_state, self.best_head = state.best_state, state.best_head
        self.best_metrics, self.best_epoch = state.best_metrics, state.best_epoch

    # ------------------------------------------------------------------------------------------- one epoch
    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(x, y, teacher logits or None, teacher embedding or None) of rows ``idx``, float32 on the device."""
        dev = self.device
        xb = self.x[idx].to(dev, non_blocking=True).float()
        yb = self.y[idx].to(dev, non_blocking=True)
        tl = self.logits[idx].to(dev, non_blocking=True).float() if self.logits is not None else None
        te = self.emb[idx].to(dev, non_blocking=True).float() if self.emb is not None else None
        return xb, yb, tl, te

    def _augment(self, xb: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """The augmentations in order (device response, device style, mixing, masking, roll); returns (x, mixup
        pairs or None)."""
        cfg = self.cfg
        if self.dir_gains is not None:
            xb = device_ir(xb, self.dir_gains, cfg.dir_p, self.rng)
        if cfg.freq_mixstyle_p > 0:
            xb = freq_mixstyle(xb, cfg.freq_mixstyle_p, cfg.freq_mixstyle_alpha, self.rng)
        mix = None
        if cfg.mixup_alpha > 0 and xb.shape[0] > 1 and self.rng.random() < cfg.mixup_p:
            xb, mix = mixup(xb, cfg.mixup_alpha, self.rng)
        if cfg.freq_mask or cfg.time_mask:
            xb = self.masking(xb)
        if cfg.time_roll:
            xb = time_roll(xb, cfg.time_roll, self.rng)
        return xb, mix

    def _loss(self, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        xb, yb, tl, te = self._batch(idx)
        xb, mix = self._augment(xb)
        xb = xb.contiguous(memory_format=self.fmt)
        with autocast(self.device, self.amp_dtype):
            if self.distill.uses_embeddings:
                logits, fmap = self.model.forward_with_embedding(xb)
                semb = self.head(fmap).float()
            else:
                logits, semb = self.model(xb), None
        return distill_terms(logits.float(), yb, self.distill, tl, semb, te, mix)

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        clip = self.cfg.grad_clip
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(self.params, clip)
            self.optimizer.step()
        self.scheduler.step()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set; the mean loss terms (``train_loss``, ``train_ce``, ...) and ``lr``."""
        self.model.train()
        if self.head is not None:
            self.head.train()
        bs = self.batch_size
        perm = torch.randperm(self.n, generator=self.gen)
        sums: dict[str, torch.Tensor] = {}
        watch = FiniteWatch(FiniteWatch.every_for(self.device))
        for step in range(1, self.steps_per_epoch + 1):
            loss, parts = self._loss(perm[(step - 1) * bs : step * bs].to(self.store))
            self._diverged(epoch, watch.add(step, loss))
            self._step(loss)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
        self._diverged(epoch, watch.flush())
        out = {("train_loss" if k == "loss" else f"train_{k}"): float(v) / self.steps_per_epoch for k, v in sums.items()}
        return {**out, "lr": self.scheduler.get_last_lr()[0]}

    def _diverged(self, epoch: int, bad: tuple[int, float] | None) -> None:
        if bad is not None:
            step, value = bad
            raise DivergedError(
                f"training diverged: the loss became {value} at epoch {epoch}, step {step} "
                f"(lr {self.scheduler.get_last_lr()[0]:.3g}); lower the learning rate or check the inputs",
                epoch=epoch,
                step=step,
            )

    def evaluate(self, val: TensorData) -> dict[str, float]:
        logits = predict(self.model, val.x, self.cfg.eval_batch_size, self.device, self.amp_dtype)
        return {
            "val_macro_accuracy": M.macro_accuracy(logits, val.y, logits.shape[1]),
            "val_accuracy": M.accuracy(logits, val.y),
            "val_log_loss": M.log_loss(logits, val.y),
        }

    def record(self, m: dict[str, Any]) -> None:
        """Add an epoch's metrics to the history; keep a CPU copy of the model (and head) when it is the best."""
        self.history.append(m)
        if _better(m, self.best_metrics):
            self.best_state, self.best_metrics, self.best_epoch = _cpu_state(self.model), dict(m), int(m["epoch"])
            self.best_head = _cpu_state(self.head) if self.head is not None else None

    def result(self, last_epoch: int) -> FitResult:
        if self.best_state is None:  # resumed from a finished state: nothing left to run
            self.best_state = _cpu_state(self.model)
            self.best_metrics = self.history[-1] if self.history else {}
        return FitResult(
            best_state=self.best_state,
            best_epoch=self.best_epoch,
            best_metrics=copy.deepcopy(self.best_metrics or {}),
            history=self.history,
            epochs_run=last_epoch,
            head_state=self.best_head,
            device=str(self.device),
        )


def fit(
    model: nn.Module,
    train: TensorData,
    val: TensorData | None,
    cfg: TrainConfig,
    distill: DistillConfig | None = None,
    head: nn.Module | None = None,
    on_epoch: OnEpoch | None = None,
    start_state: FitState | Mapping[str, Any] | None = None,
    dir_log_gains: Any = None,
) -> FitResult:
    """Train ``model`` on ``train``, score ``val`` each epoch, keep the best state. See the module docstring.

    Runs ``cfg.planned_epochs(len(train))`` epochs: ``cfg.epochs``, raised to make at least ``cfg.min_steps``
    optimiser steps. ``on_epoch(epoch, metrics, state)``: ``epoch`` counts from 1; ``metrics`` holds ``epoch``,
    ``epochs_planned``, ``steps`` (optimiser steps so far), ``train_loss``
    (+ ``train_ce`` / ``train_kd`` / ``train_emb``), ``val_macro_accuracy``, ``val_accuracy``, ``val_log_loss``, ``lr``,
    ``epoch_time_s``; ``state`` is the :class:`FitState` after that epoch. Pass such a state (or its ``to_dict()``)
    back as ``start_state`` to continue exactly where it was taken. ``dir_log_gains``: the [n_irs, n_mels] bank the
    ``dir_p`` augmentation draws from (needed when ``cfg.dir_p`` > 0).
    """
    distill = distill or DistillConfig()
    _check_inputs(model, train, cfg, distill, head)
    dir_gains = dir_bank_tensor(cfg.dir_p, dir_log_gains, train.x.shape[2])
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        keep_freed_memory()
    with torch_threads(cfg.num_threads):
        try:
            return _run(model, train, val, cfg, distill, head, on_epoch, start_state, device, dir_gains)
        finally:
            for module in (model, head):
                if module is not None:
                    module.to(memory_format=torch.contiguous_format)
            release_freed_memory()


def _run(model: nn.Module, train: TensorData, val: TensorData | None, cfg: TrainConfig, distill: DistillConfig,
         head: nn.Module | None, on_epoch: OnEpoch | None, start_state: FitState | Mapping[str, Any] | None,
         device: torch.device, dir_gains: torch.Tensor | None) -> FitResult:
    """The epochs of :func:`fit` (threads, memory and the caller's model are looked after there)."""
    trainer = _Trainer(model, train, cfg, distill, head, device, dir_gains)
    first = 1
    if start_state is not None:
        state = start_state if isinstance(start_state, FitState) else FitState.from_dict(start_state)
        trainer.restore(state)
        first = int(state.epoch) + 1
    epoch = first - 1
    for epoch in range(first, trainer.epochs + 1):
        t0 = time.perf_counter()
        m: dict[str, Any] = {"epoch": epoch, "epochs_planned": trainer.epochs,
                             "steps": epoch * trainer.steps_per_epoch, **trainer.train_epoch(epoch)}
        if val is not None and len(val) > 0:
            m.update(trainer.evaluate(val))
        m["epoch_time_s"] = time.perf_counter() - t0
        trainer.record(m)
        if on_epoch is not None:
            on_epoch(epoch, dict(m), trainer.capture(epoch))
    return trainer.result(epoch)
