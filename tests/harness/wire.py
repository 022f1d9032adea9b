"""The worker's wire format: a JSON header followed by raw array bytes. Never pickle.

A message is ``<u32 header length><header JSON><array bytes>``. The header's ``"arrays"`` lists
each array's dtype, shape and byte length, in order; structured values refer to arrays with
``{"$array": index}``. Only the plain numeric dtypes below cross the boundary, so what comes back
from the tree under test is data, never code.
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

import numpy as np

DTYPES = {
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
}
MAX_HEADER = 16 * 1024 * 1024
MAX_PAYLOAD = 4 * 1024 * 1024 * 1024


class WireError(Exception):
    """A message that does not follow the format."""


def encode(header: dict[str, Any], arrays: list[np.ndarray] | None = None) -> bytes:
    arrays = arrays or []
    metas, chunks = [], []
    for a in arrays:
        a = np.ascontiguousarray(a).reshape(a.shape)  # ascontiguousarray makes a 0-d array 1-d
        if a.dtype.name not in DTYPES:
            raise WireError(f"dtype {a.dtype} cannot cross the worker boundary")
        raw = a.tobytes()
        metas.append({"dtype": a.dtype.name, "shape": list(a.shape), "nbytes": len(raw)})
        chunks.append(raw)
    head = json.dumps({**header, "arrays": metas}, allow_nan=True).encode()
    return struct.pack("<I", len(head)) + head + b"".join(chunks)


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    parts, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("stream closed")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read(stream: BinaryIO) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Read one message; raises EOFError at a clean end and WireError on garbage."""
    (n,) = struct.unpack("<I", _read_exact(stream, 4))
    if n > MAX_HEADER:
        raise WireError(f"header of {n} bytes")
    try:
        header = json.loads(_read_exact(stream, n))
    except ValueError as e:
        raise WireError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise WireError("header is not an object with an 'arrays' list")
    arrays, total = [], 0
    for meta in header.pop("arrays"):
        try:
            dtype, shape, nbytes = meta["dtype"], tuple(int(s) for s in meta["shape"]), int(meta["nbytes"])
        except (KeyError, TypeError, ValueError):
            raise WireError(f"bad array description {meta!r}") from None
        if dtype not in DTYPES:
            raise WireError(f"dtype {dtype!r} is not allowed")
        total += nbytes
        if total > MAX_PAYLOAD or any(s < 0 for s in shape):
            raise WireError("array too large or negative shape")
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if expected != nbytes:
            raise WireError(f"array of shape {shape} and dtype {dtype} cannot hold {nbytes} bytes")
        raw = _read_exact(stream, nbytes)
        arrays.append(np.frombuffer(raw, dtype=dtype).reshape(shape).copy())
    return header, arrays


def write(stream: BinaryIO, header: dict[str, Any], arrays: list[np.ndarray] | None = None) -> None:
    stream.write(encode(header, arrays))
    stream.flush()
