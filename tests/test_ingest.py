"""Ingest of TIFF exports: every convention round-trips every pixel; bad inputs are named."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from ome_zarr_models.v05.hcs import HCS

from screenlib.errors import InputError
from screenlib.ingest import (
    CONVENTIONS,
    detect_convention,
    export_relpath,
    imagexpress_tiff_description,
    ingest_export,
    parse_relpath,
    write_vendor_metadata,
)

CHANNELS = ["Hoechst 33342", "Annexin V-FITC", "PI"]
TIMES = ["2026-01-01T00:00:00", "2026-01-01T06:00:00", "2026-01-01T12:00:00"]


def write_export(
    folder,
    convention,
    *,
    wells=("A01", "B03"),
    n_fields=2,
    n_channels=3,
    n_timepoints=1,
    n_z=1,
    shape=(24, 32),
    dtype=np.uint16,
    side_cars=True,
    plate="PL1",
    seed=0,
):
    """Write a small export in a vendor naming; return {(well, f, c, t, z): pixels}."""
    rng = np.random.default_rng(seed)
    info = dict(
        plate=plate,
        wells=list(wells),
        n_fields=n_fields,
        channel_names=CHANNELS[:n_channels],
        image_shape=shape,
        pixel_size_um=0.65,
        n_timepoints=n_timepoints,
        n_z=n_z,
        acquisition_times=TIMES[:n_timepoints],
    )
    if side_cars:
        write_vendor_metadata(convention, folder, info)
    dims = dict(n_fields=n_fields, n_channels=n_channels, n_timepoints=n_timepoints, n_z=n_z)
    truth = {}
    for well in wells:
        for f in range(n_fields):
            for c in range(n_channels):
                for t in range(n_timepoints):
                    for z in range(n_z):
                        relpath = export_relpath(
                            convention, plate=plate, well=well, field=f, channel=c,
                            timepoint=t, z=z, **dims,
                        )  # fmt: skip
                        path = folder / relpath
                        path.parent.mkdir(parents=True, exist_ok=True)
                        pixels = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
                        extra = {}
                        if convention == "imagexpress" and side_cars:
                            extra = dict(
                                description=imagexpress_tiff_description(
                                    info, channel=c, acquisition_time=TIMES[t]
                                ),
                                software="MetaSeries",
                                metadata=None,
                            )
                        tifffile.imwrite(path, pixels, **extra)
                        truth[well, f, c, t, z] = pixels
    return truth


def checksums(folder):
    return {
        p.relative_to(folder).as_posix(): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )  # fmt: skip
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_round_trip(plate, truth):
    for (well, f, c, t, z), pixels in truth.items():
        stack = plate.read_field_stack(well, f)
        np.testing.assert_array_equal(stack[t, c, z], pixels)


def validate_hcs(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return HCS.from_zarr(zarr.open_group(path, mode="r"))


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_round_trip_each_convention_with_t_and_z(tmp_path, convention):
    source = tmp_path / "export"
    truth = write_export(source, convention, n_timepoints=2, n_z=3)
    before = checksums(source)
    assert detect_convention(source) == convention
    plate = ingest_export(source, tmp_path / "plate.zarr", progress=False)
    assert checksums(source) == before  # raw files untouched (content and mtime)
    assert plate.shape == (2, 3, 3, 24, 32)
    assert plate.wells == ["A01", "B03"]
    assert plate.fields("A01") == [0, 1]
    assert plate.channel_names == CHANNELS
    assert plate.pixel_size_um == pytest.approx(0.65)
    assert_round_trip(plate, truth)
    np.testing.assert_array_equal(
        plate.read_field("B03", 1, timepoint=1),
        np.stack([np.max([truth["B03", 1, c, 1, z] for z in range(3)], axis=0) for c in range(3)]),
    )
    assert validate_hcs(tmp_path / "plate.zarr").n_wells == 2
    vendor = plate.vendor_metadata
    assert vendor["convention"] == convention
    assert vendor["files"]  # raw side-car text copied
    if convention != "cellvoyager":  # the .mrf carries no times
        assert plate.acquisition_times == TIMES[:2]


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_round_trip_single_everything_without_side_cars(tmp_path, convention):
    source = tmp_path / "export"
    truth = write_export(
        source, convention, wells=("H12",), n_fields=1, n_channels=1, side_cars=False,
        dtype=np.uint8,
    )  # fmt: skip
    if convention == "imagexpress":
        assert [p.name for p in source.iterdir()] == ["PL1_H12.tif"]  # no _s / _w parts
    plate = ingest_export(source, tmp_path / "plate.zarr", progress=False)
    assert plate.shape == (1, 1, 1, 24, 32) and plate.dtype == np.uint8
    assert plate.pixel_size_um is None
    assert_round_trip(plate, truth)
    validate_hcs(tmp_path / "plate.zarr")


def test_imagexpress_guid_thumbnails_and_a1_names(tmp_path):
    source = tmp_path / "export"
    source.mkdir()
    rng = np.random.default_rng(3)
    guid = "46C9B2CD-0BB3-4B8A-9187-2805F4C90506"
    truth = {}
    for well in ("A1", "C5"):
        for site in (1, 2):
            for wave in (1, 2):
                pixels = rng.integers(0, 4000, (16, 16), dtype=np.uint16)
                tifffile.imwrite(source / f"MIP-2P_{well}_s{site}_w{wave}{guid}.tif", pixels)
                tifffile.imwrite(source / f"MIP-2P_{well}_s{site}_w{wave}_thumb{guid}.tif",
                                 pixels[::4, ::4])  # fmt: skip
                truth[f"{well[0]}0{well[1]}", site - 1, wave - 1, 0, 0] = pixels
    plate = ingest_export(source, tmp_path / "plate.zarr", progress=False)
    assert plate.wells == ["A01", "C05"] and plate.shape == (1, 2, 1, 16, 16)
    assert plate.channel_names == ["w1", "w2"]
    assert plate.name == "MIP-2P"
    assert_round_trip(plate, truth)
    assert len(plate.vendor_metadata["skipped_files"]) == 8  # the previews


def test_generic_pattern_row_col(tmp_path):
    source = tmp_path / "export"
    (source / "sub").mkdir(parents=True)
    rng = np.random.default_rng(4)
    truth = {}
    for row, column in ((2, 3), (4, 7)):
        for field in (0, 1):
            for channel in (0, 1, 2):
                pixels = rng.integers(0, 4000, (16, 20), dtype=np.uint16)
                name = f"sub/R{row}-C{column}-fld{field}-ch{channel}.tiff"
                tifffile.imwrite(source / name, pixels)
                truth["ABCDEFGH"[row - 1] + f"{column:02d}", field, channel, 0, 0] = pixels
    pattern = r"R(?P<row>\d+)-C(?P<col>\d+)-fld(?P<field>\d+)-ch(?P<channel>\d+)"
    with pytest.raises(InputError, match="--pattern"):
        detect_convention(source)
    plate = ingest_export(source, tmp_path / "plate.zarr", pattern=pattern, progress=False)
    assert plate.wells == ["B03", "D07"]
    assert_round_trip(plate, truth)
    with pytest.raises(InputError, match="named group 'well'"):
        ingest_export(source, tmp_path / "p2.zarr", pattern=r"(?P<field>\d)", progress=False)


def relpath_of(convention, well, field, channel, **dims):
    return export_relpath(convention, plate="PL1", well=well, field=field, channel=channel,
                          **dims)  # fmt: skip


DIMS = dict(n_fields=2, n_channels=3, n_timepoints=1, n_z=1)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_truncated_tiff_named(tmp_path, convention):
    source = tmp_path / "export"
    write_export(source, convention)
    bad = source / relpath_of(convention, "B03", 1, 2, **DIMS)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(InputError, match=rf"{bad.name}.*(truncated|unreadable)"):
        ingest_export(source, tmp_path / "plate.zarr", progress=False)
    assert not (tmp_path / "plate.zarr").exists()  # no half-written plate left behind


def test_zero_byte_tiff_named(tmp_path):
    source = tmp_path / "export"
    write_export(source, "operetta")
    bad = source / relpath_of("operetta", "A01", 0, 1, **DIMS)
    bad.write_bytes(b"")
    with pytest.raises(InputError, match=rf"{bad.name}: empty \(zero-byte\) TIFF"):
        ingest_export(source, tmp_path / "plate.zarr", progress=False)


def test_corrupt_tiff_header_named(tmp_path):
    source = tmp_path / "export"
    write_export(source, "cellvoyager")
    bad = source / relpath_of("cellvoyager", "A01", 1, 0, **DIMS)
    bad.write_bytes(b"this is not a tiff at all" * 10)
    with pytest.raises(InputError, match=rf"{bad.name}: unreadable TIFF"):
        ingest_export(source, tmp_path / "plate.zarr", progress=False)


def test_field_with_different_shape_named(tmp_path):
    source = tmp_path / "export"
    write_export(source, "imagexpress")
    bad = source / relpath_of("imagexpress", "B03", 1, 0, **DIMS)
    tifffile.imwrite(bad, np.zeros((20, 32), np.uint16))
    with pytest.raises(InputError, match=rf"{bad.name}: well B03 field 1 channel 0 is \(20, 32\)"):
        ingest_export(source, tmp_path / "plate.zarr", progress=False)


def test_missing_channel_named_and_allow_missing_records_gap(tmp_path):
    source = tmp_path / "export"
    truth = write_export(source, "imagexpress")
    gone = source / relpath_of("imagexpress", "B03", 0, 2, **DIMS)
    gone.unlink()
    with pytest.raises(InputError, match=r"well B03 field 0 channel 2 .*PL1_B03_s1_w3\.tif"):
        ingest_export(source, tmp_path / "plate.zarr", progress=False)
    plate = ingest_export(source, tmp_path / "plate.zarr", allow_missing=True, progress=False)
    gaps = plate.vendor_metadata["missing_images"]
    assert gaps == [{"well": "B03", "field": 0, "channel": 2, "timepoint": 0, "z": 0}]
    assert plate.read_field_stack("B03", 0)[0, 2].max() == 0
    del truth["B03", 0, 2, 0, 0]
    assert_round_trip(plate, truth)


def test_channel_missing_everywhere_caught_by_vendor_metadata(tmp_path):
    source = tmp_path / "export"
    write_export(source, "operetta")  # Index.idx.xml lists three channels
    for path in (source / "Images").glob("*-ch3sk1*.tiff"):
        path.unlink()
    with pytest.raises(InputError, match=r"image\(s\) missing: well A01 field 0 channel 2"):
        ingest_export(source, tmp_path / "plate.zarr", progress=False)


def test_bad_arguments(tmp_path):
    source = tmp_path / "export"
    write_export(source, "operetta")
    with pytest.raises(InputError, match="unknown --convention"):
        ingest_export(source, tmp_path / "p.zarr", convention="zeiss", progress=False)
    with pytest.raises(InputError, match="not a folder"):
        ingest_export(tmp_path / "nothing", tmp_path / "p.zarr", progress=False)
    with pytest.raises(InputError, match="inside the export"):
        ingest_export(source, source / "p.zarr", progress=False)
    with pytest.raises(InputError, match="no image fits the imagexpress naming"):
        ingest_export(source, tmp_path / "p.zarr", convention="imagexpress", progress=False)


def test_parse_relpath_round_trips_export_relpath():
    for convention in CONVENTIONS:
        for n_t, n_z, n_f, n_c in ((1, 1, 1, 1), (3, 2, 4, 5), (12, 1, 9, 2)):
            dims = dict(n_fields=n_f, n_channels=n_c, n_timepoints=n_t, n_z=n_z)
            for well in ("A01", "P24", "AF48"):
                key = (well, n_f - 1, n_c - 1, n_t - 1, n_z - 1)
                relpath = export_relpath(
                    convention, plate="Plate-7", well=well, field=key[1], channel=key[2],
                    timepoint=key[3], z=key[4], **dims,
                )  # fmt: skip
                parsed = parse_relpath(convention, relpath)
                assert parsed is not None, relpath
                assert tuple(parsed[:5]) == key
                others = [c for c in CONVENTIONS if c != convention]
                assert all(parse_relpath(c, relpath) is None for c in others), relpath


def test_cli_ingest(tmp_path):
    from screenlib.cli.ingest import command

    source = tmp_path / "export"
    truth = write_export(source, "cellvoyager")
    runner = CliRunner()
    result = runner.invoke(command, [str(source), str(tmp_path / "p.zarr"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "2 wells" in result.output
    from screenlib.store import open_plate

    assert_round_trip(open_plate(tmp_path / "p.zarr"), truth)
    result = runner.invoke(command, [str(tmp_path / "none"), str(tmp_path / "q.zarr")])
    assert result.exit_code != 0


def test_vendor_side_cars_from_a_plate_layout(tmp_path):
    """Simulators pass a PlateLayout; the side-cars then describe the plate ingest reads."""
    from screenlib.ingest._vendor import read_cellvoyager_mrf, read_harmony_index, read_htd
    from screenlib.store import PlateLayout

    layout = PlateLayout(
        name="SIM1",
        wells=["B2", "P24"],
        channel_names=["Hoechst", "Annexin", "PI"],
        shape=(2, 3, 1, 20, 30),
        n_fields=3,
        pixel_size_um=0.325,
        acquisition_times=TIMES[:2],
    )
    htd = read_htd(write_vendor_metadata("imagexpress", tmp_path, layout)[0])
    assert htd.wells == ["B02", "P24"] and htd.extra["plate_size"] == 384
    assert (htd.n_fields, htd.n_timepoints, htd.n_z) == (3, 2, 1)
    assert htd.channel_names == ["Hoechst", "Annexin", "PI"]
    harmony = read_harmony_index(write_vendor_metadata("operetta", tmp_path, layout)[0])
    assert harmony.channel_names == ["Hoechst", "Annexin", "PI"]
    assert harmony.pixel_size_um == pytest.approx(0.325)
    assert harmony.acquisition_times == TIMES[:2]
    mrf = read_cellvoyager_mrf(write_vendor_metadata("cellvoyager", tmp_path, layout)[0])
    assert (mrf.plate, mrf.n_fields, mrf.pixel_size_um) == ("SIM1", 3, pytest.approx(0.325))


def test_cli_reports_input_error_in_one_line(tmp_path, capsys):
    from screenlib.cli import main

    source = tmp_path / "export"
    write_export(source, "imagexpress")
    (source / relpath_of("imagexpress", "A01", 1, 1, **DIMS)).unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", str(source), str(tmp_path / "p.zarr"), "--no-progress"])
    assert exit_info.value.code == 2
    error_text = capsys.readouterr().err.strip()
    assert error_text.startswith("error: ") and "\n" not in error_text
    assert "well A01 field 1 channel 1" in error_text and "--allow-missing" in error_text


HARMONY_V7 = """<?xml version="1.0" encoding="utf-8"?>
<EvaluationInputData xmlns="http://www.perkinelmer.com/PEHH/HarmonyV7" Version="2">
  <Plates><Plate><PlateID>Phenix-7</PlateID></Plate></Plates>
  <Maps><Map>
    <Entry ChannelID="1"><ChannelName>DAPI</ChannelName>
      <ImageResolutionX Unit="m">6.4813031953862E-07</ImageResolutionX></Entry>
    <Entry ChannelID="2"><ChannelName>Alexa 488</ChannelName></Entry>
  </Map></Maps>
  <Images>
    <Image Version="1"><URL>r02c05f01p01-ch1sk1fk1fl1.tiff</URL><Row>2</Row><Col>5</Col>
      <FieldID>1</FieldID><PlaneID>1</PlaneID><TimepointID>0</TimepointID><ChannelID>1</ChannelID>
      <AbsTime>2026-03-01T10:00:05.12+01:00</AbsTime></Image>
    <Image Version="1"><URL>r02c05f01p01-ch2sk1fk1fl1.tiff</URL><Row>2</Row><Col>5</Col>
      <FieldID>1</FieldID><PlaneID>1</PlaneID><TimepointID>0</TimepointID><ChannelID>2</ChannelID>
      <AbsTime>2026-03-01T10:00:04.50+01:00</AbsTime></Image>
  </Images>
</EvaluationInputData>
"""


def test_harmony_v7_index_xml(tmp_path):
    source = tmp_path / "export"
    (source / "Images").mkdir(parents=True)
    (source / "Images" / "Index.xml").write_text(HARMONY_V7, encoding="utf-8")
    rng = np.random.default_rng(8)
    truth = {}
    for channel in (1, 2):
        pixels = rng.integers(0, 4095, (16, 16), dtype=np.uint16)
        tifffile.imwrite(source / "Images" / f"r02c05f01p01-ch{channel}sk1fk1fl1.tiff", pixels)
        truth["B05", 0, channel - 1, 0, 0] = pixels
    plate = ingest_export(source, tmp_path / "plate.zarr", progress=False)
    assert plate.name == "Phenix-7"
    assert plate.channel_names == ["DAPI", "Alexa 488"]
    assert plate.pixel_size_um == pytest.approx(0.64813031953862)
    assert plate.acquisition_times == ["2026-03-01T10:00:04.50+01:00"]
    assert "Images/Index.xml" in plate.vendor_metadata["files"]
    assert_round_trip(plate, truth)


@settings(max_examples=200, deadline=None)
@given(
    convention=st.sampled_from(CONVENTIONS),
    dims=st.tuples(*[st.integers(1, 12)] * 4),
    position=st.tuples(*[st.floats(0, 0.999)] * 4),
    row=st.integers(0, 31),
    column=st.integers(1, 48),
    plate=st.from_regex(r"[A-Za-z0-9\-]{1,12}", fullmatch=True),
)
def test_export_relpath_parse_relpath_property(convention, dims, position, row, column, plate):
    from screenlib.platemap import PlateGeometry

    well = PlateGeometry.from_size(1536).row_names[row] + str(column)
    n_fields, n_channels, n_timepoints, n_z = dims
    key = tuple(int(p * n) for p, n in zip(position, dims, strict=True))
    relpath = export_relpath(
        convention, plate=plate, well=well, field=key[0], channel=key[1], timepoint=key[2],
        z=key[3], n_fields=n_fields, n_channels=n_channels, n_timepoints=n_timepoints, n_z=n_z,
    )  # fmt: skip
    parsed = parse_relpath(convention, relpath)
    assert parsed is not None, relpath
    assert (parsed.well, parsed.field, parsed.channel, parsed.timepoint, parsed.z) == (
        f"{well[:-len(str(column))]}{column:02d}", *key,
    )  # fmt: skip
