"""Where code runs: torch's thread count for a block of work, the compute device, and the one Ray connector.

* :func:`torch_threads` sets torch's intra-op threads for a ``with`` block and restores them after.
* :func:`resolve_device` turns ``auto`` / ``cpu`` / ``cuda`` into a ``torch.device`` (a missing GPU is a ConfigError).
* :func:`ray_session` joins a running cluster (``address``) or starts a local Ray, and shuts down only what it
  started. Errors name the parameter (``address``); the CLI maps it to its flag.
* :func:`keep_freed_memory` / :func:`release_freed_memory`: glibc's allocator keeps freed memory for reuse during
  CPU training (instead of returning every large activation to the OS and page-faulting it back in at the next
  step), and gives it back at the end.
* :func:`steady_cwd` keeps a driver's current folder valid while Ray works (a Ray job's working folder can be
  replaced under it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator
from typing import Any

from .errors import ConfigError

__all__ = ["DEVICES", "CONNECT_TIMEOUT_S", "TOKEN_HINT", "torch_threads", "resolve_device", "check_reachable",
           "check_trial_resources", "local_object_store_bytes", "connect_ray", "ray_session", "quiet_ray_env",
           "keep_freed_memory", "release_freed_memory", "steady_cwd"]

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


@contextlib.contextmanager
def steady_cwd(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Work in ``folder`` (absolute, one that stays put) inside the block, then go back to the folder the process
    was in, by its path.

    A driver started by ``ray job submit --working-dir`` runs in Ray's copy of that folder. When a trial or task
    first lands on another node that shares the head's Ray temporary folder (two nodes on one machine, both with
    the default ``/tmp/ray``), that node's runtime-env agent deletes the copy and unpacks it again at the same
    path (Ray 2.60, ``working_dir`` set up with ``overwrite=True``): the driver's current folder is then a deleted
    one, and every ``os.getcwd()`` raises FileNotFoundError (Tune calls it at the end of ``Tuner.fit``). Going back
    by path enters the new copy, so paths relative to the job's folder still resolve after the block."""
    try:
        before: str | None = os.getcwd()
    except FileNotFoundError:  # already gone: there is nothing to go back to
        before = None
    os.chdir(folder)
    try:
        yield
    finally:
        if before is not None:
            with contextlib.suppress(OSError):  # removed for good: stay in ``folder`` rather than in a deleted one
                os.chdir(before)


def quiet_ray_env() -> None:
    """Environment defaults for a driver that renders its own progress: no Tune auto-loggers (the driver's memory
    grows with them), no uv runtime env, no new-style Tune console output, and no 30 s "drain" of a local Ray node
    on SIGTERM (meant for Ray Serve; it made ``kill PID`` of a search take 30 s)."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")


#: Seconds to wait for a TCP connection to a cluster's address before saying nothing answers there.
CONNECT_TIMEOUT_S = 5.0
#: What helps when a cluster refuses this process for its token (Ray 2.60 token authentication).
TOKEN_HINT = (
    "Ray 2.60 clusters check a token: export RAY_AUTH_MODE=token in this shell (Ray turns it on by itself only for "
    "clusters it starts or finds), and make the head node's token (`ray get-auth-token` there) available here as "
    "~/.ray/auth_token, RAY_AUTH_TOKEN_PATH=FILE or RAY_AUTH_TOKEN=TOKEN"
)


def _host_port(target: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT``, ``[IPv6]:PORT`` or ``ray://HOST:PORT``; None for anything else."""
    rest = target[len("ray://"):] if target.startswith("ray://") else target
    if "://" in rest or ":" not in rest:
        return None
    host, _, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return (host, int(port)) if port.isdigit() and host else None


def _resolve_auto() -> str | None:
    """The address ``auto`` stands for on this machine (the latest ``ray start`` cluster); None when unknown."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        raise ConfigError("address auto: no running Ray cluster found on this machine; start one with `ray start "
                          "--head`, or give the head's HOST:PORT", params=("address",)) from None
    except Exception:  # noqa: BLE001 - a private helper of Ray's: when it changes, leave finding it to ray.init
        return None


def check_reachable(target: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail at once (ConfigError naming ``address``) when nothing accepts a TCP connection at the cluster address
    ``target``: ``ray.init`` would otherwise retry for about 12 minutes. ``local`` and unparseable addresses are
    left to Ray."""
    import socket

    if target == "local":
        return
    resolved = _resolve_auto() if target == "auto" else target
    where = _host_port(resolved) if resolved else None
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        shown = f"{target} ({resolved})" if resolved != target else target
        raise ConfigError(
            f"address {shown}: nothing answers at {where[0]}:{where[1]} ({reason}, after at most {timeout:g} s); is "
            f"the cluster's head running there (`ray start --head --port={where[1]}`) and the port open?",
            params=("address",),
        ) from None


def _enable_token_auth() -> None:
    """``RAY_AUTH_MODE=token`` for this process (and what it starts). Ray reads the mode into its configuration when
    it is first imported: refresh that too when Ray is already imported (as ``ray.init`` does for clusters it finds)."""
    import sys

    os.environ["RAY_AUTH_MODE"] = "token"
    if "ray" in sys.modules:
        try:
            from ray._raylet import Config

            Config.initialize("")
        except Exception:  # noqa: BLE001 - a private hook of Ray's; without it the join fails with TOKEN_HINT
            pass


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    return os.path.isfile(path)


#: The smallest object store a local Ray of this tool gets, and the share of the machine's memory it never exceeds
#: (Ray's own default share, which every local instance would otherwise claim whatever it holds).
_STORE_FLOOR, _STORE_SHARE = 256 * 2**20, 0.3


def local_object_store_bytes(payload_bytes: int, total_memory: int | None = None) -> int:
    """The object store for a local Ray that holds ``payload_bytes`` of trial data: room for it three times over
    plus 256 MiB, at most 30 % of the machine's memory (``total_memory``; default: this machine's).

    Ray's default is 30 % of the memory of the machine for EVERY local instance, in shared memory (/dev/shm): two
    or three searches (or a search beside tests) started at once on one machine then claim more shared memory than
    there is, and one of them dies with a C++ abort. Sized to the data instead, searches on one machine coexist."""
    if total_memory is None:
        total_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    want = max(_STORE_FLOOR, 3 * int(payload_bytes) + _STORE_FLOOR)
    return int(min(want, max(_STORE_FLOOR, _STORE_SHARE * total_memory)))


def connect_ray(address: str | None = None, *, local_store_bytes: int | None = None, **init_kwargs: Any) -> bool:
    """Join ``address`` (a running cluster), or start a local Ray; reuse an instance this process already has.

    Returns True when this call started/joined Ray (the caller shuts it down again). Inside ``ray job submit``
    (``RAY_ADDRESS`` is set) a missing ``address`` means that cluster. ``init_kwargs`` go to ``ray.init`` (e.g.
    ``num_cpus`` for a local instance); ``local_store_bytes``: the object store of a local instance this call starts
    (:func:`local_object_store_bytes`; ignored when joining a cluster, whose nodes size their own). Before joining,
    the address must accept a TCP connection (else a ConfigError at once). With ``RAY_AUTH_MODE`` unset and a token
    at hand (see :data:`TOKEN_HINT`), a cluster that refuses the join is joined again with token authentication
    switched on for this process (``ray.init`` does that only for clusters it finds itself). Not the other way
    round: a process in token mode joins a cluster without authentication, but that cluster's workers are then
    refused when they fetch the driver's objects (OwnerDiedError at the first task), so the plain join comes first.
    """
    import sys

    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    token_next = False  # join again in token mode when the plain join is refused
    if target != "local":
        check_reachable(target)
        token_next = "RAY_AUTH_MODE" not in os.environ and _token_available()
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False, **init_kwargs}
    if target == "local":
        kwargs.setdefault("include_dashboard", False)
        if local_store_bytes is not None:
            kwargs.setdefault("object_store_memory", int(local_store_bytes))
    try:
        try:
            ray.init(address=target, **kwargs)
        except Exception:  # noqa: BLE001 - refused (a token cluster refuses a plain join after ~20 s of retries)
            if not token_next:
                raise
            with contextlib.suppress(Exception):
                ray.shutdown()
            _enable_token_auth()
            ray.init(address=target, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError/RuntimeError/ValueError/AuthenticationError
        if target == "local":
            raise
        detail = " ".join(str(exc).split())
        if "auth" in type(exc).__name__.lower() or "token" in detail.lower():
            raise ConfigError(f"address {target}: the Ray cluster refused this process's token "
                              f"({detail[:200]}); {TOKEN_HINT}", params=("address",)) from None
        raise ConfigError(f"address {target}: cannot join the Ray cluster ({detail[:300]}); is `ray start --head` "
                          f"running there? {TOKEN_HINT}", params=("address",)) from None
    return True


def check_trial_resources(cpus: float, gpus: float, source: str) -> None:
    """A trial asking for more CPUs or GPUs than any live node of the connected Ray cluster has would wait forever:
    refuse it up front (ConfigError naming ``source``'s ``search.resources`` key and what the cluster has)."""
    import ray

    total = ray.cluster_resources()
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    for key, want, name in (("CPU", cpus, "cpus_per_trial"), ("GPU", gpus, "gpus_per_trial")):
        most = max((float(r.get(key, 0.0)) for r in nodes), default=0.0)
        if want > 0 and want > most:
            raise ConfigError(
                f"{source}: search.resources.{name} is {want:g} but the Ray cluster has "
                f"{float(total.get(key, 0.0)):g} {key}(s) in all and at most {most:g} on one node: no trial could ever "
                f"start; lower {name} (e.g. gpus_per_trial: 0 on a machine without a GPU)"
            )


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
