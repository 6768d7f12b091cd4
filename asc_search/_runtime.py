"""Where code runs: torch's thread count for a block of work, the compute device, and the one Ray connector.

* :func:`torch_threads` sets torch's intra-op threads for a ``with`` block and restores them after.
* :func:`resolve_device` turns ``auto`` / ``cpu`` / ``cuda`` into a ``torch.device`` (a missing GPU is a ConfigError).
* :func:`ray_session` joins a running cluster (``address``) or starts a local Ray, and shuts down only what it
  started. Errors name the parameter (``address``); the CLI maps it to its flag.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from .errors import ConfigError

__all__ = ["DEVICES", "torch_threads", "resolve_device", "connect_ray", "ray_session", "quiet_ray_env"]

DEVICES = ("auto", "cpu", "cuda")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch intra-op threads = ``n`` inside the block (``None`` or 0: leave as is), restored afterwards."""
    import torch

    old = torch.get_num_threads()
    change = bool(n) and n != old
    if change:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if change and torch.get_num_threads() != old:
            torch.set_num_threads(old)


def resolve_device(device: str = "auto") -> Any:
    """"auto" -> CUDA when available, else CPU. Asking for "cuda" without a GPU is a ConfigError."""
    import torch

    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use device 'auto' or 'cpu'")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def quiet_ray_env() -> None:
    """Environment defaults for a driver that renders its own progress: no Tune auto-loggers (the driver's memory
    grows with them), no uv runtime env, no new-style Tune console output."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def connect_ray(address: str | None = None, **init_kwargs: Any) -> bool:
    """Join ``address`` (a running cluster), or start a local Ray; reuse an instance this process already has.

    Returns True when this call started/joined Ray (the caller shuts it down again). Inside ``ray job submit``
    (``RAY_ADDRESS`` is set) a missing ``address`` means that cluster. ``init_kwargs`` go to ``ray.init`` (e.g.
    ``num_cpus`` for a local instance).
    """
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False, **init_kwargs}
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    if target == "local":
        kwargs.setdefault("include_dashboard", False)
    try:
        ray.init(address=target, **kwargs)
    except ConnectionError as exc:
        raise ConfigError(
            f"address {target}: cannot join the Ray cluster ({exc}); is `ray start --head` running there, and "
            "does this machine have the cluster's token (~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)?"
        ) from None
    except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError/ValueError for bad addresses and auth
        if target == "local":
            raise
        raise ConfigError(f"address {target}: cannot join the Ray cluster: {exc}") from None
    return True


@contextlib.contextmanager
def ray_session(address: str | None = None, **init_kwargs: Any) -> Iterator[bool]:
    """:func:`connect_ray` for a ``with`` block; shuts Ray down at the end only if this block started it.
    Yields whether it did."""
    started = connect_ray(address, **init_kwargs)
    try:
        yield started
    finally:
        if started:
            import ray

            ray.shutdown()
