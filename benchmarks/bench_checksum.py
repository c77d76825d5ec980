"""What the store's crc32c chunk checksum costs when a field is read.

Writes a small plate of 2160 x 2160 x 3 uint16 fields (the store's own layout: Blosc lz4 +
bit shuffle, then crc32c), then reads every field with the check and without it, alternating
field by field, and prints the medians and the ratio.

    python benchmarks/bench_checksum.py [--fields 4] [--repeats 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import screenlib.store._hcs_plate as store
from screenlib.store import PlateLayout, create_plate, open_plate


def _read_unchecked(self, index, out) -> bool:
    payload = self._path(index).read_bytes()
    self.codec.decode(memoryview(payload)[:-4], out=out)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        layout = PlateLayout(
            name="CRC", wells=["A01"], channel_names=["a", "b", "c"],
            shape=(1, 3, 1, 2160, 2160), n_fields=args.fields, pixel_size_um=0.65,
        )  # fmt: skip
        plate = create_plate(Path(folder) / "crc.zarr", layout)
        for field in range(args.fields):
            pixels = rng.poisson(200, (1, 3, 1, 2160, 2160)).astype(np.uint16)
            pixels[..., 500:900, 500:900] += 3000  # some structure, as nuclei would be
            plate.write_field("A01", field, pixels)
        plate = open_plate(Path(folder) / "crc.zarr")
        checked_read = store._PlaneChunks.read
        times: dict[str, list[float]] = {"checked": [], "unchecked": []}
        for _ in range(args.repeats):
            for field in range(args.fields):
                for name, read in (("checked", checked_read), ("unchecked", _read_unchecked)):
                    store._PlaneChunks.read = read
                    started = time.perf_counter()
                    plate.read_field("A01", field)
                    times[name].append(time.perf_counter() - started)
        store._PlaneChunks.read = checked_read
    checked, unchecked = (float(np.median(times[k])) for k in ("checked", "unchecked"))
    print(
        f"read_field, 2160 x 2160 x 3 uint16: {1e3 * checked:.1f} ms with the crc32c check, "
        f"{1e3 * unchecked:.1f} ms without (medians): +{100 * (checked / unchecked - 1):.1f} %"
    )


if __name__ == "__main__":
    main()
