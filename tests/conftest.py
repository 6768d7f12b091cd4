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


@pytest.fixture(scope="session")
def quick_cache(synth_root, tmp_path_factory):
    """The ``quick``-profile feature cache of ``synth_root`` (read-only for tests)."""
    from asc_search.features import build_feature_cache

    return build_feature_cache(synth_root, tmp_path_factory.mktemp("cache") / "quick", profile="quick")


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
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        os.environ["_ASC_RAY_KIND"] = "local"
    yield ray


@pytest.fixture()
def ray_multinode(_ray_session_guard):
    """A real two-node Ray cluster (head + 1 worker node, 1 CPU each); yields its address. Torn down after."""
    import ray
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
