"""Shared fixtures: one tiny synthetic data set + quick feature cache per session, and Ray instances that are
always shut down. Ray: tests share ONE local instance (``ray_local``); ``ray_multinode`` swaps it for a real
multi-node cluster (ray.cluster_utils.Cluster) and tears that down again."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("ASC_SEARCH_PROGRESS", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

#: Clips in the session's tiny synthetic data set (enough for every split, device and label to appear).
TINY_CLIPS = 400


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny synthetic data set in the TAU layout (read-only for tests: copy before mutating)."""
    from asc_search.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth") / "tau", n_clips=TINY_CLIPS, seed=0)


def write_mini_tau(root, clips=None, rate=44_100):
    """A minimal TAU-layout data set of short noise clips (fast; for bad-input tests that mutate files).

    ``clips``: [(scene, city-location, device, split)]; default 12 clips of 2 scenes, 2 locations each.
    Returns the root. Audio is 1 s of seeded noise, mono, 24-bit.
    """
    from pathlib import Path

    import numpy as np
    import soundfile as sf

    root = Path(root)
    if clips is None:
        clips = [
            (scene, f"{city}-{loc}", device, split)
            for scene, city in (("park", "lisbon"), ("bus", "paris"))
            for loc, split in (("100", "train"), ("101", "train"), ("102", "test"))
            for device in ("a", "s4" if split == "test" else "b")
        ]
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    rng = np.random.default_rng(0)
    meta = ["filename\tscene_label\tidentifier\tsource_label"]
    train = ["filename\tscene_label"]
    test = ["filename\tscene_label"]
    test_only = ["filename"]
    for k, (scene, ident, device, split) in enumerate(clips):
        name = f"audio/{scene}-{ident}-{k}-0-{device}.wav"
        sf.write(root / name, (0.1 * rng.standard_normal(rate)).astype("float32"), rate, subtype="PCM_24")
        meta.append(f"{name}\t{scene}\t{ident}\t{device}")
        (train if split == "train" else test).append(f"{name}\t{scene}")
        if split == "test":
            test_only.append(name)
    (root / "meta.csv").write_text("\n".join(meta) + "\n")
    (root / "evaluation_setup" / "fold1_train.csv").write_text("\n".join(train) + "\n")
    (root / "evaluation_setup" / "fold1_evaluate.csv").write_text("\n".join(test) + "\n")
    (root / "evaluation_setup" / "fold1_test.csv").write_text("\n".join(test_only) + "\n")
    return root


@pytest.fixture()
def mini_tau(tmp_path):
    """A fresh 12-clip TAU-layout data set under tmp_path (writable: tests may break it on purpose)."""
    return write_mini_tau(tmp_path / "mini")


@pytest.fixture(scope="session")
def quick_cache(synth_root, tmp_path_factory):
    """The ``quick``-profile feature cache of ``synth_root`` (read-only for tests)."""
    from asc_search.data.features import build_feature_cache

    return build_feature_cache(synth_root, tmp_path_factory.mktemp("cache") / "quick", profile="quick")


@pytest.fixture(scope="session")
def teacher_dir(quick_cache, tmp_path_factory):
    """A tiny trained teacher (teacher_quick, 2 epochs, CPU) on ``quick_cache`` (read-only for tests)."""
    from asc_search.data.cache import load_features
    from asc_search.teacher import default_train_config, train_teacher

    fs = load_features(quick_cache)
    cfg = default_train_config(fs.x.shape[1:], epochs=2, seed=0, device="cpu", batch_size=32)
    return train_teacher(quick_cache, tmp_path_factory.mktemp("teacher") / "t", train_config=cfg, features=fs).out_dir


@pytest.fixture(scope="session")
def teacher_cache(quick_cache, teacher_dir, tmp_path_factory):
    """The teacher cache (pooled 1x1 embeddings + logits) of ``quick_cache`` by ``teacher_dir``, kept OUTSIDE the
    feature cache: pass it as ``teacher_cache_dir`` / ``--teacher-cache`` (read-only for tests)."""
    from asc_search.teacher import embed_features

    return embed_features(quick_cache, [teacher_dir], tmp_path_factory.mktemp("tcache") / "teacher", device="cpu")


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def _ray_session_guard():
    """Makes sure whatever Ray instance the session ends with is shut down."""
    yield
    _shutdown_ray()


@pytest.fixture()
def ray_local(_ray_session_guard):
    """A local Ray instance with 2 CPUs, shared by every test that asks for it (started on first use)."""
    import ray

    if ray.is_initialized() and os.environ.get("_ASC_RAY_KIND") != "local":
        ray.shutdown()
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        os.environ["_ASC_RAY_KIND"] = "local"
    yield ray


@pytest.fixture()
def ray_multinode(_ray_session_guard):
    """A real two-node Ray cluster (head + 1 worker node, 1 CPU each); yields its address. Torn down after."""
    from ray.cluster_utils import Cluster

    _shutdown_ray()
    os.environ.pop("_ASC_RAY_KIND", None)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster.address
    finally:
        _shutdown_ray()
        cluster.shutdown()


@pytest.fixture()
def fake_run(tmp_path):
    """Factory for a hand-made search run folder (trials.parquet + search.yaml, and an Optuna study.db when
    ``study=True``) under ``tmp_path/results``: ``fake_run(name="r", n=40, completed=True, seed=0) -> Path``.
    Proposal costs are random; those over the DCASE budget are ``rejected_budget``; trained ones get an accuracy
    that grows with size. ``completed=False`` makes every trained trial early-stopped or failed."""
    import numpy as np
    import pandas as pd
    import yaml

    def make(name: str = "run1", n: int = 40, completed: bool = True, seed: int = 0, study: bool = False):
        rng = np.random.default_rng(seed)
        run = tmp_path / "results" / name
        run.mkdir(parents=True)
        rows = []
        for i in range(n):
            base = int(rng.choice([16, 24, 32, 48, 64]))
            pb = int(base * base * rng.uniform(30, 110))
            macs = int(pb * rng.uniform(80, 400))
            if pb > 128_000 or macs > 30_000_000:
                status = "rejected_budget"
            else:
                status = str(rng.choice(["completed", "completed", "early_stopped", "failed"]))
                if not completed and status == "completed":
                    status = "early_stopped"
            trained = status in ("completed", "early_stopped")
            acc = float(0.3 + 0.4 * (1 - np.exp(-pb / 50_000)) + rng.normal(0, 0.03)) if trained else np.nan
            rows.append(dict(
                trial_id=i, status=status, p_base_channels=base,
                p_kd_weight=float(rng.uniform(0, 1)), p_temperature=float(rng.choice([1.0, 2.0, 4.0])),
                p_emb_weight=float(rng.uniform(0, 1)), p_emb_loss=str(rng.choice(["mse", "cosine"])),
                params=pb, param_bytes=pb, macs=macs, val_macro_accuracy=acc,
                val_log_loss=float(2.3 - 2 * acc) if trained else np.nan,
                epochs=3 if trained else 0, duration_s=float(rng.uniform(3, 9)) if trained else 0.01,
            ))
        table = pd.DataFrame(rows)
        table.to_parquet(run / "trials.parquet")
        budget = {"max_param_bytes": 128_000, "param_dtype": "int8", "max_macs": 30_000_000}
        (run / "search.yaml").write_text(yaml.safe_dump({"budget": budget}))
        if study:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            s = optuna.create_study(study_name=name, storage=f"sqlite:///{run / 'study.db'}", direction="maximize")
            for row in rows:
                if row["status"] == "completed":
                    s.enqueue_trial({"base_channels": row["p_base_channels"]})
                    t = s.ask({"base_channels": optuna.distributions.CategoricalDistribution([16, 24, 32, 48, 64])})
                    s.tell(t, row["val_macro_accuracy"])
        return run

    return make


@pytest.fixture(scope="session")
def tiny_search_run(quick_cache, teacher_cache, tmp_path_factory):
    """A finished real search (local Ray, search_spaces/quick.yaml cut to 2 trained trials of 2 epochs, no ASHA,
    device impulse responses with p 0.5)
    on ``quick_cache`` + ``teacher_cache``; returns its run folder (read-only for tests)."""
    from pathlib import Path

    import yaml

    from asc_search.results.views import ViewsPublisher
    from asc_search.search.driver import run_search

    root = tmp_path_factory.mktemp("search")
    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "search_spaces" / "quick.yaml").read_text())
    raw["train"]["epochs"] = 2
    raw["train"]["min_steps"] = 0
    raw["train"]["dir_p"] = 0.5  # device impulse responses (the generic bank) through Ray, and again in export
    raw["search"]["num_samples"] = 2
    raw["search"]["asha"] = {"enabled": False}
    raw["references"] = []
    space = root / "tiny.yaml"
    space.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = run_search(quick_cache, space, teacher_cache=teacher_cache, name="tiny", results_dir=root / "results",
                        views=ViewsPublisher)
    return result.run_dir


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """`asc-search demo` run end to end at the smallest useful size (400 clips, 1 teacher epoch, 2 trained
    trials of 1 epoch); returns its DemoSummary (read-only for tests), with the events it sent as ``.events``."""
    from asc_search.demo import DemoSettings, run_demo

    settings = DemoSettings(clips=400, teacher_epochs=1, num_samples=2, student_epochs=1, device="cpu")
    events = []
    summary = run_demo(tmp_path_factory.mktemp("demo") / "demo", settings, on_event=lambda e, i: events.append((e, i)))
    summary.events = events
    return summary
