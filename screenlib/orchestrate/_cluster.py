"""Where the fields run: a local cluster of worker processes, or any existing Dask cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

import dask

# Large per-field buffers (tens of MB) are above glibc's default mmap threshold, so each
# allocation would be mapped and zero-faulted afresh; raising the threshold keeps them on the
# heap and reused. Measured here: 1 -> 2 worker processes scaled x1.5 without it, x1.8 with it.
WORKER_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": "33554432"}

logger = logging.getLogger(__name__)


def scheduler_address(scheduler: str | None) -> str | None:
    """The scheduler to connect to: ``scheduler``, else ``DASK_SCHEDULER_ADDRESS``, else None."""
    if scheduler:
        return scheduler
    return (
        os.environ.get("DASK_SCHEDULER_ADDRESS")
        or dask.config.get("scheduler-address", None)
        or dask.config.get("scheduler_address", None)
    )


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
    from distributed import Client, LocalCluster

    quiet_distributed_logs()
    address = scheduler_address(scheduler)
    if address:
        client = Client(address, timeout="30s")
        quiet_distributed_logs()
        try:
            yield client
        finally:
            client.close()
        return
    n_workers = n_workers or os.cpu_count() or 1
    environ = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_ENVIRONMENT.items()}
    with dask.config.set(environ), warnings.catch_warnings():
        # a busy 8787 (another Dask session) only moves the dashboard; not worth a warning
        warnings.filterwarnings("ignore", message=".*Hosting the HTTP server on port.*")
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:8787",  # loopback only, like the scheduler
            silence_logs=logging.ERROR,
        )
    try:
        client = Client(cluster)
        quiet_distributed_logs()
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


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
