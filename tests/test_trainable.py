"""One trial (asc_search.search.trainable): the data it gets (never the test split), and training one proposal with
its projection head, reporting every epoch and resuming from a checkpointed state."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from asc_search.errors import CacheError
from asc_search.models.student import StudentConfig, build_student
from asc_search.search.space import load_space, with_subset
from asc_search.search.spec import Proposal
from asc_search.search.trainable import fit_proposal, prepare_trial_data
from asc_search.training.loop import TrainConfig
from asc_search.training.losses import DistillConfig


def test_a_training_subset_reaches_the_trials_alone(quick_cache):
    from asc_search.data.cache import load_features

    fs = load_features(quick_cache)
    payload = prepare_trial_data(fs, None, with_subset(load_space("quick"), 25))
    in25 = set(fs.table.loc[(fs.table["subset_pct"] <= 25).fillna(False).to_numpy(dtype=bool), "filename"])
    seen = set(payload["train_files"]) | set(payload["val_files"])
    assert seen == in25 and len(seen) < (fs.table["split"] == "train").sum() / 2


def test_no_test_split_reaches_the_trials(quick_cache, teacher_cache):
    from asc_search.data.cache import load_features
    from asc_search.data.teacher_cache import load_teacher_targets

    spec = load_space("quick")
    fs = load_features(quick_cache)
    payload = prepare_trial_data(fs, load_teacher_targets(fs, teacher_cache), spec)
    test_files = set(fs.table.loc[fs.table["split"] == "test", "filename"])
    assert test_files
    seen = set(payload["train_files"]) | set(payload["val_files"])
    assert not seen & test_files
    assert len(payload["train_x"]) + len(payload["val_x"]) == (fs.table["split"] == "train").sum()
    # nothing in the payload holds more rows than train + val
    for key, value in payload.items():
        if hasattr(value, "shape") and value.ndim:
            assert value.shape[0] in (len(payload["train_y"]), len(payload["val_y"])), key
    # validation = whole recording locations, disjoint from the training ones
    ident = fs.table.set_index("filename")["identifier"]
    assert not set(ident[payload["train_files"]]) & set(ident[payload["val_files"]])
    # rows and targets stay aligned: the first val row is the feature row of its file
    row = fs.table.index[fs.table["filename"] == payload["val_files"][0]][0]
    assert np.array_equal(payload["val_x"][0], fs.x[row].numpy())
    assert payload["val_y"][0] == fs.table.loc[row, "label"]


def _payload(n=48, emb=(8, 1, 1), seed=0):
    rng = np.random.default_rng(seed)
    out = {"labels": [str(i) for i in range(10)], "input_shape": [1, 1, 40, 51], "profile": "quick",
           "teacher_embedding_shape": list(emb)}
    for name, size in (("train", n), ("val", n // 2)):
        out[f"{name}_x"] = rng.standard_normal((size, 1, 40, 51)).astype(np.float16)
        out[f"{name}_y"] = rng.integers(0, 10, size).astype(np.int64)
        out[f"{name}_logits"] = rng.standard_normal((size, 10)).astype(np.float32)
        out[f"{name}_emb"] = rng.standard_normal((size, *emb)).astype(np.float16)
    return out


def _config(emb_weight=1.0, epochs=2):
    student = StudentConfig(base_channels=8, n_blocks=(1, 1), strides={})
    train = TrainConfig(epochs=epochs, batch_size=16, device="cpu", num_threads=1, warmup_epochs=0.0, seed=3)
    proposal = Proposal(student=student, distill=DistillConfig(kd_weight=0.5, emb_weight=emb_weight), train=train)
    return {"trial_id": 7, "proposal": proposal.to_dict(), "cost": {"params": 1, "param_bytes": 1, "macs": 1}}


def test_fit_proposal_trains_with_the_head_and_resumes():
    seen = []  # the states are live references: keep a copy of each, as a checkpoint would
    result = fit_proposal(_config(), _payload(), on_epoch=lambda e, m, s: seen.append((e, copy.deepcopy(s))))
    assert [e for e, _ in seen] == [1, 2] and len(result.history) == 2
    # the projection head trains but never becomes part of the student's weights
    student_keys = set(build_student(StudentConfig(base_channels=8, n_blocks=(1, 1), strides={})).state_dict())
    assert set(result.best_state) == student_keys
    # a trial resumed from its epoch-1 state trains epoch 2 only, and its history (summed into the report's
    # train_time_s) still holds epoch 1's time
    again = []
    fit_proposal(_config(), _payload(), on_epoch=lambda e, m, s: again.append((e, s)), start_state=seen[0][1])
    assert [e for e, _ in again] == [2]
    times = [h["epoch_time_s"] for h in again[0][1].history]
    assert len(times) == 2 and all(t > 0 for t in times)


def test_embedding_matching_without_a_teacher_cache_is_refused():
    payload = _payload()
    payload["teacher_embedding_shape"] = None
    with pytest.raises(CacheError, match="no teacher cache"):
        fit_proposal(_config(emb_weight=1.0), payload)
    result = fit_proposal(_config(emb_weight=0.0, epochs=1), payload)  # KD only: no head, no shape needed
    assert len(result.history) == 1 and all(torch.is_tensor(v) for v in result.best_state.values())


def test_deployed_score_is_the_int8_graph_on_the_validation_clips(monkeypatch):
    """``score_precision: deployed``: the best state quantised (TorchScript export, calibrated on training clips) and
    scored on the trial's validation clips with onnxruntime; a graph onnxruntime cannot make is NaN + why."""
    import asc_search.deploy as deploy
    from asc_search.errors import QuantizationError
    from asc_search.search.trainable import deployed_score
    from asc_search.training.metrics import macro_accuracy

    payload = _payload(n=64)
    config = _config(emb_weight=0.0, epochs=1)
    result = fit_proposal(config, payload)
    proposal = Proposal.from_dict(config["proposal"])
    out = deployed_score(result.best_state, proposal, payload, "int8")
    assert 0.0 <= out["val_macro_accuracy_deployed"] <= 1.0 and out["deploy_s"] > 0 and "deploy_error" not in out
    # the same number from the float32 student quantised again here: same calibration seed, same graph
    calls = []
    real = deploy.deploy_model
    monkeypatch.setattr(deploy, "deploy_model", lambda *a, **k: calls.append(k) or real(*a, **k))
    again = deployed_score(result.best_state, proposal, payload, "int8")
    assert again["val_macro_accuracy_deployed"] == out["val_macro_accuracy_deployed"]
    assert calls[0]["fast"] is True and calls[0]["seed"] == proposal.train.seed and calls[0]["threads"] == 1
    model = build_student(proposal.student)
    model.load_state_dict(result.best_state)
    with torch.no_grad():
        fp32 = macro_accuracy(model.eval()(torch.from_numpy(payload["val_x"]).float()),
                              torch.from_numpy(payload["val_y"]), 10)
    assert abs(fp32 - out["val_macro_accuracy_deployed"]) <= 0.2  # the same model, quantised

    def fails(*args, **kwargs):
        raise QuantizationError("onnxruntime could not quantise student.fp32.onnx to int8 (ValueError: x)")

    monkeypatch.setattr(deploy, "deploy_model", fails)
    broken = deployed_score(result.best_state, proposal, payload, "int8")
    assert np.isnan(broken["val_macro_accuracy_deployed"])
    assert broken["deploy_error"] == "int8 graph: onnxruntime could not quantise student.fp32.onnx to int8 (ValueError: x)"
