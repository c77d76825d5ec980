"""The ``screenlib`` command line: one subcommand per step of the screening protocol.

Subcommands live in their own modules (``screenlib/cli/<name>.py``, each exposing a click
command called ``command``) and are imported only when used, so ``screenlib --help`` is fast
and a broken optional part cannot break the others.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import logging
import os
import sys
import threading

import click

from screenlib import __version__
from screenlib.errors import ScreenlibError

# name -> (module, one-line help shown by ``screenlib --help``), in protocol order
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "init": ("screenlib.cli.init", "Write a commented assay-settings template for an export."),
    "ingest": ("screenlib.cli.ingest", "Convert a microscope TIFF export into an OME-Zarr plate."),
    "platemap": (
        "screenlib.cli.platemap",
        "Preview how a plate map is read: columns, plate, curves.",
    ),
    "segment": ("screenlib.cli.segment", "Segment nuclei in one image (to check settings)."),
    "run": (
        "screenlib.cli.run",
        "Analyse a plate: segment, measure, gate, aggregate, fit and report.",
    ),
    "fit": ("screenlib.cli.fit", "Fit dose-response curves to a table or MTT plate-reader data."),
    "simulate": ("screenlib.cli.simulate", "Render a synthetic plate with per-cell ground truth."),
    "plugins": ("screenlib.cli.plugins", "List installed stain and segmenter plugins."),
}

# exit codes: 0 success, 1 unexpected internal error, 2 bad input or settings,
# 3 run finished but some fields or fits failed (see the run summary)
EXIT_INPUT_ERROR = 2
EXIT_PARTIAL = 3


class ProtocolGroup(click.Group):
    """A click group that imports each subcommand's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module_name, short_help = SUBCOMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            return None
        command = module.command
        command.short_help = command.short_help or short_help
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the subcommands from :data:`SUBCOMMANDS` without importing their modules."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in SUBCOMMANDS.items()])


@click.group(cls=ProtocolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="screenlib")
@click.option("-v", "--verbose", is_flag=True, help="Show debug messages and full tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """screenlib: from a screening microscope's export to apoptosis IC50s.

    \b
    The protocol, one command each:
      1. screenlib init EXPORT          write assay settings (channels -> stains)
      2. screenlib ingest EXPORT P.zarr convert the TIFF export to an OME-Zarr plate
      3. screenlib run PLATE --platemap MAP.csv --out DIR
                                        segment nuclei, measure Annexin V / PI per cell,
                                        gate from vehicle wells, per-well fractions, plate QC,
                                        dose-response fits and an HTML report
    \b
    Also: `screenlib fit` for tables and MTT plate-reader data, `screenlib segment` to check
    segmentation on one image, `screenlib simulate` for plates with ground truth.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    ctx.obj["quiet"] = quiet and not verbose
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    # keep library chatter (distributed, matplotlib) out of a user's console
    for noisy in ("distributed", "matplotlib", "PIL", "fsspec", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.ERROR)


GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose")


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Move ``-q`` / ``-v`` given after the subcommand in front of it, where click reads them.

    Examples
    --------
    >>> hoist_global_flags(["run", "plate", "-q"])
    ['-q', 'run', 'plate']
    """
    if "--" in argv:  # everything after -- is an argument, as given
        cut = argv.index("--")
        return hoist_global_flags(argv[:cut]) + argv[cut:]
    return [a for a in argv if a in GLOBAL_FLAGS] + [a for a in argv if a not in GLOBAL_FLAGS]


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning input errors into one clear line."""
    argv = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    verbose = any(arg in ("-v", "--verbose") for arg in argv)
    try:
        cli.main(args=argv, prog_name="screenlib", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C (SIGINT) into Abort; the local cluster is already closed
        click.echo(
            "Interrupted: finished fields are kept; run the same command again to resume.",
            err=True,
        )
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except ScreenlibError as error:
        if verbose:
            raise
        click.echo(f"error: {error}", err=True)
        sys.exit(EXIT_INPUT_ERROR)
    except OSError as error:
        # disk full, permission denied, a path through a file: the environment, not a bug
        if verbose:
            raise
        where = f" {error.filename}" if error.filename else ""
        click.echo(
            f"error: cannot read or write{where}: {error.strerror or error}; "
            "check the path, its permissions and free disk space",
            err=True,
        )
        sys.exit(EXIT_INPUT_ERROR)
    except Exception as error:  # noqa: BLE001 - last line of defence for a user's console
        if verbose:
            raise
        click.echo(
            f"internal error: {type(error).__name__}: {error}\n"
            "Run again with --verbose for the traceback, and please report it.",
            err=True,
        )
        sys.exit(1)


def console_main() -> None:
    """The ``screenlib`` command: :func:`main`, then an exit that skips the interpreter's teardown.

    Freeing the modules of numpy, pandas, pyarrow and scipy one by one at exit takes about
    0.4 s, a tenth of a gating-only re-run. When the command is over its files are written and
    closed; the exit handlers still run (logging flushed, temporary folders removed, child
    processes ended), then the process ends. Where other threads are still running, or the exit
    status is not a number, it exits the normal way.

    The cyclic garbage collector runs every 10,000 net allocations instead of Python's 700:
    importing numpy, pandas, pyarrow and scipy creates a few hundred thousand long-lived
    objects, and at the default rate a gating-only re-run spent about 0.23 s (two full
    collections and some 260 smaller ones) scanning them, against about 0.1 s now. Cycles are
    still collected; at most a few thousand more objects wait for it.
    """
    gc.set_threshold(10_000, 10, 10)
    try:
        main()
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    if not (code is None or isinstance(code, int)) or threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (e.g. `| head`): nothing more to say
            pass
    os._exit(code or 0)
