"""Start or join the Ray cluster a run uses, and leave nothing of it behind.

With no address, a private local cluster is started for the run and shut
down after it. Ray binds every interface by default, even when told
``_node_ip_address="127.0.0.1"`` (it turns a loopback address into the
machine's outward IP); it keeps to the loopback only when it believes it is on
a single-machine platform, which ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` tells
it. That setting is read at import and by every process Ray spawns, so it is
set both in the environment and on the already-imported constant.

``--ray-address auto`` joins a cluster started on this machine with ``ray
start``; ``ray://HOST:10001`` joins a remote one through Ray Client;
``HOST:PORT`` joins a cluster's GCS directly. Those clusters are not ours:
we disconnect and leave them running.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from explainer.errors import UsageError

LOOPBACK = "127.0.0.1"
_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
INSTALL_HINT = 'pip install -e ".[ray]"'


@dataclass
class ClusterInfo:
    address: str  # what we connected to: "local" for our own cluster
    cpus: float
    gpus: float
    started_here: bool


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (Ray without its data extra cannot run a batch)
    except ImportError as exc:
        raise UsageError(f"--engine ray needs Ray Data ({exc.name or exc} is missing): {INSTALL_HINT}") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse an address nothing answers at: Ray itself would retry connecting to it for ever."""
    target = address
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            target = canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError as exc:
            raise UsageError(f"--ray-address auto: {str(exc).splitlines()[0]}; start one with `ray start --head`") \
                from None
        except Exception:  # a Ray without this helper: let ray.init find the cluster
            return
    host, _, port = target.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--ray-address {address}: expected auto, ray://HOST:PORT or HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(f"--ray-address {address}: nothing answers at {host}:{port} ({exc.strerror or exc})") from None


def _keep_to_loopback(ray) -> None:
    os.environ[_SINGLE_MACHINE_ENV] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def _allow_cluster(ray, previous: str | None) -> None:
    if previous is None:
        os.environ.pop(_SINGLE_MACHINE_ENV, None)
    else:
        os.environ[_SINGLE_MACHINE_ENV] = previous
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = previous != "0"


@contextmanager
def ray_cluster(address: str | None = None, num_cpus: int | None = None,
                verbose: bool = False) -> Iterator[ClusterInfo]:
    """Connected to Ray for the duration of the block; a cluster started here is shut down after it."""
    ray = import_ray()
    if ray.is_initialized():
        raise UsageError("Ray is already initialised in this process; explain connects to Ray itself "
                         "(use --ray-address)")
    previous = os.environ.get(_SINGLE_MACHINE_ENV)
    common = dict(logging_level=logging.INFO if verbose else logging.ERROR, log_to_driver=verbose,
                  namespace="explainer")
    started_here = address is None
    try:
        if started_here:
            _keep_to_loopback(ray)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **common)
            node_ip = ray.util.get_node_ip_address()
            if node_ip != LOOPBACK:  # a Ray that no longer honours the setting: refuse rather than expose ports
                raise RuntimeError(f"the local Ray cluster came up on {node_ip}, not {LOOPBACK}; refusing to run on it")
        else:
            check_reachable(address)
            ray.init(address=address, **common)
    except ConnectionError as exc:
        _shutdown(ray, started_here, previous)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"--ray-address {address}: cannot connect to a Ray cluster: {reason}") from None
    except BaseException:
        _shutdown(ray, started_here, previous)
        raise
    restore = _errors_off_stdout(ray, verbose)
    try:
        resources = ray.cluster_resources()
        yield ClusterInfo(address="local" if started_here else address, cpus=float(resources.get("CPU", 0)),
                          gpus=float(resources.get("GPU", 0)), started_here=started_here)
    finally:
        _shutdown(ray, started_here, previous)
        restore()


def _errors_off_stdout(ray, verbose: bool):
    """Keep stdout for results (``--json`` is one JSON record a line).

    Ray's driver prints the cluster's error messages (a retried task, a dead
    worker) to stdout from a background thread. They go to stderr with
    ``--debug`` and nowhere otherwise (they stay in Ray's log folder); what
    matters reaches the user as our own one-line error.
    """
    from ray._private import worker

    original = getattr(worker, "print_to_stdstream", None)
    if original is None:
        return lambda: None

    def to_stderr(data, ignore_prefix):
        if verbose:
            original({**data, "is_err": True}, ignore_prefix)

    worker.print_to_stdstream = to_stderr

    def restore() -> None:
        worker.print_to_stdstream = original

    return restore


def _shutdown(ray, started_here: bool, previous: str | None) -> None:
    if ray.is_initialized():
        ray.shutdown()  # our own cluster stops with it; a joined cluster keeps running
    if started_here:
        _allow_cluster(ray, previous)
