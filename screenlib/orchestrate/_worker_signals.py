"""Preloaded into the worker processes of screenlib's local cluster.

A terminal's Ctrl-C sends SIGINT to the whole process group, workers included. The client
process stops the run, cancels the tasks and closes the cluster; a worker that handled the
signal itself would only print a traceback while dying. So local workers ignore SIGINT.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)


def dask_setup(worker) -> None:  # noqa: ARG001 - the preload hook Dask calls
    """Nothing to set up: importing this module did the work."""
