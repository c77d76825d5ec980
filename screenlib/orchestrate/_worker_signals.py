"""Preloaded into the worker processes of screenlib's local cluster.

A terminal's Ctrl-C sends SIGINT to the whole process group, workers included. The client
process stops the run, cancels the tasks and closes the cluster; a worker that handled the
signal itself would only print a traceback while dying. So local workers ignore SIGINT.
The change is made in :func:`dask_setup`, which Dask calls in the worker process: importing
this module elsewhere (a nanny or client process) changes nothing.
"""

import signal


def dask_setup(worker) -> None:  # noqa: ARG001 - the preload hook Dask calls
    """Ignore SIGINT in this worker process (only the main thread may set a handler)."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave the default
        pass
