"""Execute a plan's field jobs on an executor: synchronously in this process, or on Dask.

Both executors run the same task functions and write the same parts and markers, so a run's
results and its resume markers do not depend on where it ran. The synchronous executor is
for tests, debugging (``--scheduler sync``, breakpoints work) and tiny plates; Dask runs a
local cluster of worker processes or uses any existing cluster.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from screenlib.orchestrate._field_task import FieldJob, analyze_fields

logger = logging.getLogger(__name__)

__all__ = ["DaskExecutor", "Executor", "SyncExecutor", "execute_fields", "open_executor"]

# a task that kills this many workers in a row is given up (the scheduler's allowed-failures);
# a task that raises is retried this many times on another worker before it is recorded failed
TASK_RETRIES = 2
# futures kept in flight at once: enough to keep any cluster busy, small enough that the
# scheduler never holds a whole multi-plate graph
MAX_IN_FLIGHT = 4096


class Executor(Protocol):
    """Maps a function over items; yields ``(index, result, error)`` as each finishes."""

    dashboard: str | None

    def map_unordered(
        self, function: Callable[[Any], Any], items: Sequence[Any], names: Sequence[str]
    ) -> Iterator[tuple[int, Any, BaseException | None]]: ...


class SyncExecutor:
    """Runs every task in this process, one after another (no Dask, no pickling)."""

    dashboard = None

    def map_unordered(self, function, items, names):
        """Call ``function`` on each item in order; an exception is yielded, not raised."""
        for index, item in enumerate(items):
            try:
                yield index, function(item), None
            except Exception as error:  # noqa: BLE001 - recorded as the task's failure
                yield index, None, error


class DaskExecutor:
    """Runs tasks on a ``distributed`` client, with a bounded window of futures in flight."""

    def __init__(self, client) -> None:
        from screenlib.orchestrate._cluster import dashboard_link

        self.client = client
        self.dashboard = dashboard_link(client)
        if self.dashboard:
            logger.info("Dask dashboard: %s", self.dashboard)

    def map_unordered(self, function, items, names):
        """Submit ``items`` (at most :data:`MAX_IN_FLIGHT` at once); yield as they finish."""
        from distributed import as_completed

        def submit(indices: list[int]) -> list:
            # one client.map call sends the whole batch to the scheduler in one message
            futures = self.client.map(
                function,
                [items[i] for i in indices],
                key=[names[i] for i in indices],
                retries=TASK_RETRIES,
                pure=False,
            )
            for future, index in zip(futures, indices, strict=True):
                future.item_index = index
            return futures

        first = list(range(min(len(items), MAX_IN_FLIGHT)))
        window = as_completed(submit(first))
        waiting = iter(range(len(first), len(items)))
        try:
            for future in window:
                try:
                    result, error = future.result(), None
                except Exception as failure:  # noqa: BLE001 - KilledWorker, a task's error
                    result, error = None, failure
                index = future.item_index
                future.release()
                following = next(waiting, None)
                if following is not None:
                    window.add(submit([following])[0])
                yield index, result, error
        except BaseException:
            # Ctrl-C or a failure here: stop the remaining tasks rather than leave them running
            with contextlib.suppress(Exception):
                self.client.cancel(list(window.futures))
            raise


class DeferredDaskExecutor:
    """A :class:`DaskExecutor` whose client is made by the first task: the scheduler named by
    ``DASK_SCHEDULER_ADDRESS`` or Dask's configuration, else a local cluster. A run whose
    fields are all finished (a gating or fit change) starts no processes and does not even
    import Dask."""

    def __init__(self, n_workers: int | None, stack: contextlib.ExitStack) -> None:
        self.n_workers = n_workers
        self.dashboard: str | None = None
        self._stack = stack
        self._dask: DaskExecutor | None = None

    def map_unordered(self, function, items, names):
        """As :meth:`DaskExecutor.map_unordered`, once the client is made."""
        if not items:
            return
        if self._dask is None:
            from screenlib.orchestrate._cluster import dask_client

            self._dask = DaskExecutor(self._stack.enter_context(dask_client(None, self.n_workers)))
            self.dashboard = self._dask.dashboard
        yield from self._dask.map_unordered(function, items, names)


@contextlib.contextmanager
def open_executor(
    scheduler: str | None = None, n_workers: int | None = None, client=None
) -> Iterator[Executor]:
    """The executor for a run: ``"sync"``, an existing client, a scheduler address (connected
    at once, so a wrong address fails before any work), or None: the scheduler of
    ``DASK_SCHEDULER_ADDRESS`` or a local cluster (see :func:`screenlib.orchestrate.dask_client`),
    either made when the first task is sent."""
    if client is not None:
        yield DaskExecutor(client)
        return
    if scheduler == "sync":
        yield SyncExecutor()
        return
    if not scheduler:
        with contextlib.ExitStack() as stack:
            yield DeferredDaskExecutor(n_workers, stack)
        return
    from screenlib.orchestrate._cluster import dask_client

    with dask_client(scheduler, n_workers) as dask:
        yield DaskExecutor(dask)


def _failed_record(job: FieldJob, error: BaseException) -> dict[str, Any]:
    reason = f"{type(error).__name__}: {error}"
    return {
        "well": job.well,
        "field": job.field,
        "timepoint": job.timepoint,
        "status": "failed",
        "error": reason,
        "n_cells": 0,
        "qc_pass": False,
        "qc_reason": f"analysis failed: {reason}",
        "analysis_seconds": float("nan"),
    }


def execute_fields(
    executor: Executor,
    jobs: list[FieldJob],
    *,
    fields_per_task: int = 1,
    progress: bool = True,
    run_token: str = "",
) -> list[dict[str, Any]]:
    """Analyse every job's field; one ``fields.csv`` record per field, failures included."""
    if not jobs:
        return []
    from tqdm.auto import tqdm

    groups = [jobs[i : i + fields_per_task] for i in range(0, len(jobs), fields_per_task)]
    names = [f"screenlib-field-{run_token[:8]}-{group[0].plate_key}" for group in groups]
    records: list[dict[str, Any]] = []
    bar = tqdm(
        total=len(jobs), unit="field", desc="fields", disable=not progress or not jobs,
        smoothing=0.1,
    )  # fmt: skip
    try:
        for index, result, error in executor.map_unordered(analyze_fields, groups, names):
            group = groups[index]
            if error is None:
                records.extend(result)
            else:
                records.extend(_failed_record(job, error) for job in group)
            bar.update(len(group))
    finally:
        bar.close()
    return records


def gather(executor: Executor, function: Callable[[Any], Any], items: list, name: str) -> list:
    """Results of ``function`` over ``items`` in order; the first error is raised."""
    results: list[Any] = [None] * len(items)
    names = [f"screenlib-{name}-{i}" for i in range(len(items))]
    for index, result, error in executor.map_unordered(function, items, names):
        if error is not None:
            raise error
        results[index] = result
    return results
