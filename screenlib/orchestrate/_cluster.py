"""Where the fields run: a local cluster of worker processes, or any existing Dask cluster."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import socket
import sys
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping

from screenlib.errors import InputError

# glibc malloc settings of the local worker processes (benchmarks/bench_dask.py measures them).
# A field's buffers are tens of MB each. By default glibc maps each one afresh (above its
# mmap threshold) and Dask's worker default MALLOC_TRIM_THRESHOLD_=65536 hands freed heap back
# at once, so every field page-faults and zeroes its working memory again: ~83,000 page
# faults and ~170 ms of kernel time per 2160 x 2160 x 3 field (~50 % more CPU per field);
# raising only the mmap threshold still left 6,000-10,000 faults and ~30 ms. Instead: one
# malloc arena (the task thread would otherwise get its own, whose 64 MB heaps are unmapped
# whenever they empty), buffers up to 32 MB (glibc's maximum) on the heap, and up to 1 GiB of
# freed heap kept for the next field: ~150 faults and ~7 ms. A worker's memory then stays at
# the peak of one field's analysis (~420 MB) instead of rising and falling with each field.
WORKER_ENVIRONMENT = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "1073741824",
}
# malloc variables the user's own environment set (respected); read before any Dask nanny of
# this process copies its settings into os.environ
_USER_MALLOC_VARIABLES = frozenset(k for k in os.environ if k.startswith("MALLOC_"))
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers


@functools.cache
def tune_worker_malloc() -> bool:
    """Give this worker process screenlib's malloc thresholds when nobody configured them.

    Workers of an existing cluster (``dask worker``, dask-jobqueue...) start with Dask's
    defaults, which cost a field 40-60 % more CPU time (page faults; see
    :data:`WORKER_ENVIRONMENT`). glibc's ``mallopt`` sets the two thresholds at run time; the
    single arena can only be chosen at start. Left alone when ``MALLOC_MMAP_THRESHOLD_`` is set
    (screenlib's local cluster, or a user's choice), and off glibc. Returns whether it tuned.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # absent from musl: nothing to tune there
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, int(WORKER_ENVIRONMENT["MALLOC_MMAP_THRESHOLD_"]))
    trim_ok = mallopt(_M_TRIM_THRESHOLD, int(WORKER_ENVIRONMENT["MALLOC_TRIM_THRESHOLD_"]))
    return bool(mmap_ok and trim_ok)


logger = logging.getLogger(__name__)


def scheduler_address(scheduler: str | None) -> str | None:
    """The scheduler to connect to: ``scheduler``, else ``DASK_SCHEDULER_ADDRESS``, else None."""
    if scheduler:
        return scheduler
    import dask  # here, not at import: a run that reuses every field never needs Dask

    return (
        os.environ.get("DASK_SCHEDULER_ADDRESS")
        or dask.config.get("scheduler-address", None)
        or dask.config.get("scheduler_address", None)
    )


def _probe(address: str, timeout_s: float = 10.0) -> None:
    """Raise OSError at once when nothing listens at a ``tcp://host:port`` scheduler address
    (Dask's client would retry a refused connection for its whole 30 s timeout)."""
    parsed = urllib.parse.urlsplit(address if "://" in address else f"tcp://{address}")
    if parsed.scheme != "tcp" or not parsed.hostname or parsed.port is None:
        return  # other protocols (tls, ucx, inproc): left to Dask
    with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout_s):
        pass


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, n_workers: int | None = None) -> Iterator:
    """A ``distributed.Client`` for the run; closes what it started on exit.

    Parameters
    ----------
    scheduler
        ``"tcp://host:port"`` of a running scheduler (``dask scheduler``, dask-jobqueue,
        dask-kubernetes...). None: ``DASK_SCHEDULER_ADDRESS`` when set, else a local cluster.
    n_workers
        Local cluster only: worker processes (default: one per core), one thread each, since
        parts of scikit-image hold the GIL.
    """
    from distributed import Client

    quiet_distributed_logs()
    address = scheduler_address(scheduler)
    if address:
        try:
            _probe(address)
            client = Client(address, timeout="30s")
        except (OSError, TimeoutError) as error:
            raise InputError(
                f"cannot reach the Dask scheduler at {address} ({type(error).__name__}: "
                f"{error}); start it (dask scheduler) or fix --scheduler / "
                "DASK_SCHEDULER_ADDRESS"
            ) from None
        quiet_distributed_logs()
        try:
            yield client
        finally:
            client.close()
        return
    cluster = local_cluster(n_workers or os.cpu_count() or 1)
    try:
        client = Client(cluster)
        quiet_distributed_logs()
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def local_cluster(
    n_workers: int,
    threads_per_worker: int = 1,
    environment: Mapping[str, str] = WORKER_ENVIRONMENT,
    dashboard_address: str | None = "127.0.0.1:8787",
    silence_logs: int = logging.ERROR,
):
    """A ``distributed.LocalCluster`` of worker processes started with ``environment``.

    Parameters
    ----------
    n_workers
        Worker processes.
    threads_per_worker
        Threads per worker (1: parts of scikit-image and scipy hold the GIL).
    environment
        Variables set before each worker process starts (glibc reads ``MALLOC_*`` only
        then); a ``MALLOC_*`` variable of the user's own environment wins.
    dashboard_address
        Where the dashboard listens (None: no dashboard); loopback only, like the scheduler.
    silence_logs
        Level below which the scheduler's and workers' log messages are dropped.
    """
    import dask
    from distributed import LocalCluster

    chosen = {k: str(v) for k, v in environment.items() if k not in _USER_MALLOC_VARIABLES}
    config = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in chosen.items()}
    # the nanny prefers os.environ over its configuration, and an earlier nanny of this process
    # may have left Dask's defaults there (MALLOC_TRIM_THRESHOLD_=65536): set ours for the start
    saved = {k: os.environ.get(k) for k in chosen}
    os.environ.update(chosen)
    try:
        with dask.config.set(config), warnings.catch_warnings():
            # a busy 8787 (another Dask session) only moves the dashboard; not worth a warning
            warnings.filterwarnings("ignore", message=r"Port \d+ is already in use")
            return LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                dashboard_address=dashboard_address,
                silence_logs=silence_logs,
                preload=["screenlib.orchestrate._worker_signals"],
            )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet_distributed_logs() -> None:
    """Keep Dask's per-event INFO messages off a user's console (unless logging at DEBUG).

    Dask configures its ``distributed.*`` loggers individually at INFO, so lowering the parent
    logger alone does not silence them.
    """
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.ERROR)


def dashboard_link(client) -> str | None:
    """The dashboard URL when the scheduler serves its pages (they need bokeh there)."""
    try:
        services = client.scheduler_info().get("services", {})
        # without bokeh the scheduler serves only its JSON routes, not the status page
        has_pages = client.run_on_scheduler(_has_bokeh)
    except Exception:  # noqa: BLE001 - a link is a courtesy, never a reason to fail
        return None
    if "dashboard" not in services or not has_pages:
        return None
    return client.dashboard_link


def _has_bokeh() -> bool:
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None
