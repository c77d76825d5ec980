"""The assay-settings template: stain guesses, round trip to the defaults, and `screenlib init`."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from screenlib.ingest import ExportInfo, export_relpath, write_vendor_metadata
from screenlib.settings import (
    AssaySettings,
    ChannelSettings,
    FitSettings,
    GatingSettings,
    load_settings,
)
from screenlib.settings_template import (
    guess_stain,
    settings_template,
    settings_to_toml,
    template_channels,
)
from screenlib.store import PlateLayout, create_plate


@pytest.mark.parametrize(
    ("name", "stain"),
    [
        ("Hoechst 33342", "hoechst"),
        ("DAPI", "hoechst"),
        ("w1", "hoechst"),
        ("405 nm", "hoechst"),
        ("FITC", "annexin_v"),
        ("Annexin V-FITC", "annexin_v"),
        ("Alexa 488", "annexin_v"),
        ("PI", "pi"),
        ("Propidium iodide", "pi"),
        ("Texas Red", "pi"),
        ("TxRed", "pi"),
        ("561", "pi"),
        ("Brightfield", None),
        ("pipeline", None),  # "pi" only as a whole word
        ("ch4", None),
    ],
)
def test_stain_guessed_from_channel_name(name, stain):
    assert guess_stain(name) == stain


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_template_round_trips_to_the_defaults(tmp_path):
    names = ["Hoechst 33342", "Annexin V-FITC", "PI"]
    stains = [guess_stain(n) for n in names]
    text = settings_template(names, stains)
    loaded = load_settings(_write(tmp_path, text))
    expected_channels = tuple(
        ChannelSettings(stain=s, index=i, name=n)
        for i, (n, s) in enumerate(zip(names, stains, strict=True))
    )
    assert loaded == AssaySettings(channels=expected_channels)
    assert loaded.channels == template_channels(names, stains)


def test_template_names_and_explains_every_setting():
    text = settings_template(["DAPI", "FITC", "TRITC"], ["hoechst", "annexin_v", None])
    lines = text.splitlines()
    defaults = AssaySettings()
    for section in dataclasses.fields(AssaySettings):
        value = getattr(defaults, section.name)
        if not dataclasses.is_dataclass(value):
            continue
        assert f"[{section.name}]" in lines
        for key in dataclasses.fields(value):
            # the key appears set or commented, right after a one-line explanation
            matches = [
                i for i, line in enumerate(lines) if line.lstrip("# ").startswith(f"{key.name} = ")
            ]
            assert matches, f"{section.name}.{key.name} missing"
            explanation = lines[matches[0] - 1]
            assert explanation.startswith("# ") and len(explanation) > 12
    assert "pixel_size_um" in text


def test_unknown_and_duplicate_channels_are_commented_out(tmp_path):
    names = ["DAPI", "Hoechst", "FITC", "Brightfield", "PI"]
    stains = [guess_stain(n) for n in names]
    text = settings_template(names, stains)
    assert "# channel 1 ('Hoechst'): stain already assigned" in text
    assert "# channel 3 ('Brightfield'): stain not recognised" in text
    loaded = load_settings(_write(tmp_path, text))
    assert [(c.stain, c.index, c.name) for c in loaded.channels] == [
        ("hoechst", 0, "DAPI"),
        ("annexin_v", 2, "FITC"),
        ("pi", 4, "PI"),
    ]


def test_template_without_recognised_channels_keeps_default_channels(tmp_path):
    text = settings_template(["ch1", "ch2"], [None, None])
    assert load_settings(_write(tmp_path, text)) == AssaySettings()


def test_settings_to_toml_round_trips_non_defaults(tmp_path):
    settings = AssaySettings(
        pixel_size_um=0.325,
        channels=(
            ChannelSettings(stain="hoechst", name='DAPI "blue"'),
            ChannelSettings(stain="pi", index=2),
        ),
        gating=GatingSettings(k_mad=3.5, annexin_gate=412.0, method="mixture"),
        fit=FitSettings(responses=("apoptotic_fraction",), fix_top=1.0),
    )
    assert load_settings(_write(tmp_path, settings_to_toml(settings))) == settings


def _init(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "screenlib", "init", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def _imagexpress_export(folder: Path, channel_names: list[str] | None) -> None:
    """A tiny real ImageXpress export: one well, three channels of 16 x 16 uint16 TIFFs."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for channel in range(3):
        relpath = export_relpath(
            "imagexpress",
            plate="P1",
            well="A01",
            field=0,
            channel=channel,
            n_fields=1,
            n_channels=3,
            n_timepoints=1,
            n_z=1,
        )
        path = folder / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, rng.integers(0, 4000, (16, 16), dtype=np.uint16))
    if channel_names:
        info = ExportInfo(
            plate="P1", wells=["A01"], n_fields=1, channel_names=channel_names, image_shape=(16, 16)
        )
        write_vendor_metadata("imagexpress", folder, info)


def test_init_on_an_export_writes_a_loadable_template(tmp_path):
    export = tmp_path / "export"
    _imagexpress_export(export, ["DAPI", "FITC", "Texas Red"])
    result = _init(str(export), "--out", "assay.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    settings = load_settings(tmp_path / "assay.toml")
    assert [(c.stain, c.index, c.name) for c in settings.channels] == [
        ("hoechst", 0, "DAPI"),
        ("annexin_v", 1, "FITC"),
        ("pi", 2, "Texas Red"),
    ]
    assert "'FITC'" in result.stdout and "annexin_v" in result.stdout

    # a second init does not overwrite the user's edits unless told to
    again = _init(str(export), "--out", "assay.toml", cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    forced = _init(str(export), "--out", "assay.toml", "--overwrite", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr


def test_init_on_an_export_without_side_car_uses_vendor_channel_names(tmp_path):
    export = tmp_path / "export"
    _imagexpress_export(export, None)
    result = _init(str(export), "--out", "s.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    channels = load_settings(tmp_path / "s.toml").channels
    assert [(c.name, c.stain) for c in channels] == [
        ("w1", "hoechst"),
        ("w2", "annexin_v"),
        ("w3", "pi"),
    ]


def test_init_on_a_zarr_plate(tmp_path):
    layout = PlateLayout(
        name="P2",
        wells=["B03"],
        channel_names=["Hoechst", "Annexin V", "Propidium iodide"],
        shape=(1, 3, 1, 8, 8),
    )
    create_plate(tmp_path / "p.zarr", layout)
    result = _init(str(tmp_path / "p.zarr"), "--out", "s.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    channels = load_settings(tmp_path / "s.toml").channels
    assert [c.stain for c in channels] == ["hoechst", "annexin_v", "pi"]


def test_every_setting_has_its_line_in_the_template():
    """The template explains every key from one table (no comments scraped from source)."""
    import dataclasses

    from screenlib.settings_template import _EXPLANATIONS

    settings = AssaySettings()
    keys = []
    for section in dataclasses.fields(settings):
        value = getattr(settings, section.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{section.name}.{f.name}" for f in dataclasses.fields(value)]
        elif section.name != "channels":
            keys.append(section.name)
    assert [k for k in keys if k not in _EXPLANATIONS] == []


@pytest.mark.parametrize(
    ("key", "value"), [("neighbour_margin_um", "-1.0"), ("neighbour_margin_um", "nan"),
                       ("ring_gap_um", "-0.5")],
)  # fmt: skip
def test_negative_ring_distances_are_refused_naming_the_key(tmp_path, key, value):
    from screenlib.errors import SettingsError

    with pytest.raises(SettingsError, match=rf"'ring\.{key}' must be 0 or more"):
        load_settings(_write(tmp_path, f"[ring]\n{key} = {value}\n"))
    margin_off = load_settings(_write(tmp_path, f"[ring]\n{key} = 0.0\n"))
    assert getattr(margin_off.ring, key) == 0.0
