"""Trusted probes: the only code that calls the tree under test.

A probe runs in the worker (or in the test process with ``--in-process``). It turns the request's
values into Python objects (tensors, tuples, objects built by trusted parts), calls the learner's
function or module on them, and sends back what came out as plain data. It never compares
anything: the grader does that, in a process the tree never ran in. Three kinds:

- ``call``: ``module.function(*args, **kwargs)``, optionally backpropagated, or a chain of method
  calls on what it returned (``then``);
- ``module``: build ``module.Class(*init)``, set its parameters, run forward (and backward);
- ``scenario``: trusted code from ``parts/`` drives the learner's functions through a whole run
  (a training step, a save and a resume) and returns plain data about what happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import hangs, parts, wire
from .guard import Guard
from .tree import ProbeError, Tree


def _part(target: str, args: list, kwargs: dict) -> Any:
    module, _, name = target.partition(".")
    try:
        return getattr(parts.load(module), name)(*args, **kwargs)
    except parts.MissingPart as e:
        raise ProbeError("harness", str(e)) from None


SCRATCH: Path | None = None  # where files sent by the grader go (None: the temporary directory)


def _file(name: str, data: bytes) -> str:
    """A file the grader sent, stored once in this process's scratch directory; its path."""
    folder = (SCRATCH or Path(tempfile.gettempdir())) / "kata-files"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}-{Path(name).name or 'file'}"
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return str(path)


def _decode(value: Any, arrays: list[np.ndarray]) -> Any:
    return wire.unpack(value, arrays, part=_part, file=_file)


def _send(value: Any, arrays: list[np.ndarray], what: str) -> Any:
    try:
        return wire.pack(value, arrays, strict=True, what=what)
    except wire.Unsendable as e:
        raise ProbeError("bad_output", str(e)) from None


def _tensor(value: Any, what: str) -> torch.Tensor:
    if type(value) is not torch.Tensor:  # subclasses could lie about their values
        raise ProbeError("bad_output", f"{what} should be a torch.Tensor, got {type(value).__module__}.{type(value).__qualname__}")
    return value


def _learner_call(tree: Tree, fn: Any, args: list, kwargs: dict) -> Any:
    try:
        return fn(*args, **kwargs)
    except ProbeError:
        raise
    except Exception as e:
        raise tree.learner_error(e) from None


def _backward(out: torch.Tensor, grad_output: torch.Tensor, tree: Tree) -> None:
    if not out.requires_grad:
        raise ProbeError("bad_output", "the output does not require grad, so no gradient can flow back to the inputs: "
                         "did you use .detach(), .item(), .numpy() or torch.no_grad() on the way?")
    if grad_output.shape != out.shape:
        raise ProbeError("bad_output", f"the output has shape {tuple(out.shape)}, expected {tuple(grad_output.shape)}")
    _learner_call(tree, out.backward, [grad_output.to(out.dtype)], {})


def _grads(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t.grad if t.grad is not None else torch.zeros_like(t) for t in tensors]


def _pseudo(obj: Any, method: str, args: list, tree: Tree) -> Any:
    """``$len``, ``$list`` (at most ``args[0]`` items), ``$getitem`` and ``$attr`` on an object."""
    def run():
        if method == "$len":
            return len(obj)
        if method == "$list":
            limit, out = (args[0] if args else wire.MAX_ITEMS), []
            for item in obj:
                if len(out) >= limit:
                    break
                out.append(item)
            return out
        if method == "$getitem":
            return obj[args[0]]
        if method == "$attr":
            return getattr(obj, args[0])
        raise ProbeError("harness", f"unknown pseudo-method {method}")

    return _learner_call(tree, run, [], {})


def probe_call(tree: Tree, spec: dict, args: list, kwargs: dict, extra: dict) -> Any:
    fn = tree.attr(spec["module"], spec["target"], spec.get("substitute", ()))
    wrt = [args[int(k)] if k.isdigit() else kwargs[k] for k in spec.get("grad_wrt", [])]
    for t in wrt:
        t.requires_grad_(True)
    device = torch.device(spec["device"]) if spec.get("device") else contextlib.nullcontext()
    with device:  # "meta": modules built without memory (a parameter count of GPT-2 small, say)
        out = _learner_call(tree, fn, args, kwargs)
    what = f"{spec['target']}(...)"
    if "then" in extra:
        results = []
        for step in extra["then"]:
            method, a, k = step["method"], step["args"], step["kwargs"]
            if method.startswith("$"):
                value = _pseudo(out, method, a, tree)
            else:
                bound = getattr(out, method, None)
                if bound is None:
                    raise ProbeError("bad_output", f"{what} returned a {type(out).__name__}, which has no method `{method}`")
                value = _learner_call(tree, bound, a, k)
            results.append((f"{what}.{method}(...)", value))
        return {"then": results}
    if spec.get("returns") == "data":
        return {"out": (what, out)}
    out = _tensor(out, what)
    result: dict[str, Any] = {"out": (what, out)}
    if extra.get("grad_output") is not None:
        _backward(out, extra["grad_output"], tree)
        result["grads"] = dict(zip(spec.get("grad_wrt", []), _grads(wrt)))
    return result


def probe_module(tree: Tree, spec: dict, args: list, kwargs: dict, extra: dict) -> Any:
    cls = tree.attr(spec["module"], spec["target"], spec.get("substitute", ()))
    model = _learner_call(tree, cls, args, kwargs)
    if not isinstance(model, torch.nn.Module):
        raise ProbeError("bad_output", f"{spec['target']}(...) should build a torch.nn.Module, got {type(model).__name__}")
    named = dict(model.named_parameters())
    initial = {n: p.detach().clone() for n, p in named.items()}
    with torch.no_grad():
        for name, value in extra.get("params", {}).items():
            p = named.get(name)
            if p is None:
                raise ProbeError("bad_output", f"{spec['target']} has no parameter `{name}` (its parameters: {', '.join(initial) or 'none'})")
            if tuple(p.shape) != tuple(value.shape):
                raise ProbeError("bad_output", f"{spec['target']}.{name} has shape {tuple(p.shape)}, expected {tuple(value.shape)}")
            p.copy_(value)
    if spec.get("dtype"):
        model = model.to(getattr(torch, spec["dtype"]))
    model.train(bool(spec.get("train", False)))
    inputs = extra.get("inputs", [])
    wrt = [inputs[int(k)] for k in spec.get("grad_wrt", [])]
    for t in wrt:
        t.requires_grad_(True)
    if spec.get("seed") is not None:  # the grader's oracle draws the same dropout masks from the same seed
        torch.manual_seed(int(spec["seed"]))
    out = _tensor(_learner_call(tree, model, inputs, {}), f"{spec['target']}.forward(...)")
    result: dict[str, Any] = {"out": ("forward", out), "initial": initial}
    if extra.get("grad_output") is not None:
        _backward(out, extra["grad_output"], tree)
        result["grads"] = dict(zip(spec.get("grad_wrt", []), _grads(wrt)))
        result["param_grads"] = dict(zip(named, _grads(list(named.values()))))
    return result


class Learner:
    """What a scenario gets to reach the tree under test: ``learner("module.name")`` is that
    attribute of the tree (``substitute`` as in ``Tree.module``). The learner's exceptions pass
    through the scenario unchanged and are reported with their traceback trimmed to the tree."""

    def __init__(self, tree: Tree, substitute=()):
        self.tree, self.substitute = tree, tuple(substitute)
        self.path = tree.path

    def __call__(self, target: str, substitute=None) -> Any:
        module, _, name = target.partition(".")
        return self.tree.attr(module, name, self.substitute if substitute is None else substitute)


def probe_scenario(tree: Tree, spec: dict, args: list, kwargs: dict, extra: dict) -> Any:
    module, _, name = spec["scenario"].partition(".")
    try:
        fn = getattr(parts.load(module), name, None)
    except parts.MissingPart as e:
        raise ProbeError("harness", str(e)) from None
    if fn is None:
        raise ProbeError("harness", f"harness/parts/{module}.py has no scenario `{name}`")
    return {"out": (f"the scenario {spec['scenario']}", fn(Learner(tree, spec.get("substitute", ())), *args, **kwargs))}


PROBES = {"call": probe_call, "module": probe_module, "scenario": probe_scenario}


def run(tree: Tree, guard: Guard, request: dict, arrays: list[np.ndarray]) -> tuple[dict, list[np.ndarray]]:
    """Run one probe request; returns the reply header and its arrays (``status`` ok or error).

    The request: ``probe`` (a kind of ``PROBES``), the kind's fields, ``parts`` (sources of the
    trusted parts it needs), and ``values``: the packed ``args``, ``kwargs`` and extras
    (``then``, ``grad_output``, ``params``, ``inputs``). The reply's ``result`` holds the packed
    ``out``, ``then``, ``grads``, ``param_grads`` and ``initial``."""
    guard.take()
    try:
        parts.give(request.get("parts", {}))
        values = _decode(request.get("values", {}), arrays)
        args, kwargs = list(values.pop("args", [])), dict(values.pop("kwargs", {}))
        tree.fallback = frozenset(str(m) for m in request.get("fallback", ()))
        try:
            with hangs.tripwire(tuple(place) for place in request.get("hangs", ())):
                result = PROBES[request["probe"]](tree, request, args, kwargs, values)
            out: list[np.ndarray] = []
            packed = {}
            for key, value in result.items():
                if key in ("out",):
                    packed[key] = _send(value[1], out, value[0])
                elif key == "then":
                    packed[key] = [_send(v, out, w) for w, v in value]
                else:
                    packed[key] = _send(value, out, key)
            reply = {"status": "ok", "result": packed}
        except ProbeError as e:
            if not guard.violations:
                raise
            reply, out = {}, []
        violations = guard.take()
        if violations:
            raise ProbeError("forbidden", violations[0])
        return reply, out
    except ProbeError as e:
        return {"status": "error", "kind": e.kind, "message": e.message, "details": e.details}, []
    except wire.WireError as e:
        return {"status": "error", "kind": "harness", "message": f"the request could not be read: {e}", "details": ""}, []
    except BaseException as e:  # SystemExit, KeyboardInterrupt, anything a probe did not expect
        err = tree.learner_error(e)
        return {"status": "error", "kind": err.kind, "message": err.message, "details": err.details}, []
