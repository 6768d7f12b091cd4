"""Where code runs: torch's thread count for a block of work, the compute device, and the one Ray connector.

* :func:`torch_threads` sets torch's intra-op threads for a ``with`` block and restores them after.
* :func:`resolve_device` turns ``auto`` / ``cpu`` / ``cuda`` into a ``torch.device`` (a missing GPU is a ConfigError).
* :func:`ray_session` joins a running cluster (``address``) or starts a local Ray, and shuts down only what it
  started. Errors name the parameter (``address``); the CLI maps it to its flag.
* :func:`keep_freed_memory` / :func:`release_freed_memory`: glibc's allocator keeps freed memory for reuse during
  CPU training (instead of returning every large activation to the OS and page-faulting it back in at the next
  step), and gives it back at the end.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator
from typing import Any

from .errors import ConfigError

__all__ = [
    "DEVICES",
    "torch_threads",
    "resolve_device",
    "connect_ray",
    "ray_session",
    "quiet_ray_env",
    "keep_freed_memory",
    "release_freed_memory",
]

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


#: Set to 0 to leave glibc's allocator as it is (see :func:`keep_freed_memory`).
MALLOC_ENV = "ASC_SEARCH_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters (malloc.h)
_malloc_state: dict[str, Any] = {}


def _libc() -> Any:
    """glibc through ctypes, or None (another C library, another OS, or switched off by ``MALLOC_ENV``)."""
    if "libc" not in _malloc_state:
        libc = None
        if os.environ.get(MALLOC_ENV, "1") != "0" and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL("libc.so.6")
            except OSError:
                libc = None
        _malloc_state["libc"] = libc
    return _malloc_state["libc"]


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks below 1 GiB for reuse (process-wide; idempotent). Returns whether it did.

    By default glibc serves blocks above its mmap threshold (at most 32 MiB) with fresh ``mmap`` and gives freed
    heap tops back to the OS, so each training step page-faults its activations in again (~20,000 faults per step
    for a DCASE-sized student at batch 64 on a 2-core machine, 10-15 % of the step's CPU time); keeping them removes
    those faults. :func:`release_freed_memory` returns what is kept. A no-op where the C library is not glibc or
    when the environment variable ``ASC_SEARCH_KEEP_FREED_MEMORY`` is ``0``.
    """
    libc = _libc()
    if libc is None:
        return False
    if not _malloc_state.get("kept"):
        ok = all(libc.mallopt(param, value) == 1 for param, value in (
            (_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20)))
        _malloc_state["kept"] = ok
    return bool(_malloc_state["kept"])


def release_freed_memory() -> None:
    """Give the memory glibc keeps (after :func:`keep_freed_memory`) back to the OS (``malloc_trim``)."""
    libc = _libc()
    if libc is not None and _malloc_state.get("kept"):
        libc.malloc_trim(0)


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
