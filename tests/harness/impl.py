"""The seam between graded tests and the tree under test.

A test calls ``impl.call("attention.softmax", x, dim=-1)`` or ``impl.module("layers.LayerNorm",
...)`` with tensors it built; the call runs in the worker (or in-process with ``--in-process``)
and returns a ``Result`` of plain tensors. Failures arrive as the exceptions in ``failures``.
"""

from __future__ import annotations

import io

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from . import probes, wire
from .failures import ImportFailure, LearnerError, Lost, NotStarted
from .manifest import Exercise
from .runner import Runner, WorkerLost


class Backend(Protocol):
    def probe(self, header: dict, arrays: list[np.ndarray], timeout: float) -> tuple[dict, list, str]: ...


class WorkerBackend:
    def __init__(self, tree: Path, echo: bool = False):
        self.runner = Runner(tree, echo)

    def probe(self, header, arrays, timeout):
        return self.runner.probe(header, arrays, timeout)

    def close(self) -> None:
        self.runner.close()


class InProcessBackend:
    """Runs probes in the test process, so ``breakpoint()`` and pdb work. Not a valid grade."""

    def __init__(self, tree: Path):
        self.tree = probes.Tree(tree)

    def probe(self, header, arrays, timeout):
        # through the wire format both ways, so that a debug run sees exactly what a worker would
        header, arrays = wire.read(io.BytesIO(wire.encode(header, arrays)))
        reply, out = probes.run(self.tree, header, arrays, header.get("rules", {}))
        reply, out = wire.read(io.BytesIO(wire.encode(reply, out)))
        return reply, out, ""

    def close(self) -> None:
        pass


@dataclass
class Result:
    out: Any  # a tensor; plain data with returns="data"; None with then=[...]
    grads: dict[Any, torch.Tensor] = field(default_factory=dict)
    param_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    initial: dict[str, torch.Tensor] = field(default_factory=dict)
    output: str = ""  # what the learner's code printed
    then: list[Any] = field(default_factory=list)  # results of the `then` method calls
    seconds: float = 0.0  # how long the probe ran in the worker (imports included)

    def grad(self, key: Any) -> torch.Tensor:
        return self.grads[key]


_RAISE = {"not_started": NotStarted, "import": ImportFailure}


@dataclass
class Part:
    """An argument built in the worker by a trusted reference part: ``Part("tiny.TinyLM", ...)``
    passes ``harness/parts/tiny.py``'s ``TinyLM(*args, **kwargs)`` to the learner's function."""

    target: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def __init__(self, target: str, *args: Any, **kwargs: Any):
        self.target, self.args, self.kwargs = target, args, kwargs


class Impl:
    def __init__(self, backend: Backend, exercise: Exercise, lost: dict[str, str], timeout: float | None = None, refused: str | None = None):
        self.backend, self.exercise, self.lost, self.refused = backend, exercise, lost, refused
        self.timeout = timeout or exercise.timeout
        self.printed: list[str] = []  # what the learner's code printed during this test

    def _send(self, spec: dict, tensors: dict[str, torch.Tensor]) -> Result:
        if self.refused:
            raise LearnerError(self.refused)
        if self.exercise.id in self.lost:
            raise Lost(f"not run: {self.lost[self.exercise.id]} earlier in this exercise")
        arrays, names = [], {}
        for name, t in tensors.items():
            arr, dtype = probes.to_array(t)
            names[name] = [len(arrays), dtype]
            arrays.append(arr)
        header = {
            "op": "probe",
            "exercise": self.exercise.id,
            "rules": {"forbidden": list(self.exercise.forbidden), "forbidden_kernels": list(self.exercise.forbidden_kernels),
                      "forbidden_modules": list(self.exercise.forbidden_modules)},
            "tensors": names,
            **spec,
        }
        try:
            reply, out, printed = self.backend.probe(header, arrays, self.timeout)
            if printed.strip():
                self.printed.append(printed)
        except WorkerLost as e:
            self.lost[self.exercise.id] = e.reason
            if e.output.strip():
                self.printed.append(e.output)
            raise Lost(e.reason) from None
        if reply.get("status") == "ok":
            try:
                result = probes.unpack(reply["result"], out)
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise LearnerError(f"the worker's reply could not be read ({e})") from None
            return Result(
                out=probes.unplain(result["out"]),
                then=[probes.unplain(x) for x in result.get("then", [])],
                seconds=float(reply.get("seconds", 0.0)),
                grads={_key(k): v for k, v in result.get("grads", {}).items()},
                param_grads=result.get("param_grads", {}),
                initial=result.get("initial", {}),
                output=printed,
            )
        cls = _RAISE.get(reply.get("kind"), LearnerError)
        raise cls(str(reply.get("message", "")), str(reply.get("details", "")))

    def call(
        self,
        target: str,
        *args: Any,
        grad_output: torch.Tensor | None = None,
        grad_wrt=(),
        returns: str = "tensor",
        then: list[tuple] | None = None,
        substitute=(),
        **kwargs: Any,
    ) -> Result:
        """Call ``module.function(*args, **kwargs)`` in the tree under test.

        ``target`` is ``"module.name"`` or ``"module.Class.method"``. Tensors among the arguments
        are sent as arrays; other arguments must be JSON data (str, int, float, bool, None, lists,
        dicts with str keys). With ``grad_output``, the output is backpropagated and
        ``Result.grads[key]`` holds the gradient of each argument in ``grad_wrt`` (a position for
        positional arguments, a name for keyword ones). ``returns="data"`` accepts plain data
        (ints, str, bytes, lists, tuples, dicts) instead of a tensor. ``then=[(method, args,
        kwargs), ...]`` calls methods on the returned object, in order, and returns their plain
        results in ``Result.then``; ``$len``, ``$list`` (args: (limit,)), ``$getitem`` and
        ``$attr`` are pseudo-methods. An argument may be a ``Part``: an object built in the worker by
        a trusted reference part. ``substitute=("layers",)`` imports the target with those
        modules replaced by the harness's reference parts (``harness/parts/``).
        """
        module, name = _split(target)
        tensors: dict[str, torch.Tensor] = {}
        ref = _referrer(tensors)
        spec: dict[str, Any] = {
            "probe": "call",
            "module": module,
            "target": name,
            "args": [ref(i, a) for i, a in enumerate(args)],
            "kwargs": {k: ref(k, v) for k, v in kwargs.items()},
            "grad_wrt": [str(k) for k in grad_wrt],
            "substitute": sorted(substitute),
        }
        if returns == "data":
            spec["returns"] = "data"
        if then is not None:
            steps = []
            for n, step in enumerate(then):
                method, a, k = (tuple(step) + ((), {}))[:3]
                steps.append({"method": method, "args": [ref(f"then{n}.{i}", x) for i, x in enumerate(a)],
                              "kwargs": {key: ref(f"then{n}.{key}", x) for key, x in dict(k).items()}})
            spec["then"] = steps
        if grad_output is not None:
            tensors["$grad_output"] = grad_output
            spec["grad_output"] = "$grad_output"
        return self._send(spec, tensors)

    def scenario(self, target: str, *args: Any, substitute=(), **kwargs: Any) -> Result:
        """Run the trusted scenario ``harness/parts/<module>.py:<name>(learner, *args, **kwargs)`` in
        the worker: it calls the learner's functions (``learner("training.train_step")``) on objects
        it builds itself and returns plain data (tensors, numbers, lists, dicts) as ``Result.out``.
        Arguments travel as in ``call`` (tensors, JSON data, ``Part``s)."""
        tensors: dict[str, torch.Tensor] = {}
        ref = _referrer(tensors)
        spec = {"probe": "scenario", "scenario": target, "args": [ref(i, a) for i, a in enumerate(args)],
                "kwargs": {k: ref(k, v) for k, v in kwargs.items()}, "substitute": sorted(substitute)}
        return self._send(spec, tensors)

    def module(
        self,
        target: str,
        *inputs: torch.Tensor,
        init_args=(),
        init_kwargs=None,
        params: dict[str, torch.Tensor] | None = None,
        dtype: torch.dtype | None = None,
        train: bool = False,
        grad_output: torch.Tensor | None = None,
        grad_wrt=(),
        substitute=(),
    ) -> Result:
        """Build ``module.Class(*init_args, **init_kwargs)``, set ``params`` by attribute name,
        cast to ``dtype``, run ``forward(*inputs)`` and, with ``grad_output``, backward.
        ``Result.initial`` holds the parameters as built, before ``params`` were set."""
        module, name = _split(target)
        tensors = {str(i): t for i, t in enumerate(inputs)}
        for pname, value in (params or {}).items():
            tensors[f"$param.{pname}"] = value
        spec: dict[str, Any] = {
            "probe": "module",
            "module": module,
            "target": name,
            "init_args": list(init_args),
            "init_kwargs": dict(init_kwargs or {}),
            "params": {p: f"$param.{p}" for p in (params or {})},
            "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
            "train": train,
            "inputs": [str(i) for i in range(len(inputs))],
            "grad_wrt": [str(k) for k in grad_wrt],
            "substitute": sorted(substitute),
        }
        if grad_output is not None:
            tensors["$grad_output"] = grad_output
            spec["grad_output"] = "$grad_output"
        return self._send(spec, tensors)


def _referrer(tensors: dict[str, torch.Tensor]):
    """``ref(key, value)``: an argument as it travels to the worker. Tensors go into ``tensors``
    under ``key`` and are replaced by ``{"$t": key}``; a ``Part`` becomes ``{"$part": ...}``;
    tuples are tagged (JSON has none), so the learner gets one; lists and dicts are walked."""

    def ref(key: Any, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[str(key)] = value
            return {"$t": str(key)}
        if isinstance(value, Part):
            return {
                "$part": value.target,
                "args": [ref(f"{key}.{i}", a) for i, a in enumerate(value.args)],
                "kwargs": {k: ref(f"{key}.{k}", v) for k, v in value.kwargs.items()},
            }
        if isinstance(value, tuple):
            return {"$tuple": [ref(f"{key}.{i}", a) for i, a in enumerate(value)]}
        if isinstance(value, list):
            return [ref(f"{key}.{i}", a) for i, a in enumerate(value)]
        if isinstance(value, dict):
            return {k: ref(f"{key}.{k}", v) for k, v in value.items()}
        return value

    return ref


def _split(target: str) -> tuple[str, str]:
    """``"module.name"`` or ``"module.Class.method"`` -> (module, dotted name)."""
    module, _, name = target.partition(".")
    if not module or not name:
        raise ValueError(f"target {target!r} should be 'module.name'")
    return module, name


def _key(k: str) -> Any:
    return int(k) if k.isdigit() else k
