"""Evidence over seeds: ONE code path that trains a configuration several times and says how much its test score
moves (``asc-search compare``, ``export --seeds`` and the bench's accuracy table all use it).

:func:`train_seeds` trains one student + distillation + training configuration on the train part once per seed
(one run after another; torch uses every core unless told otherwise), picks each run's best epoch on the validation part, and scores
the test split ONCE per seed. :func:`mean_sd` and :func:`paired` summarise a list of such runs: mean ± sample
standard deviation over seeds, and the per-seed difference to another configuration trained with the same seeds
(then its mean ± sd), which removes the share of the noise both runs of a seed have in common (same batch order
seed, same augmentation draws).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._progress import OnEvent, emit

__all__ = ["SEED_METRICS", "train_seeds", "mean_sd", "paired", "summarise_runs"]

#: The figures each seed's run reports (and that are summarised over seeds).
SEED_METRICS = ("val_macro_accuracy", "test_macro_accuracy", "test_unseen_macro_accuracy", "test_log_loss")


def train_seeds(
    student: Any,
    distill: Any,
    train: Any,
    parts: Mapping[str, Any],
    seeds: Sequence[int],
    *,
    labels: Sequence[str],
    embedding_shape: Sequence[int] | None = None,
    device: str = "auto",
    threads: int | None = None,
    task: str = "training",
    dir_log_gains: Any = None,
    on_event: OnEvent | None = None,
) -> list[dict[str, Any]]:
    """Train ``student`` (a StudentConfig) with ``distill`` (DistillConfig) and ``train`` (TrainConfig; its seed is
    replaced by each of ``seeds``) on ``parts["train"]``, keep the best epoch on ``parts["val"]`` and score
    ``parts["test"]`` once; ``parts`` maps ``train``/``val``/``test`` to ``(TensorData, table)`` (the table gives the
    devices for seen/unseen). ``threads``: torch threads per run (default: all cores). One row per seed: ``seed``,
    ``best_epoch``, ``epochs``, and :data:`SEED_METRICS`. ``dir_log_gains``: the device impulse responses' bank when
    ``train.dir_p`` > 0 (:func:`asc_search.data.impulses.build_ir_bank`)."""
    from .._runtime import resolve_device
    from ..models.build import build_student_and_head
    from .inference import predict
    from .loop import fit
    from .metrics import score

    (tr, _), (va, _), (te, test_table) = parts["train"], parts["val"], parts["test"]
    dev = resolve_device(device)
    rows = []
    for k, seed in enumerate(seeds):
        cfg = train.replace(seed=int(seed), device=str(dev.type), num_threads=int(threads or os.cpu_count() or 1))
        model, head = build_student_and_head(student, distill, embedding_shape)
        epochs = cfg.planned_epochs(len(tr))
        label = f"{task}, seed {seed} ({k + 1}/{len(seeds)}), epochs"
        emit(on_event, "progress", task=label, done=0, total=epochs)
        result = fit(model, tr, va, cfg, distill=distill, head=head, dir_log_gains=dir_log_gains,
                     on_epoch=lambda e, m, s, label=label: emit(on_event, "progress", task=label, done=e, total=epochs))
        model.load_state_dict(result.best_state)
        logits = predict(model.to(dev), te.x, device=dev)
        test = score(logits, te.y, test_table, labels)
        rows.append({
            "seed": int(seed),
            "best_epoch": int(result.best_epoch),
            "epochs": int(result.epochs_run),
            "val_macro_accuracy": float(result.best_metrics.get("val_macro_accuracy", math.nan)),
            "test_macro_accuracy": float(test["macro_accuracy"]),
            "test_unseen_macro_accuracy": test.get("unseen_macro_accuracy"),
            "test_log_loss": float(test["log_loss"]),
        })
    return rows


def mean_sd(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "sd", "n", "values"}`` of the non-missing ``values``; ``sd`` is the sample standard deviation
    (ddof 1; None for fewer than two values)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    arr = np.asarray(vals, dtype=float)
    return {"mean": float(arr.mean()) if len(arr) else None, "sd": float(arr.std(ddof=1)) if len(arr) > 1 else None,
            "n": len(arr), "values": vals}


def paired(runs: Sequence[Mapping[str, Any]], against: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """Per-seed differences ``runs[seed][metric] - against[seed][metric]`` over the seeds both have, then
    :func:`mean_sd` of them."""
    base = {r["seed"]: r.get(metric) for r in against}
    diffs = [r.get(metric) - base[r["seed"]] for r in runs
             if base.get(r["seed"]) is not None and r.get(metric) is not None]
    return {**mean_sd(diffs), "seeds": [r["seed"] for r in runs if base.get(r["seed"]) is not None]}


def summarise_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`mean_sd` of every figure of :data:`SEED_METRICS` over the runs of one configuration."""
    return {metric: mean_sd([r.get(metric) for r in runs]) for metric in SEED_METRICS}
