"""Run the per-field analysis over plates with Dask: prepare, compute, finalize, resume."""

from screenlib.orchestrate._cluster import dask_client, scheduler_address
from screenlib.orchestrate._run import RunSummary, concatenate_parts, run_plate

__all__ = [
    "RunSummary",
    "concatenate_parts",
    "dask_client",
    "run_plate",
    "scheduler_address",
]
