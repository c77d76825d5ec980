"""Run the per-field analysis over plates: plan -> execute -> finalize -> write, and resume.

:func:`plan_run` checks and resolves everything before any field is read;
:mod:`~screenlib.orchestrate.execute` maps the field task over a synchronous or Dask executor;
:func:`finalize` is a pure function from tables to gates, wells, QC and fits;
:class:`OutputSet` writes the results as one set. :func:`run_plate` strings them together.
"""

from screenlib.orchestrate._cluster import dask_client, scheduler_address
from screenlib.orchestrate.execute import DaskExecutor, SyncExecutor, open_executor
from screenlib.orchestrate.finalize import Results, finalize
from screenlib.orchestrate.outputs import OutputSet
from screenlib.orchestrate.plan import PlatePlan, RunPlan
from screenlib.orchestrate.run import RunSummary, concatenate_parts, plan_run, run_plate

__all__ = [
    "DaskExecutor",
    "OutputSet",
    "PlatePlan",
    "Results",
    "RunPlan",
    "RunSummary",
    "SyncExecutor",
    "concatenate_parts",
    "dask_client",
    "finalize",
    "open_executor",
    "plan_run",
    "run_plate",
    "scheduler_address",
]
