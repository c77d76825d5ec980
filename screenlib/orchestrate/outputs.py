"""Write a run's outputs as one set: stage every file, then move them in, then the manifest.

Every table, the gates, the settings used and the report are first written into a hidden
staging folder beside them. Only when all of them are written are they renamed into the
output folder, followed by ``outputs.json``, which lists the set (name, size, sha256) and the
run that made it. A failure while staging (disk full, a crash) leaves the previous set
untouched and names the file it was writing. Files of the previous set that the new run does
not write (``report.html`` after ``--no-report``) are removed, so the folder never describes
settings its tables were not made with; files the engine did not write are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from screenlib.errors import InputError
from screenlib.io_utils import file_sha256, fsync_file, fsync_folder

__all__ = ["OUTPUTS_MANIFEST", "OutputSet", "neutralize_formulas", "read_output_manifest"]

OUTPUTS_MANIFEST = "outputs.json"
# a spreadsheet runs a cell that starts with one of these as a formula (OWASP CSV injection)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def neutralize_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with ``'`` (OWASP).

    Numbers written as text (``-5``) are left alone; only text columns are looked at.

    Examples
    --------
    >>> table = pd.DataFrame({"sample": ["=HYPERLINK(1)", "HeLa", "-2"]})
    >>> neutralize_formulas(table)["sample"].tolist()
    ["'=HYPERLINK(1)", 'HeLa', '-2']
    """
    out = table.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(_neutralize)
    return out.rename(columns={c: _neutralize(c) for c in out.columns})


def _neutralize(value: Any) -> Any:
    """``'`` before text that a spreadsheet would run as a formula; anything else as it is."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS) and not _is_number(value):
        return "'" + value
    return value


def read_output_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The ``outputs.json`` of a folder, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(out_dir) / OUTPUTS_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class OutputSet:
    """Collects a run's output files in a staging folder and commits them together.

    Use as a context manager: files are added with :meth:`write` (or the helpers), and
    :meth:`commit` moves them into ``out_dir``. Leaving the block without a commit (an error,
    Ctrl-C) deletes the staging folder and leaves ``out_dir`` as it was.
    """

    def __init__(self, out_dir: Path, run_token: str | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.run_token = run_token or uuid.uuid4().hex
        self.staging = self.out_dir / f".staging-{self.run_token[:12]}"
        self.names: list[str] = []  # what was committed

    def __enter__(self) -> OutputSet:
        for old in self.out_dir.glob(".staging-*"):  # left by a run killed while staging
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        self.staging.mkdir(parents=True)
        return self

    def __exit__(self, *exc_info) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where to write ``name`` inside the staging folder (sub-folders allowed)."""
        target = self.staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write(self, name: str, writer: Callable[[Path], Any]) -> Path:
        """Call ``writer(path)`` for ``name``; a failure names the file and the reason."""
        target = self.path(name)
        try:
            writer(target)
        except OSError as error:
            raise InputError(
                f"cannot write {self.out_dir / name}: {error.strerror or error}; free disk space "
                "or choose another --out (the previous outputs are unchanged)"
            ) from None
        return self.out_dir / name

    def csv(self, name: str, table: pd.DataFrame) -> Path:
        """A table as CSV, with formula-like text neutralised for spreadsheets."""
        return self.write(name, lambda p: neutralize_formulas(table).to_csv(p, index=False))

    def parquet(self, name: str, table: pd.DataFrame) -> Path:
        """A table as Parquet (kept as it is: it is read by programs, not spreadsheets)."""
        return self.write(name, lambda p: table.to_parquet(p, index=False))

    def excel(self, name: str, sheets: dict[str, pd.DataFrame | None]) -> Path:
        """An Excel workbook, one sheet per table (formula-like text neutralised; a
        spreadsheet program would otherwise run it)."""

        def write(path: Path) -> None:
            with pd.ExcelWriter(path, engine="openpyxl") as workbook:
                for sheet, table in sheets.items():
                    if table is not None:
                        neutralize_formulas(table).to_excel(workbook, sheet_name=sheet, index=False)

        return self.write(name, write)

    def text(self, name: str, text: str) -> Path:
        """A text file (UTF-8)."""
        return self.write(name, lambda p: p.write_text(text, encoding="utf-8"))

    def json(self, name: str, data: Any) -> Path:
        """An indented JSON file."""
        return self.text(name, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def commit(self, run_info: dict[str, Any] | None = None) -> dict[str, Path]:
        """Move the staged files into the output folder, then write ``outputs.json``."""
        previous = read_output_manifest(self.out_dir) or {}
        # whatever a writer put in the staging folder (the report's figures/ too)
        self.names = sorted(
            p.relative_to(self.staging).as_posix() for p in self.staging.rglob("*") if p.is_file()
        )
        entries = []
        for name in self.names:
            staged = self.staging / name
            fsync_file(staged)  # on disk before the rename makes it the output
            size = staged.stat().st_size
            entries.append({"name": name, "bytes": size, "sha256": file_sha256(staged)})
        for name in self.names:
            target = self.out_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging / name, target)
        # files of the previous set this run did not write: they would describe another run
        for entry in previous.get("files", []):
            name = str(entry.get("name", ""))
            stale = self.out_dir / name
            if name and name not in self.names and stale.is_file() and ".." not in name:
                stale.unlink()
        manifest = {
            "run_token": self.run_token,
            "written": datetime.now().astimezone().isoformat(timespec="seconds"),
            "files": entries,
            **(run_info or {}),
        }
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
        tmp = self.out_dir / f".{OUTPUTS_MANIFEST}.{self.run_token[:12]}.tmp"
        tmp.write_text(text, encoding="utf-8")
        fsync_file(tmp)
        os.replace(tmp, self.out_dir / OUTPUTS_MANIFEST)
        for folder in {(self.out_dir / name).parent for name in self.names} | {self.out_dir}:
            fsync_folder(folder)  # the renames survive a power cut too
        return {name: self.out_dir / name for name in self.names}
