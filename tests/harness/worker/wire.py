"""The one encoding between the grader and the worker: plain values and arrays, never a pickle.

A message is ``<u32 header length><header JSON><array bytes>``. The header is a JSON object; its
``"arrays"`` entry lists each array's dtype, shape and byte length, in order, and the raw bytes
follow. Only the plain numeric dtypes in ``DTYPES`` cross, so a message is data, never code.

Values inside a header (arguments going to the worker, results coming back) are encoded by
``pack`` and decoded by ``unpack``. JSON lacks some of Python's types, so they travel tagged:

    tensor      {"$t": i, "dtype": "bfloat16"}   arrays[i] (bf16 travels as float32)
    ndarray     {"$np": i}                       arrays[i]; it arrives as a tensor
    tuple       {"$tuple": [...]}
    bytes       {"$bytes": "<base64>"}
    dict        {...} with str keys not starting with "$"; otherwise {"$dict": [[k, v], ...]}
    set         {"$set": [...]}
    Part        {"$part": "module.Name", "args": [...], "kwargs": {...}}   (grader -> worker only)
    File        {"$file": "name", "$a": i}       arrays[i] holds its bytes (grader -> worker only);
                                                 it arrives as the path of a copy in the worker

``pack(..., strict=True)`` is what the worker uses on the learner's return values: exact builtin
types and plain tensors only (a subclass could lie in ``==``), bounded in size; a generator is
consumed into a list. Anything else raises ``Unsendable`` with a message for the learner.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import json
import struct
import types
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

DTYPES = {"bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"}
MAX_HEADER = 64 * 1024 * 1024
MAX_PAYLOAD = 4 * 1024 * 1024 * 1024
MAX_ITEMS = 10_000_000  # items in one learner value
MAX_TENSOR_BYTES = 256 * 1024 * 1024  # one tensor from the learner


class WireError(Exception):
    """A message that does not follow the format."""


class Unsendable(Exception):
    """A learner's value that cannot be graded (not plain data, too large, a subclass)."""


# --------------------------------------------------------------------------- framing


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
    if len(head) > MAX_HEADER:
        raise WireError(f"a header of {len(head):,} bytes is too large")
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


def signature(key: bytes, header: dict[str, Any], arrays: list[np.ndarray] | None = None) -> str:
    """An HMAC-SHA256 of a message's header (but its ``mac``) and arrays under the session's key.

    The grader gives each worker session a fresh key in the session's first message, before any
    code of the tree runs; the trusted serving loop signs every reply with it, and the grader
    accepts no reply whose signature differs. Code of the tree that wrote to the channel itself
    (it holds the socket, by number) cannot sign: the key is a local of the serving loop, out of
    the reach the allow-list leaves it (no frames, no ``gc``)."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    body = {k: v for k, v in header.items() if k != "mac"}
    mac.update(json.dumps(body, sort_keys=True, allow_nan=True).encode())
    for a in arrays or []:
        a = np.ascontiguousarray(a).reshape(a.shape)
        mac.update(f"|{a.dtype.name}{list(a.shape)}|".encode())
        mac.update(a.tobytes())
    return mac.hexdigest()


def signed(key: bytes, header: dict[str, Any], arrays: list[np.ndarray] | None = None) -> dict[str, Any]:
    """``header`` with its ``mac`` (see ``signature``)."""
    return {**header, "mac": signature(key, header, arrays)}


def genuine(key: bytes, header: dict[str, Any], arrays: list[np.ndarray]) -> bool:
    """Whether ``header`` and ``arrays`` carry the signature ``key`` gives them."""
    mac = header.get("mac")
    return isinstance(mac, str) and hmac.compare_digest(mac, signature(key, header, arrays))


def write(stream: BinaryIO, header: dict[str, Any], arrays: list[np.ndarray] | None = None) -> None:
    stream.write(encode(header, arrays))
    stream.flush()


# --------------------------------------------------------------------------- tensors <-> arrays


def _torch():
    import torch  # imported on first use: the framing above needs numpy only

    return torch


def tensor_to_array(t) -> tuple[np.ndarray, str]:
    """A tensor as a numpy array and its torch dtype name (bf16 travels as float32)."""
    torch = _torch()
    if t.layout != torch.strided:
        raise Unsendable(f"a {t.layout} tensor cannot be graded; return a dense tensor")
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    name = str(t.dtype).removeprefix("torch.")
    if t.dtype == torch.bfloat16:
        t = t.float()
    elif name not in DTYPES:
        raise Unsendable(f"a tensor of dtype {t.dtype} cannot be graded")
    return t.resolve_conj().resolve_neg().numpy(), name


def array_to_tensor(a: np.ndarray, dtype: str):
    torch = _torch()
    if dtype == "bfloat16":
        return torch.from_numpy(np.array(a, copy=True)).to(torch.bfloat16)
    if dtype not in DTYPES:
        raise WireError(f"unknown dtype {dtype!r}")
    return torch.from_numpy(np.array(a, copy=True)).to(getattr(torch, dtype))


# --------------------------------------------------------------------------- values


class Part:
    """An argument that a trusted reference part builds in the worker: ``Part("tinylm.TinyLM",
    table, first, 4)`` passes ``harness/parts/tinylm.py``'s ``TinyLM(table, first, 4)``."""

    def __init__(self, target: str, *args: Any, **kwargs: Any):
        self.target, self.args, self.kwargs = target, args, kwargs

    def __repr__(self) -> str:
        return f"Part({self.target!r}, ...)"


class File:
    """A file the grader hands to the learner's code: ``File(path)`` arrives in the worker as the
    path (a ``str``) of a copy in the worker's private scratch directory."""

    def __init__(self, path: "str | Path | File"):
        self.path = path.path if isinstance(path, File) else Path(path)

    def __repr__(self) -> str:
        return f"File({str(self.path)!r})"


_MAPPINGS = (dict, collections.Counter, collections.defaultdict, collections.OrderedDict)


def pack(value: Any, arrays: list[np.ndarray], strict: bool = False, what: str = "the value", _budget: list[int] | None = None) -> Any:
    """``value`` as JSON data, its tensors and arrays appended to ``arrays`` (see the module's doc)."""
    budget = _budget if _budget is not None else [MAX_ITEMS]
    budget[0] -= 1
    if budget[0] < 0:
        raise Unsendable(f"{what} holds more than {MAX_ITEMS:,} items")
    t = type(value)
    if value is None or t in (bool, int, float, str):
        if t is int and abs(value) >= 2**63:
            raise Unsendable(f"{what} holds an integer too large to grade")
        return value
    again = lambda v: pack(v, arrays, strict, what, budget)  # noqa: E731
    torch = _torch()
    if t is torch.Tensor:
        if strict and value.numel() * value.element_size() > MAX_TENSOR_BYTES:
            raise Unsendable(f"{what} has shape {tuple(value.shape)}: far too large")
        arr, name = tensor_to_array(value)
        arrays.append(arr)
        return {"$t": len(arrays) - 1, "dtype": name}
    if t is np.ndarray:
        if value.dtype.name not in DTYPES:
            raise Unsendable(f"{what} is a numpy array of dtype {value.dtype}, which cannot be graded")
        if strict and value.nbytes > MAX_TENSOR_BYTES:
            raise Unsendable(f"{what} has shape {value.shape}: far too large")
        arrays.append(np.ascontiguousarray(value).reshape(value.shape))
        return {"$np": len(arrays) - 1}
    if t is bytes or t is bytearray:
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if t is list:
        return [again(v) for v in value]
    if t is tuple:
        return {"$tuple": [again(v) for v in value]}
    if t in _MAPPINGS:
        items = list(dict.items(value))  # dict.items, not the object's own: a subclass cannot lie
        if all(type(k) is str and not k.startswith("$") for k, _ in items):
            return {k: again(v) for k, v in items}
        return {"$dict": [[again(k), again(v)] for k, v in items]}
    if t in (set, frozenset):
        return {"$set": [again(v) for v in value]}
    if not strict and t is File:
        arrays.append(np.fromfile(value.path, dtype=np.uint8))
        return {"$file": value.path.name, "$a": len(arrays) - 1}
    if not strict and t is Part:
        return {"$part": value.target, "args": [again(a) for a in value.args],
                "kwargs": {str(k): again(v) for k, v in value.kwargs.items()}}
    if strict and (isinstance(value, types.GeneratorType) or (hasattr(t, "__next__") and hasattr(t, "__iter__"))):
        return [again(item) for item in value]
    if strict:
        module = t.__module__.partition(".")[2] if t.__module__.startswith("tree") else t.__module__  # the tree's own name
        raise Unsendable(f"{what} gave a {module}.{t.__qualname__}: the grader can check only tensors, numbers, strings, "
                         f"bytes, and lists, tuples and dicts of them")
    raise WireError(f"cannot send {t.__name__}")


def unpack(value: Any, arrays: list[np.ndarray], part: Callable[[str, list, dict], Any] | None = None,
           file: Callable[[str, bytes], str] | None = None) -> Any:
    """The inverse of ``pack``. ``part(target, args, kwargs)`` builds a ``$part`` and
    ``file(name, data)`` stores a ``$file`` (the worker's side); without them either is a ``WireError``."""
    again = lambda v: unpack(v, arrays, part, file)  # noqa: E731
    if isinstance(value, list):
        return [again(v) for v in value]
    if not isinstance(value, dict):
        return value
    try:
        if "$t" in value:
            return array_to_tensor(arrays[value["$t"]], value["dtype"])
        if "$np" in value:
            a = arrays[value["$np"]]
            return array_to_tensor(a, a.dtype.name)
        if "$tuple" in value:
            return tuple(again(v) for v in value["$tuple"])
        if "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        if "$dict" in value:
            return {_hashable(again(k)): again(v) for k, v in value["$dict"]}
        if "$set" in value:
            return {_hashable(again(v)) for v in value["$set"]}
        if "$file" in value:
            if file is None:
                raise WireError("a file cannot travel this way")
            return file(str(value["$file"]), arrays[value["$a"]].tobytes())
        if "$part" in value:
            if part is None:
                raise WireError("a reference part cannot travel this way")
            return part(value["$part"], again(value.get("args", [])), again(value.get("kwargs", {})))
    except (IndexError, KeyError, TypeError, ValueError) as e:
        raise WireError(f"a value could not be read ({type(e).__name__}: {e})") from None
    return {k: again(v) for k, v in value.items()}


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v
