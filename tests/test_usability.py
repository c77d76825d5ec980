"""A screening scientist's second week: settings changes that keep finished fields, one flag
vocabulary, global options anywhere, display windows from the pixels, the report's path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_bad_inputs import GOOD_PLATEMAP, assert_input_error, screenlib, write_text

from screenlib.cli import SUBCOMMANDS, hoist_global_flags
from screenlib.store import open_plate


def test_global_flags_are_accepted_after_the_subcommand(export, tmp_path):
    result = screenlib("ingest", export, tmp_path / "p.zarr", "-q")
    assert result.returncode == 0, result
    assert "ingest:" not in result.stderr  # quiet: no progress bar
    assert hoist_global_flags(["run", "x", "--", "-q"]) == ["run", "x", "--", "-q"]


def test_overwrite_is_named_with_its_dashes(export, tmp_path):
    assert screenlib("-q", "ingest", export, tmp_path / "p.zarr").returncode == 0
    again = screenlib("-q", "ingest", export, tmp_path / "p.zarr")
    assert_input_error(again, "--overwrite")


def test_ingest_sets_display_windows_from_the_pixels(export, tmp_path):
    assert screenlib("-q", "ingest", export, tmp_path / "p.zarr").returncode == 0
    plate = open_plate(tmp_path / "p.zarr")
    meta = json.loads((tmp_path / "p.zarr" / "A" / "1" / "0" / "zarr.json").read_text())
    windows = [c["window"] for c in meta["attributes"]["ome"]["omero"]["channels"]]
    for channel, window in enumerate(windows):
        pixels = np.concatenate([plate.read_field(w, 0)[channel].ravel() for w in plate.wells])
        assert window["start"] <= np.percentile(pixels, 1) < np.percentile(pixels, 99)
        assert np.percentile(pixels, 99) <= window["end"] < 4095  # not the fixed 0..4095


def test_init_template_keeps_every_finished_field(export, tmp_path):
    """Switching from no settings to the unedited `screenlib init` template re-analysed every
    field: the hash held display-only names. Now only what changes a field counts."""
    gates = "\n[gating]\nannexin_gate = 200.0\npi_gate = 200.0\nbleedthrough_annexin_to_pi = 0.0\n"
    platemap = write_text(tmp_path / "map.csv", GOOD_PLATEMAP)
    manual = write_text(tmp_path / "manual.toml", gates)
    out = tmp_path / "out"
    first = screenlib("-q", "run", export, "--platemap", platemap, "--out", out,
                      "--settings", manual, "--scheduler", "sync")  # fmt: skip
    assert first.returncode == 0, first
    assert "report:" in first.stdout and str(out / "report.html") in first.stdout
    template = tmp_path / "assay.toml"
    assert screenlib("-q", "init", export, "--out", template).returncode == 0
    text = template.read_text(encoding="utf-8")
    # the template's gating table, with the same manual gates
    text = text.replace("[gating]\n", gates.strip() + "\n", 1)
    edited = write_text(tmp_path / "edited.toml", text)
    second = screenlib("-q", "run", export, "--platemap", platemap, "--out", out,
                       "--settings", edited, "--scheduler", "sync")  # fmt: skip
    assert second.returncode == 0, second
    manifest = json.loads((Path(out) / "run.json").read_text())
    assert manifest["n_fields_todo"] == 0 and manifest["n_fields_reused"] == 4


def test_a_run_with_every_field_finished_starts_no_cluster(export, tmp_path, monkeypatch):
    """A gating change re-gates in seconds: no local Dask cluster is started when no field
    needs analysing (it used to cost several seconds of process start-up)."""
    from screenlib.orchestrate import _cluster

    gates = "\n[gating]\nannexin_gate = {}\npi_gate = 200.0\nbleedthrough_annexin_to_pi = 0.0\n"
    platemap = write_text(tmp_path / "map.csv", GOOD_PLATEMAP)
    out = tmp_path / "out"
    first_settings = write_text(tmp_path / "a.toml", gates.format(200.0))
    first = screenlib("-q", "run", export, "--platemap", platemap, "--out", out,
                      "--settings", first_settings, "--no-report")  # fmt: skip
    assert first.returncode == 0, first
    started = []
    real = _cluster.dask_client

    def recording_dask_client(*args, **kwargs):
        started.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(_cluster, "dask_client", recording_dask_client)
    regated = write_text(tmp_path / "b.toml", gates.format(300.0))
    second = screenlib("-q", "run", export, "--platemap", platemap, "--out", out,
                       "--settings", regated, "--no-report")  # fmt: skip
    assert second.returncode == 0, second
    manifest = json.loads((Path(out) / "run.json").read_text())
    assert manifest["n_fields_todo"] == 0 and manifest["n_fields_reused"] == 4
    assert started == [], "a cluster was started for a run with nothing to analyse"
    gates_used = json.loads((Path(out) / "gates.json").read_text())
    assert "300" in json.dumps(gates_used)


def test_help_lists_every_command_without_importing_them():
    probe = (
        "import sys\n"
        "from screenlib.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in sys.modules if m.startswith('screenlib.cli.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name, (_, text) in SUBCOMMANDS.items():
        assert name in result.stdout and text.split()[0] in result.stdout
    loaded = result.stdout.split("LOADED", 1)[1]
    assert "screenlib.cli.simulate" not in loaded and "screenlib.cli.run" not in loaded


EXITING = """
import atexit, pathlib, sys
from screenlib.cli import console_main
marker = pathlib.Path(sys.argv[1])
atexit.register(marker.write_text, "exit handlers ran")
sys.argv = ["screenlib", *sys.argv[2:]]
console_main()
"""


def test_the_command_skips_teardown_but_keeps_output_status_and_exit_handlers(tmp_path):
    """``screenlib`` ends without the interpreter's teardown (about 0.4 s of a re-gate), yet
    what it printed, its exit status and the exit handlers (e.g. removing temporary folders)
    are all kept, for a finished command and for one stopped by bad input."""
    marker = tmp_path / "marker.txt"
    listed = subprocess.run([sys.executable, "-c", EXITING, str(marker), "plugins"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "annexin_v" in listed.stdout and "hoechst" in listed.stdout
    assert marker.read_text() == "exit handlers ran"
    marker.unlink()
    missing = tmp_path / "no_such_map.csv"
    command = [sys.executable, "-c", EXITING, str(marker), "platemap", str(missing)]
    stopped = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 2, (stopped.returncode, stopped.stderr)
    assert "no_such_map.csv" in stopped.stderr
    assert marker.read_text() == "exit handlers ran"
