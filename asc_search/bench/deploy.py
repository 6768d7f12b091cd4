"""Benchmark of the deployed model (issue #10): what int8 / float16 cost in accuracy and what they store, and what
``search.score_precision: deployed`` adds to a trial.

    python -m asc_search.bench.deploy [--demo-dir DIR] [--work-dir DIR] [--qat-epochs N] [--quick]   # one JSON object

``run()`` returns a dict (no printing). On a finished demo (``asc-search demo``; run first into the work folder when
none is given), for two models on the demo's test split:

* the best searched student: the best trial's checkpoint (the weights before any export-time QAT), its losses;
* the DCASE 2024 baseline architecture, trained on the same train part with the best student's recipe (no KD).

Variants per model: float32 graph, float16 graph, int8 PTQ graph, int8 QAT graph (``qat_epochs`` forced, the
trial's losses, :func:`asc_search.export.qat.quantisation_aware`); each with validation and test macro accuracy
(the graphs run by onnxruntime), the weight bytes measured from the graph, the file size and whether it fits the
budget (the demo's for the student, DCASE's 128,000 B for the baseline). The graphs are written as the export writes
them (dynamo exporter); ``fast_graphs`` uses the TorchScript exporter instead (the same weights, smaller files: less
metadata), for quick runs.

``score_precision: deployed`` per trial (:func:`asc_search.search.trainable.deployed_score`, one thread, as a trial
runs it): the demo's best student on the demo's validation split, and the DCASE baseline on random 256 x 65 clips
(``dcase_val_clips`` of them); beside it the dynamo exporter's time for the same graph, and the demo's median trial
time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["run", "model_variants", "trial_cost"]


def _demo(work: Path, demo_dir: Any, quick: bool, device: str, on_event: Any) -> Path:
    if demo_dir is not None:
        return Path(demo_dir)
    from ..demo import DemoSettings, run_demo

    settings = (DemoSettings(clips=800, teacher_epochs=4, num_samples=4, student_epochs=3, device=device) if quick
                else DemoSettings(device=device))
    run_demo(work / "demo", settings, force=True, on_event=on_event)
    return work / "demo"


def _graph_row(model: torch.nn.Module, precision: str, work: Path, name: str, parts: dict[str, Any],
               labels: tuple[str, ...], calibration: torch.Tensor, seed: int, fast: bool) -> dict[str, Any]:
    from ..deploy import deploy_model
    from ..export.deployed import score_graph

    (test, test_table), (val, val_table) = parts["test"], parts["val"]
    graph = deploy_model(model, work, precision, example=test.x[:64], calibration_x=calibration, seed=seed,
                         fast=fast, name=f"{name}.onnx", reference_name=f"{name}.fp32.onnx")
    return {"weights_bytes": graph.weights_bytes, "by_dtype": graph.bytes["by_dtype"],
            "scales_and_zero_points_bytes": graph.bytes["scales_bytes"] + graph.bytes["zero_points_bytes"],
            "file_bytes": graph.bytes["file_bytes"],
            "val_macro_accuracy": score_graph(graph.path, val.x, val.y, val_table, labels)["macro_accuracy"],
            "test_macro_accuracy": score_graph(graph.path, test.x, test.y, test_table, labels)["macro_accuracy"]}


def model_variants(name: str, model: torch.nn.Module, proposal: Any, parts: dict[str, Any], labels: tuple[str, ...],
                   budget: Any, *, qat_epochs: int, embedding_shape: Any, device: str = "cpu",
                   fast_graphs: bool = False, dir_log_gains: Any = None, on_event: Any = None) -> dict[str, Any]:
    """float32 / float16 / int8 PTQ / int8 QAT of one model (see the module docstring)."""
    from .._progress import log
    from ..deploy import CALIBRATION_CLIPS, calibration_sample
    from ..export.qat import quantisation_aware

    train = parts["train"][0]
    seed = proposal.train.seed
    calibration = train.x[calibration_sample(len(train), CALIBRATION_CLIPS, seed)]
    log(on_event, f"{name}: int8 PTQ and {qat_epochs} epoch(s) of QAT")
    t0 = time.perf_counter()
    tuned, qat = quantisation_aware(model, proposal, parts, labels, qat_epochs=qat_epochs, calibration_x=calibration,
                                    seed=seed, device=device, embedding_shape=embedding_shape,
                                    dir_log_gains=dir_log_gains)
    qat_s = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory(prefix="asc-bench-deploy-") as work:
        for variant, net, precision in (("float32", model, "float32"), ("float16", model, "float16"),
                                        ("int8 PTQ", model, "int8"), ("int8 QAT", tuned, "int8")):
            log(on_event, f"{name}: {variant} graph")
            name = variant.replace(" ", "_")
            row = {"variant": variant, "precision": precision,
                   **_graph_row(net, precision, Path(work), name, parts, labels, calibration, seed, fast_graphs)}
            row["within_budget"] = row["weights_bytes"] <= budget.max_param_bytes
            rows.append(row)
    return {"model": name, "budget_bytes": budget.max_param_bytes, "variants": rows,
            "qat": {"epochs": qat["epochs"], "lr": qat["lr"], "seconds": round(qat_s, 1)}}


def trial_cost(model: torch.nn.Module, proposal: Any, train_x: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
               precision: str = "int8", repeats: int = 3) -> dict[str, Any]:
    """Seconds :func:`~asc_search.search.trainable.deployed_score` adds to a trial (best and mean of ``repeats``, one
    thread), and the dynamo exporter's time for the same graph (why trials use the TorchScript one)."""
    from .._runtime import torch_threads
    from ..deploy import export_onnx
    from ..search.trainable import deployed_score

    data = {"train_x": train_x, "val_x": val_x, "val_y": val_y}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    times = []
    with torch_threads(1):
        for _ in range(repeats):
            out = deployed_score(state, proposal, data, precision, threads=1)
            times.append(out["deploy_s"])
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            export_onnx(model, torch.from_numpy(np.asarray(val_x[:64])), Path(d) / "m.onnx", threads=1)
            dynamo_s = time.perf_counter() - t0
    return {"precision": precision, "val_clips": int(len(val_y)), "deploy_s_best": round(min(times), 3),
            "deploy_s_mean": round(statistics.fmean(times), 3), "dynamo_export_s": round(dynamo_s, 2)}


def _baseline(best: Any, parts: dict[str, Any], labels: tuple[str, ...], input_shape: Any,
              dir_log_gains: Any = None) -> tuple[Any, Any]:
    """(the DCASE 2024 baseline architecture trained on the train part with the best trial's recipe, its proposal)."""
    import dataclasses

    from ..models.presets import DCASE2024_BASELINE
    from ..models.student import build_student
    from ..search.spec import Proposal
    from ..training.loop import fit
    from ..training.losses import DistillConfig

    cfg = dataclasses.replace(DCASE2024_BASELINE, n_classes=len(labels), in_channels=int(input_shape[1]))
    proposal = Proposal(student=cfg, distill=DistillConfig(), train=best.train.replace(device="cpu"))
    torch.manual_seed(proposal.train.seed)
    model = build_student(cfg)
    model.load_state_dict(fit(model, parts["train"][0], parts["val"][0], proposal.train,
                              dir_log_gains=dir_log_gains).best_state)
    return model.eval(), proposal


def run(work_dir: str | os.PathLike[str] | None = None, demo_dir: str | os.PathLike[str] | None = None,
        quick: bool = False, qat_epochs: int = 2, dcase_val_clips: int = 500, fast_graphs: bool = False,
        on_event: Any = None) -> dict[str, Any]:
    """See the module docstring."""
    from .._progress import log
    from ..config import Budget
    from ..data.cache import load_features
    from ..data.teacher_cache import load_teacher_targets
    from ..demo import load_summary
    from ..export.inputs import split_tensors
    from ..models.student import build_student
    from ..search.runfolder import SEARCH_FILE, best_trial, load_best_weights, load_trials, trial_proposal
    from ..search.space import load_space

    own = tempfile.TemporaryDirectory(prefix="asc-bench-deploy-") if work_dir is None else None
    work = Path(own.name if own is not None else work_dir)
    started = time.perf_counter()
    try:
        demo = _demo(work, demo_dir, quick, "cpu", on_event)
        paths = {k: Path(v) for k, v in load_summary(demo)["paths"].items()}
        spec = load_space(paths["run"] / SEARCH_FILE)
        features = load_features(paths["cache"])
        targets = load_teacher_targets(features, paths.get("teacher_cache"))
        parts = split_tensors(features, spec.split, targets)
        labels = tuple(features.labels)
        trials = load_trials(paths["run"])
        row = best_trial(trials, spec.budget)
        proposal = trial_proposal(row)
        proposal = type(proposal)(student=proposal.student, distill=proposal.distill,
                                  train=proposal.train.replace(device="cpu"), params=proposal.params)
        student = build_student(proposal.student)
        student.load_state_dict(load_best_weights(paths["run"], row["checkpoint_path"], row["trial_id"]))
        log(on_event, "training the DCASE 2024 baseline architecture with the best student's recipe")
        from ..data.impulses import ir_bank_from_record
        from ..search.runfolder import read_run_record

        record = read_run_record(paths["run"])  # the bank the demo's run trained with (used when dir_p > 0)
        gains = ir_bank_from_record(record.dir_bank if record is not None else None, features.profile).log_gains
        baseline, base_proposal = _baseline(proposal, parts, labels, features.input_shape, gains)
        models = [
            model_variants(f"best searched student (trial {row['trial_id']})", student.eval(), proposal, parts, labels,
                           spec.budget, qat_epochs=qat_epochs, embedding_shape=targets.embedding_shape,
                           fast_graphs=fast_graphs, dir_log_gains=gains, on_event=on_event),
            model_variants("DCASE 2024 baseline architecture", baseline, base_proposal, parts, labels, Budget(),
                           qat_epochs=qat_epochs, embedding_shape=None, fast_graphs=fast_graphs, dir_log_gains=gains,
                           on_event=on_event),
        ]
        log(on_event, "timing score_precision: deployed per trial")
        train_np, val = parts["train"][0].x.numpy(), parts["val"][0]
        rng = np.random.default_rng(0)
        big_train = rng.standard_normal((256, 1, 256, 65)).astype(np.float16)
        big_val = rng.standard_normal((dcase_val_clips, 1, 256, 65)).astype(np.float16)
        done = trials[trials["status"] == "completed"]
        cost = {  # the baseline is fully convolutional: the same trained net runs on 256 x 65 clips
            "quick_student": trial_cost(student, proposal, train_np, val.x.numpy(), val.y.numpy()),
            "dcase_baseline": trial_cost(baseline, base_proposal, big_train, big_val,
                                         rng.integers(0, len(labels), dcase_val_clips)),
            "demo_trial_median_s": float(done["duration_s"].median()) if len(done) else None,
        }
    finally:
        if own is not None:
            own.cleanup()
    return {"benchmark": "deploy", "demo_dir": str(demo_dir) if demo_dir is not None else None,
            "profile": features.profile.name, "input_shape": list(features.input_shape),
            "split_sizes": {k: len(v[0]) for k, v in parts.items()}, "budget": spec.budget.to_dict(),
            "models": models, "score_precision_deployed": cost, "cpu_count": os.cpu_count(),
            "load_average_1m_before": round(os.getloadavg()[0], 2), "torch": torch.__version__,
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asc_search.bench.deploy", description=__doc__.splitlines()[0])
    p.add_argument("--demo-dir", default=None, help="a finished demo folder (default: run the demo first)")
    p.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="a small demo when none is given")
    a = p.parse_args(argv)
    print(json.dumps(run(a.work_dir, a.demo_dir, a.quick, a.qat_epochs), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
