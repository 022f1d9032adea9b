"""The worker's wire format carries plain arrays and nothing else."""

import io
import struct

import numpy as np
import pytest

from harness.worker import wire


def test_roundtrip():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([True, False]), np.zeros((0, 4), dtype=np.int64)]
    header, back = wire.read(io.BytesIO(wire.encode({"status": "ok", "x": [1, 2]}, arrays)))
    assert header == {"status": "ok", "x": [1, 2]}
    for a, b in zip(arrays, back):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_object_arrays_cannot_be_sent():
    with pytest.raises(wire.WireError, match="cannot cross"):
        wire.encode({}, [np.array([object()], dtype=object)])


@pytest.mark.parametrize(
    "payload, error",
    [
        (struct.pack("<I", 5) + b"nope!", wire.WireError),
        (struct.pack("<I", 2) + b"[]", wire.WireError),
        (b"\x01\x00", EOFError),
    ],
)
def test_garbage_is_refused(payload, error):
    with pytest.raises(error):
        wire.read(io.BytesIO(payload))


def test_a_pickle_dtype_in_the_header_is_refused():
    head = b'{"arrays": [{"dtype": "object", "shape": [1], "nbytes": 8}]}'
    with pytest.raises(wire.WireError, match="not allowed"):
        wire.read(io.BytesIO(struct.pack("<I", len(head)) + head + b"\0" * 8))


def test_sizes_must_agree():
    head = b'{"arrays": [{"dtype": "float32", "shape": [3], "nbytes": 8}]}'
    with pytest.raises(wire.WireError, match="cannot hold"):
        wire.read(io.BytesIO(struct.pack("<I", len(head)) + head + b"\0" * 8))


def test_zero_dimensional_arrays_keep_their_shape():
    header, arrays = wire.read(io.BytesIO(wire.encode({"x": 1}, [np.array(3.5, dtype=np.float32), np.zeros((0, 2))])))
    assert arrays[0].shape == () and float(arrays[0]) == 3.5
    assert arrays[1].shape == (0, 2)
