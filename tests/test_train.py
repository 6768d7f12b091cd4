"""The one training loop: learns, keeps the best epoch, resumes exactly from a saved state, refuses NaN."""

import io
import math

import pytest
import torch
import torch.nn as nn

from asc_search.errors import ConfigError
from asc_search.training.loop import DivergedError, FitResult, FitState, TensorData, TrainConfig, fit
from asc_search.training.losses import DistillConfig


class Tiny(nn.Module):
    """A small CNN with the student interface: forward and forward_with_embedding."""

    def __init__(self, k=3):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)))
        self.fc = nn.Linear(32, k)

    def forward_with_embedding(self, x):
        f = self.conv(x)
        return self.fc(f.flatten(1)), f

    def forward(self, x):
        return self.forward_with_embedding(x)[0]


def _data(n=240, k=3, seed=0):
    """Class c has extra energy in frequency band c: learnable quickly."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, 1, 12, 10, generator=g)
    for c in range(k):
        x[y == c, :, 4 * c : 4 * c + 4, :] += 1.5
    return TensorData(x.half(), y)


CFG = TrainConfig(epochs=4, lr=3e-3, batch_size=32, warmup_epochs=0.5, seed=1, device="cpu", num_threads=1)


def test_fit_learns_and_keeps_best_epoch():
    train, val = _data(), _data(90, seed=1)
    torch.manual_seed(0)
    res = fit(Tiny(), train, val, CFG)
    assert isinstance(res, FitResult) and len(res.history) == 4
    accs = [h["val_macro_accuracy"] for h in res.history]
    assert max(accs) > 0.9  # chance is 1/3
    assert res.best_metrics["val_macro_accuracy"] == max(accs)
    assert res.history[res.best_epoch - 1]["val_macro_accuracy"] == max(accs)
    assert {"train_loss", "train_ce", "val_log_loss", "lr", "epoch_time_s"} <= set(res.history[0])
    # best_state is a detached copy that loads into a fresh model
    m = Tiny()
    m.load_state_dict(res.best_state)


def test_augmentations_and_distillation_run_with_head():
    train = _data()
    k = 3
    train.teacher_logits = torch.randn(len(train), k)
    train.teacher_emb = torch.randn(len(train), 6, 1, 1)
    head = nn.Sequential(nn.Conv2d(8, 6, 1), nn.AdaptiveAvgPool2d((1, 1)))
    cfg = CFG.replace(epochs=2, mixup_alpha=0.3, freq_mixstyle_p=1.0, freq_mask=3, time_mask=3, time_roll=2)
    head_before = [p.detach().clone() for p in head.parameters()]
    res = fit(Tiny(), train, _data(60, seed=2), cfg, DistillConfig(kd_weight=0.5, emb_weight=1.0), head=head)
    h = res.history[-1]
    assert all(math.isfinite(h[k]) for k in ("train_ce", "train_kd", "train_emb", "train_loss"))
    assert any(not torch.equal(a, b) for a, b in zip(head_before, head.parameters()))  # head trained
    assert res.head_state is not None and not any(k.startswith("0.") for k in res.best_state)  # head not in model


class _Killed(Exception):
    """Stands for a worker that dies after its checkpoint was written."""


def test_resume_from_a_saved_state_is_exact():
    train, val = _data(), _data(60, seed=1)
    saved = {}

    def checkpoint_then_die(epoch, metrics, state):
        assert metrics["epoch"] == epoch == state.epoch and state.history[-1] == metrics
        # the state holds live references: save it, as the search's Ray checkpoint does (torch.save round trip)
        buf = io.BytesIO()
        torch.save(state.to_dict(), buf)
        saved["bytes"] = buf.getvalue()
        if epoch == 2:
            raise _Killed

    torch.manual_seed(0)
    with pytest.raises(_Killed):
        fit(Tiny(), train, val, CFG, on_epoch=checkpoint_then_die)

    def load():  # a fresh copy each time: resuming trains on (and so changes) the optimiser tensors it is given
        return torch.load(io.BytesIO(saved["bytes"]), weights_only=False)

    assert load()["epoch"] == 2 and len(load()["history"]) == 2

    torch.manual_seed(0)
    full = fit(Tiny(), train, val, CFG)
    resumed = fit(Tiny(), train, val, CFG, start_state=FitState.from_dict(load()))
    assert len(resumed.history) == 4 and resumed.epochs_run == 4
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-6)
    assert resumed.best_epoch == full.best_epoch
    for k, v in full.best_state.items():
        assert torch.allclose(v.float(), resumed.best_state[k].float(), atol=1e-6), k
    # a plain dict (a checkpoint written before FitState) resumes the same way; a foreign dict is refused
    again = fit(Tiny(), train, val, CFG, start_state=load())
    assert again.history[-1]["train_loss"] == pytest.approx(resumed.history[-1]["train_loss"], rel=1e-6)
    with pytest.raises(ConfigError, match="start_state lacks epoch"):
        fit(Tiny(), train, val, CFG, start_state={"model": {}})


def test_nan_loss_raises_diverged():
    train = _data(64)
    train.x[5, 0, 0, 0] = float("nan")
    with pytest.raises(DivergedError, match="diverged: the loss became nan at epoch 1"):
        fit(Tiny(), train, None, CFG.replace(batch_size=64))


def test_bad_config_and_missing_targets():
    with pytest.raises(ConfigError, match="train.device must be one of auto, cpu, cuda"):
        TrainConfig(device="tpu")
    with pytest.raises(ConfigError, match="train.epochs must be an integer >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="no teacher logits"):
        fit(Tiny(), _data(32), None, CFG, DistillConfig(kd_weight=0.5))
    with pytest.raises(ConfigError, match="freq_mask"):
        fit(Tiny(), _data(32), None, CFG.replace(freq_mask=12))


def _student_run(memory_format, epochs=2):
    """A small student with distillation and every augmentation, trained in ``memory_format``."""
    from asc_search.models.build import build_student_and_head
    from asc_search.models.student import StudentConfig

    train = _data(96, k=3)
    train.x = torch.randn(96, 1, 16, 20, generator=torch.Generator().manual_seed(3)).half()
    train.teacher_logits = torch.randn(96, 3, generator=torch.Generator().manual_seed(4))
    train.teacher_emb = torch.randn(96, 6, 1, 1, generator=torch.Generator().manual_seed(5))
    distill = DistillConfig(kd_weight=0.5, emb_weight=1.0)
    torch.manual_seed(0)
    model, head = build_student_and_head(StudentConfig(n_classes=3, base_channels=16, n_blocks=(2, 1), strides={"b2": (2, 2)}), distill, (6, 1, 1))
    cfg = CFG.replace(epochs=epochs, mixup_alpha=0.3, freq_mixstyle_p=1.0, freq_mask=3, time_mask=3, time_roll=2,
                      memory_format=memory_format)
    formats = []
    key = "in_c.1.0.weight"  # 4 input channels: the two formats differ

    def on_epoch(epoch, metrics, state):
        formats.append(state.model[key].is_contiguous(memory_format=torch.channels_last))

    result = fit(model, train, None, cfg, distill, head=head, on_epoch=on_epoch)
    assert formats == [memory_format == "channels_last"] * epochs  # trained in the format asked for
    return result, model


def test_channels_last_trains_the_same_student_as_contiguous():
    """The memory format changes the order of float sums only: the same losses to rounding, a standard model back."""
    fast, model = _student_run("channels_last")
    ref, _ = _student_run("contiguous")
    for a, b in zip(fast.history, ref.history):
        for key in ("train_loss", "train_ce", "train_kd", "train_emb"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
    for key, value in fast.best_state.items():
        assert value.is_contiguous(), key  # safetensors and export need contiguous tensors
        assert torch.allclose(value.float(), ref.best_state[key].float(), rtol=1e-3, atol=1e-4), key
    conv = model.in_c[1][0].weight  # 4 input channels: the two formats differ
    assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError, match="train.memory_format must be one of channels_last, contiguous"):
        TrainConfig(memory_format="nhwc")


def test_fused_optimiser_matches_the_reference_update():
    from asc_search.training.perf import make_optimizer

    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3, 3, 3)), nn.Parameter(torch.randn(5))]
    ref = [nn.Parameter(p.detach().clone()) for p in params]
    fused = make_optimizer("adamw", params, 1e-2, 1e-3, torch.device("cpu"))
    assert fused.defaults["fused"] is True
    plain = torch.optim.AdamW(ref, lr=1e-2, weight_decay=1e-3, foreach=False)
    for _ in range(5):
        for group, opt in ((params, fused), (ref, plain)):
            opt.zero_grad()
            sum((p * p).sum() + p.sum() for p in group).backward()
            opt.step()
    for p, r in zip(params, ref):
        assert torch.allclose(p, r, atol=1e-6)
        assert not torch.equal(p, params[0] if p is not params[0] else params[1])


def test_finite_watch_finds_the_first_bad_step_of_a_window():
    from asc_search.training.perf import FiniteWatch

    watch = FiniteWatch(every=4)
    losses = [1.0, 2.0, float("nan"), float("inf"), 5.0, float("-inf")]
    seen = [watch.add(step, torch.tensor(v)) for step, v in enumerate(losses, start=11)]
    assert seen[:3] == [None, None, None]
    assert seen[3][0] == 13 and math.isnan(seen[3][1])  # found at the window's end, named exactly
    assert seen[4] is None and watch.flush() == (16, float("-inf"))  # the rest, at the end of the epoch
    assert watch.flush() is None and FiniteWatch.every_for("cpu") == 1 and FiniteWatch.every_for("cuda") == 32


def test_nan_in_a_later_batch_names_its_step():
    train = _data(128)
    train.x[:] = train.x.abs()
    order = torch.randperm(128, generator=torch.Generator().manual_seed(CFG.seed))  # fit's first epoch order
    train.x[order[70], 0, 0, 0] = float("nan")  # in the third batch of 32
    with pytest.raises(DivergedError, match="at epoch 1, step 3 ") as info:
        fit(Tiny(), train, None, CFG)
    assert (info.value.epoch, info.value.step) == (1, 3)


def test_keep_freed_memory_is_switchable(tmp_path):
    import os
    import platform
    import subprocess
    import sys

    code = "from asc_search._runtime import keep_freed_memory, release_freed_memory as r; print(keep_freed_memory()); r()"
    env = {**os.environ, "ASC_SEARCH_KEEP_FREED_MEMORY": "0"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "False"
    env.pop("ASC_SEARCH_KEEP_FREED_MEMORY")
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert on.stdout.strip() == str(glibc)


class _Recorder(Tiny):
    """Tiny that keeps the batches it was trained on."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return super().forward(x)


def test_device_responses_change_the_loop_input_by_the_band_gain():
    train = _data(64)
    gains = torch.linspace(-1.0, 1.0, 12)[None, :]  # one response: a tilt over the 12 bands
    cfg = CFG.replace(epochs=1, batch_size=32)
    plain, dir_on = _Recorder(), _Recorder()
    torch.manual_seed(0)
    fit(plain, train, None, cfg)
    torch.manual_seed(0)
    fit(dir_on, train, None, cfg.replace(dir_p=1.0), dir_log_gains=gains.numpy())
    assert len(plain.seen) == len(dir_on.seen) == 2  # the same batches (the batch order does not depend on dir_p)
    for a, b in zip(plain.seen, dir_on.seen):
        torch.testing.assert_close(b - a, gains[:, None, :, None].expand_as(a))
    # off (the default): the bank is ignored, and the run is the one without it
    off = _Recorder()
    torch.manual_seed(0)
    fit(off, train, None, cfg, dir_log_gains=gains)
    assert all(torch.equal(a, b) for a, b in zip(plain.seen, off.seen))


def test_device_responses_need_a_bank_of_the_right_shape():
    with pytest.raises(ConfigError, match="dir_p > 0 needs device impulse responses"):
        fit(Tiny(), _data(64), None, CFG.replace(dir_p=0.5))
    with pytest.raises(ConfigError, match=r"dir_log_gains must have shape \[n_irs, 12\]"):
        fit(Tiny(), _data(64), None, CFG.replace(dir_p=0.5), dir_log_gains=torch.zeros(3, 40))
    with pytest.raises(ConfigError, match=r"train.dir_p must lie in \[0, 1\]"):
        TrainConfig(dir_p=1.5)
