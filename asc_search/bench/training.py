"""Benchmark of student training: throughput of :func:`asc_search.training.fit` before and after the speed-ups,
side by side, as clips/s and as a fraction of the machine's dense matrix-multiply rate.

    python -m asc_search.bench.training [--rounds N] [--threads T] [--device cpu|cuda] [--quick]   # one JSON object

``run()`` returns a dict (no printing). For each profile (``quick``: a 17 k-parameter, 1.6 M-MAC student on
40 x 51; ``dcase``: the DCASE 2024 baseline's shape, 61 k parameters, 29.4 M MACs on 256 x 65) it trains the
student with distillation from cached teacher targets (KD + embedding matching through the projection head, the
augmentations of the profile's search file: none for quick, mixup + Freq-MixStyle + frequency masking + time roll
for dcase), batch 64, on random spectrograms, in each **variant**:

* ``before``: the loop as it was: NCHW tensors, AdamW's per-parameter loop, ReLU into new tensors, glibc's
  default allocator (freed activations returned to the OS and faulted in again at the next step);
* ``channels_last``: ``before`` with model, head and batches in ``torch.channels_last``;
* ``fused_inplace``: also the fused AdamW and the in-place ReLU / residual sum of the student blocks;
* ``after``: also the allocator keeping freed memory (:func:`asc_search._runtime.keep_freed_memory`): today's
  defaults.

Every measurement runs in a fresh process (the allocator setting is process-wide), the variants interleaved round
by round, ``rounds`` times; each process times ``epochs`` epochs and keeps the fastest after the first, then
times a 1024 x 1024 float32 matmul with the same threads (the better of two tries) (``bfloat16`` 4096 x 4096 on a GPU, where training uses
bf16 autocast). Reported per variant: the best and median epoch time, clips/s, G MAC/s (a training step counted
as 3 x the forward MACs), the matmul rate and the fraction of it reached, peak RSS, the loss of each epoch; and
the speed-up of ``after`` over ``before`` (median of the per-round ratios, and the ratio of the best times).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from ..training.perf import make_optimizer

__all__ = ["VARIANTS", "PROFILES", "run", "measure_variant", "matmul_rate"]

VARIANTS: tuple[str, ...] = ("before", "channels_last", "fused_inplace", "after")
#: profile -> (student config, training clips, augmentations of the profile's search file)
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {"student": {"base_channels": 32, "channels_multiplier": 1.4, "expansion_rate": 2.5, "n_blocks": [1, 1],
                          "strides": {"b2": [2, 2]}},
              "clips": 1280, "train": {}},
    "dcase": {"student": {}, "clips": 256,
              "train": {"mixup_alpha": 0.3, "freq_mixstyle_p": 0.4, "freq_mask": 24, "time_roll": 8}},
}
BATCH = 64
EMBEDDING = (128, 1, 1)  # a pooled teacher embedding (the projection head's target)


def matmul_rate(threads: int, device: str = "cpu", repeats: int = 5) -> dict[str, Any]:
    """G MAC/s of a dense matmul: 1024 x 1024 float32 on the CPU, 4096 x 4096 bfloat16 on a GPU; best of ``repeats``."""
    import torch

    from .._runtime import torch_threads

    n, dtype = (1024, torch.float32) if device == "cpu" else (4096, torch.bfloat16)
    with torch_threads(threads):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        best = float("inf")
        for i in range(repeats + 2):
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(4):
                a @ b
            if device != "cpu":
                torch.cuda.synchronize()
            if i >= 2:
                best = min(best, (time.perf_counter() - t0) / 4)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "gmacs_per_s": n**3 / best / 1e9}


@contextlib.contextmanager
def _as_before(variant: str, model: Any) -> Iterator[None]:
    """Put back, inside the block, what the loop did before the speed-ups that ``variant`` leaves out."""
    import torch

    from ..training import loop

    plain = variant in ("before", "channels_last")
    if plain:
        for module in model.modules():  # ReLU into a new tensor
            if isinstance(module, torch.nn.ReLU):
                module.inplace = False
        for block in model.modules():  # the residual sum into a new tensor
            if hasattr(block, "use_shortcut") and hasattr(block, "after_block_activation"):
                block.forward = _plain_residual(block)

        def plain_adam(kind: str, params: Any, lr: float, weight_decay: float, device: Any) -> Any:
            cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
            return cls(list(params), lr=lr, weight_decay=weight_decay, foreach=False)

        loop.make_optimizer = plain_adam
    try:
        yield
    finally:
        loop.make_optimizer = make_optimizer


def _plain_residual(block: Any) -> Any:
    def forward(x: Any) -> Any:
        out = block.block(x)
        if block.use_shortcut:
            out = out + block.shortcut(x)
        return block.after_block_activation(out)

    return forward


def measure_variant(profile: str, variant: str, threads: int = 1, device: str = "cpu", epochs: int = 3,
                    clips: int | None = None, seed: int = 0) -> dict[str, Any]:
    """One variant's figures, in this process (call it in a fresh one: the allocator setting is process-wide)."""
    import torch

    from ..complexity import student_cost_from_config
    from ..config import get_profile
    from ..models.build import build_student_and_head
    from ..models.student import StudentConfig
    from ..training.loop import TensorData, TrainConfig, fit
    from ..training.losses import DistillConfig

    setup = PROFILES[profile]
    n = int(clips or setup["clips"])
    shape = (1, *get_profile(profile).shape)
    student = StudentConfig.from_dict(setup["student"])
    g = torch.Generator().manual_seed(seed)
    train = TensorData(torch.randn(n, *shape, generator=g).half(), torch.randint(0, 10, (n,), generator=g),
                       torch.randn(n, 10, generator=g), torch.randn(n, *EMBEDDING, generator=g).half())
    distill = DistillConfig(kd_weight=0.5, emb_weight=1.0)
    torch.manual_seed(seed)
    model, head = build_student_and_head(student, distill, EMBEDDING)
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, warmup_epochs=0.0, seed=seed, device=device,
                      num_threads=threads, memory_format="contiguous" if variant == "before" else "channels_last",
                      **setup["train"])
    with _as_before(variant, model):
        result = fit(model, train, None, cfg, distill=distill, head=head)
    times = [h["epoch_time_s"] for h in result.history]
    steady = times[1:] or times
    macs = student_cost_from_config(student, (1, *shape)).macs
    clips_per_s = (n // BATCH) * BATCH / min(steady)
    mm = max((matmul_rate(threads, device) for _ in range(2)), key=lambda r: r["gmacs_per_s"])
    gmacs = 3 * macs * clips_per_s / 1e9
    return {
        "profile": profile, "variant": variant, "device": device, "threads": threads, "clips": n, "batch": BATCH,
        "params": sum(p.numel() for p in model.parameters()), "macs": macs,
        "epoch_s_best": min(steady), "epoch_s_median": statistics.median(steady), "first_epoch_s": times[0],
        "clips_per_s": clips_per_s, "train_gmacs_per_s": gmacs, "matmul_gmacs_per_s": mm["gmacs_per_s"],
        "fraction_of_matmul": gmacs / mm["gmacs_per_s"], "losses": [h["train_loss"] for h in result.history],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _child(profile: str, variant: str, threads: int, device: str, epochs: int, clips: int | None) -> dict[str, Any]:
    env = dict(os.environ)
    env["ASC_SEARCH_KEEP_FREED_MEMORY"] = "1" if variant == "after" else "0"
    args = [sys.executable, "-m", "asc_search.bench.training", "--worker", json.dumps(
        {"profile": profile, "variant": variant, "threads": threads, "device": device, "epochs": epochs,
         "clips": clips})]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"training bench worker ({profile}, {variant}) failed: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = min(runs, key=lambda r: r["epoch_s_best"])
    keys = ("params", "macs", "clips", "batch", "threads", "device")
    return {
        **{k: best[k] for k in keys},
        "epoch_s_best": best["epoch_s_best"],
        "epoch_s_median": statistics.median(r["epoch_s_best"] for r in runs),
        "clips_per_s": best["clips_per_s"],
        "train_gmacs_per_s": best["train_gmacs_per_s"],
        "matmul_gmacs_per_s": max(r["matmul_gmacs_per_s"] for r in runs),
        "fraction_of_matmul": statistics.median(r["fraction_of_matmul"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "losses": best["losses"],
        "rounds": len(runs),
    }


def run(rounds: int = 2, threads: int = 1, device: str = "cpu", epochs: int = 3, quick: bool = False,
        profiles: tuple[str, ...] = ("quick", "dcase"), variants: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """All variants of every profile, interleaved round by round (see the module docstring)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return {"benchmark": "training", "skipped": "no CUDA GPU"}
    clips = {"quick": 256, "dcase": 128} if quick else {}
    rounds = 1 if quick else rounds
    epochs = 2 if quick else epochs
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {p: {v: [] for v in variants} for p in profiles}
    load_before = os.getloadavg()[0]
    for _ in range(rounds):
        for profile in profiles:
            for variant in variants:
                runs[profile][variant].append(_child(profile, variant, threads, device, epochs, clips.get(profile)))
    out: dict[str, Any] = {
        "benchmark": "training",
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "device": device, "load_average_1m_before": round(load_before, 2),
                    "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "profiles": [],
    }
    for profile in profiles:
        entry: dict[str, Any] = {"profile": profile,
                                 "variants": {v: _summary(runs[profile][v]) for v in variants}}
        if "before" in variants and "after" in variants:
            pairs = zip(runs[profile]["before"], runs[profile]["after"])
            v = entry["variants"]
            entry["speedup_median"] = statistics.median(b["epoch_s_best"] / a["epoch_s_best"] for b, a in pairs)
            entry["speedup_best"] = v["before"]["epoch_s_best"] / v["after"]["epoch_s_best"]
            entry["loss_max_rel_diff"] = max(abs(a - b) / abs(b) for a, b in
                                             zip(v["after"]["losses"], v["before"]["losses"]))
        out["profiles"].append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asc_search.bench.training", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every variant (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, as a trial with cpus_per_trial 1 (default 1)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device (default cpu)")
    p.add_argument("--quick", action="store_true", help="small sizes, one round")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # one measurement, in a fresh process
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(measure_variant(**json.loads(a.worker))))
        return 0
    json.dump(run(rounds=a.rounds, threads=a.threads, device=a.device, quick=a.quick), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
