"""Committed reference outputs: deterministic ``.npz`` files in ``reference/``.

``write_npz`` gives byte-identical files for identical arrays (fixed zip timestamps, sorted
names, no compression), so regenerating twice changes nothing. ``load_reference`` never unpickles.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from .manifest import ROOT

REFERENCE = ROOT / "reference"


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            data = io.BytesIO()
            np.lib.format.write_array(data, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            zf.writestr(info, data.getvalue())
    path.write_bytes(buf.getvalue())


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


_CACHE: dict[str, dict[str, np.ndarray]] = {}


def preload(directory: Path = REFERENCE) -> None:
    """Read every reference file now, before any code under test runs (it cannot swap them)."""
    for path in sorted(directory.glob("*.npz")):
        _CACHE[path.stem] = read_npz(path)


def load_reference(name: str, directory: Path = REFERENCE) -> dict[str, np.ndarray]:
    if directory == REFERENCE and name in _CACHE:
        return {k: v.copy() for k, v in _CACHE[name].items()}
    path = directory / f"{name}.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `nox -s reference` to write it")
    return read_npz(path)
