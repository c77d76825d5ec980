"""Plate store: OME-Zarr 0.5 HCS layout on zarr v3, pixels and labels round-trip exactly."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import zarr
from ome_zarr_models.v05.hcs import HCS
from ome_zarr_models.v05.image import Image

from screenlib.errors import InputError
from screenlib.store import PlateLayout, create_plate, open_plate


def small_layout(**overrides) -> PlateLayout:
    values = dict(
        name="P1",
        wells=["A1", "B03", "H12"],
        channel_names=["Hoechst", "AnnexinV", "PI"],
        shape=(2, 3, 2, 24, 32),
        n_fields=2,
        pixel_size_um=0.65,
        z_step_um=2.0,
        channel_colors=["0000ff", "#00FF00", "FF0000"],
        acquisition_times=["2026-01-01T00:00:00", "2026-01-01T12:00:00"],
        vendor_metadata={"instrument": "test"},
        vendor_files={"P1.HTD": '"HTSInfoFile", Version 1.0\n'},
    )
    values.update(overrides)
    return PlateLayout(**values)


@pytest.fixture
def plate_path(tmp_path):
    return tmp_path / "plate.zarr"


def test_round_trip_every_pixel(plate_path):
    plate = create_plate(plate_path, small_layout())
    rng = np.random.default_rng(1)
    written = {}
    for well in plate.wells:
        for field in plate.fields(well):
            data = rng.integers(0, 65535, size=plate.shape, dtype=np.uint16)
            plate.write_field(well, field, data)
            written[well, field] = data
    reopened = open_plate(plate_path)
    assert reopened.wells == ["A01", "B03", "H12"]
    assert reopened.fields("B03") == [0, 1]
    assert reopened.shape == (2, 3, 2, 24, 32)
    assert reopened.dtype == np.uint16
    assert reopened.n_timepoints == 2
    assert reopened.channel_names == ["Hoechst", "AnnexinV", "PI"]
    assert reopened.pixel_size_um == pytest.approx(0.65)
    assert reopened.name == "P1"
    for (well, field), data in written.items():
        np.testing.assert_array_equal(reopened.read_field_stack(well, field), data)
        # (C, Y, X): maximum projection over z
        np.testing.assert_array_equal(reopened.read_field(well, field, 1), data[1].max(axis=1))


def test_write_plane_touches_one_chunk(plate_path):
    plate = create_plate(plate_path, small_layout())
    plane = np.full((24, 32), 7, dtype=np.uint16)
    plate.write_plane("B03", 1, plane, channel=2, timepoint=1, z=0)
    chunk_files = [p for p in plate_path.rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert [p.relative_to(plate_path).as_posix() for p in chunk_files] == ["B/3/1/0/c/1/2/0/0/0"]
    stack = open_plate(plate_path).read_field_stack("B03", 1)
    assert (stack[1, 2, 0] == 7).all() and stack.sum() == 7 * plane.size
    with pytest.raises(InputError, match="plane shape"):
        plate.write_plane("B03", 1, np.zeros((5, 5), np.uint16), channel=0)


def test_metadata_validates_as_ome_zarr_05_hcs(plate_path):
    plate = create_plate(plate_path, small_layout())
    plate.create_labels("nuclei")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no auto-fixes (e.g. a missing plate.version)
        hcs = HCS.from_zarr(zarr.open_group(plate_path, mode="r"))
    assert hcs.n_wells == 3
    root = json.loads((plate_path / "zarr.json").read_text())
    ome = root["attributes"]["ome"]
    assert ome["version"] == "0.5" and ome["plate"]["version"] == "0.5"
    assert [r["name"] for r in ome["plate"]["rows"]] == list("ABCDEFGH")
    assert len(ome["plate"]["columns"]) == 12
    assert {"path": "H/12", "rowIndex": 7, "columnIndex": 11} in ome["plate"]["wells"]
    # every array carries dimension_names
    arrays = [json.loads(p.read_text()) for p in plate_path.rglob("zarr.json")]
    arrays = [a for a in arrays if a["node_type"] == "array"]
    assert len(arrays) == 3 * 2 * 2  # images + labels
    for array in arrays:
        assert array["dimension_names"] in (["t", "c", "z", "y", "x"], ["t", "z", "y", "x"])
    field = zarr.open_group(plate_path / "B/3/1", mode="r")
    image = Image.from_zarr(field)
    assert image.labels is not None
    channels = field.attrs["ome"]["omero"]["channels"]
    assert [c["color"] for c in channels] == ["0000FF", "00FF00", "FF0000"]
    assert all(set(c["window"]) == {"min", "max", "start", "end"} for c in channels)
    scale = field.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert scale[0]["scale"] == [1.0, 1.0, 2.0, 0.65, 0.65]
    # one chunk per channel plane
    for array in arrays:
        chunks = array["chunk_grid"]["configuration"]["chunk_shape"]
        assert chunks == [1] * (len(chunks) - 2) + [24, 32]
    # vendor metadata copied into the plate
    vendor = open_plate(plate_path).vendor_metadata
    assert vendor["pixel_size_um"] == 0.65
    assert vendor["channel_names"] == ["Hoechst", "AnnexinV", "PI"]
    assert vendor["acquisition_times"] == ["2026-01-01T00:00:00", "2026-01-01T12:00:00"]
    assert vendor["files"]["P1.HTD"].startswith('"HTSInfoFile"')
    assert vendor["instrument"] == "test"


def test_labels_round_trip_and_napari_metadata(plate_path):
    plate = create_plate(plate_path, small_layout())
    plate.create_labels("nuclei")
    labels = np.arange(24 * 32, dtype=np.int64).reshape(24, 32) % 5
    plate.write_labels("A01", 1, labels, timepoint=1)
    reopened = open_plate(plate_path, mode="r+")
    np.testing.assert_array_equal(reopened.read_labels("A01", 1, timepoint=1), labels)
    assert reopened.read_labels("A01", 1, timepoint=0).max() == 0
    assert reopened.read_labels("A01", 1).dtype == np.int32
    assert reopened.label_names("A01", 1) == ["nuclei"]
    label_attrs = zarr.open_group(plate_path / "A/1/1/labels/nuclei", mode="r").attrs["ome"]
    assert label_attrs["image-label"]["source"] == {"image": "../../"}
    assert [a["name"] for a in label_attrs["multiscales"][0]["axes"]] == ["t", "z", "y", "x"]
    with pytest.raises(InputError, match="no label image 'cells'"):
        reopened.read_labels("A01", 1, name="cells")
    with pytest.raises(InputError, match="must be integers"):
        reopened.write_labels("A01", 1, labels.astype(float))


def test_read_only_and_bad_requests(plate_path):
    create_plate(plate_path, small_layout())
    plate = open_plate(plate_path)
    with pytest.raises(InputError, match="read-only"):
        plate.write_field("A01", 0, np.zeros(plate.shape, np.uint16))
    with pytest.raises(InputError, match="well C07 is not in plate"):
        plate.read_field("C07", 0)
    with pytest.raises(InputError, match="field 5 of well A01"):
        plate.read_field("A01", 5)
    writable = open_plate(plate_path, mode="r+")
    with pytest.raises(InputError, match="does not match"):
        writable.write_field("A01", 0, np.zeros((1, 3, 1, 24, 32), np.uint16))
    with pytest.raises(InputError, match="already exists"):
        create_plate(plate_path, small_layout())
    replaced = create_plate(plate_path, small_layout(wells=["C3"]), overwrite=True)
    assert open_plate(plate_path).wells == replaced.wells == ["C03"]
    precious = plate_path.parent / "not_a_store"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a Zarr store; refusing"):
        create_plate(precious, small_layout(), overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_refuses_pickle_codecs_and_non_plates(plate_path, tmp_path):
    create_plate(plate_path, small_layout())
    array_json = plate_path / "B/3/0/0/zarr.json"
    meta = json.loads(array_json.read_text())
    meta["codecs"].append({"name": "numcodecs.pickle", "configuration": {}})
    array_json.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"refusing codec\(s\) \['numcodecs.pickle'\]"):
        open_plate(plate_path)
    plain = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    plain.attrs["x"] = 1
    with pytest.raises(InputError, match="not an OME-Zarr plate"):
        open_plate(tmp_path / "plain.zarr")
    with pytest.raises(InputError, match="no such plate folder"):
        open_plate(tmp_path / "nowhere.zarr")


def test_layout_validation():
    with pytest.raises(InputError, match="2 channel names for 3 channels"):
        small_layout(channel_names=["a", "b"])
    with pytest.raises(InputError, match="malformed well"):
        small_layout(wells=["A1", "?"])
    layout = small_layout(wells=["P24"])
    assert layout.geometry.n_wells == 384


def test_writes_through_zarr_for_foreign_array_layouts(plate_path):
    """Arrays not laid out as create_plate makes them (here: standalone zstd, 2 chunks per
    plane) are written through zarr rather than by the fast plane-chunk writer."""
    from zarr.codecs import ZstdCodec

    plate = create_plate(plate_path, small_layout())
    zarr.create_array(
        plate_path / "A/1/0/0",
        shape=plate.shape,
        chunks=(1, 1, 1, 12, 32),
        dtype="uint16",
        fill_value=0,
        compressors=[ZstdCodec(level=3)],
        dimension_names=["t", "c", "z", "y", "x"],
        overwrite=True,
    )
    plate = open_plate(plate_path, mode="r+")
    data = np.random.default_rng(5).integers(0, 60000, plate.shape, dtype=np.uint16)
    plate.write_field("A01", 0, data)
    np.testing.assert_array_equal(open_plate(plate_path).read_field_stack("A01", 0), data)
    assert (plate_path / "A/1/0/0/c/1/2/1/1/0").is_file()  # zarr's own chunking was used


def test_compression_setting_round_trips(tmp_path):
    plate = create_plate(
        tmp_path / "zstd.zarr",
        small_layout(),
        compression={"cname": "zstd", "clevel": 3, "shuffle": "shuffle"},
    )
    data = np.random.default_rng(6).integers(0, 60000, plate.shape, dtype=np.uint16)
    plate.write_field("H12", 1, data)
    meta = json.loads((tmp_path / "zstd.zarr/H/12/1/0/zarr.json").read_text())
    assert meta["codecs"][1]["configuration"]["cname"] == "zstd"
    np.testing.assert_array_equal(
        open_plate(tmp_path / "zstd.zarr").read_field_stack("H12", 1), data
    )


def test_plate_pickles_as_its_path(plate_path):
    import pickle

    plate = create_plate(plate_path, small_layout())
    data = np.ones(plate.shape, np.uint16)
    clone = pickle.loads(pickle.dumps(plate))
    clone.write_field("A01", 1, data)  # still writable (mode r+ kept)
    np.testing.assert_array_equal(plate.read_field_stack("A01", 1), data)


def test_plane_chunks_read_as_zarr_reads_them_and_bad_ones_are_refused(plate_path):
    """read_field decodes screenlib's whole-plane chunks itself: the pixels are those zarr
    reads (blosc and uncompressed chunks), and a chunk of the wrong size is refused."""
    import numcodecs

    plate = create_plate(plate_path, small_layout())
    rng = np.random.default_rng(7)
    data = rng.integers(0, 65535, size=plate.shape, dtype=np.uint16)
    plate.write_field("B03", 0, data)
    # an uncompressed array with the same whole-plane chunks, written by zarr itself
    raw = zarr.create_array(
        plate_path / "A/1/1/0",
        shape=plate.shape,
        chunks=(1, 1, 1, 24, 32),
        dtype="uint16",
        fill_value=0,
        compressors=None,
        dimension_names=["t", "c", "z", "y", "x"],
        overwrite=True,
    )
    raw[...] = data
    reopened = open_plate(plate_path)
    for well, field in (("B03", 0), ("A01", 1)):
        stack = zarr.open_array(plate_path / reopened._field_path(well, field) / "0", mode="r")
        for timepoint in range(2):
            got = reopened.read_field(well, field, timepoint)
            np.testing.assert_array_equal(got, stack[timepoint].max(axis=1))
            np.testing.assert_array_equal(got, data[timepoint].max(axis=1))
            assert got.dtype == np.uint16 and got.flags.writeable
    # a valid Blosc frame of a smaller plane would leave pixels unset: refused
    small = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=2).encode(np.ones((12, 32), np.uint16))
    (plate_path / "B/3/0/0/c/1/2/1/0/0").write_bytes(small)
    with pytest.raises(InputError, match="well B03 field 0 timepoint 1: unreadable image data"):
        open_plate(plate_path).read_field("B03", 0, timepoint=1)
    (plate_path / "A/1/1/0/c/0/0/0/0/0").write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match="well A01 field 1 timepoint 0: unreadable image data"):
        open_plate(plate_path).read_field("A01", 1)
