"""The seam between graded tests and the tree under test.

A test calls ``impl.call("attention.softmax", x, dim=-1)``, ``impl.module("layers.LayerNorm",
...)`` or ``impl.scenario("steps.train_step", ...)`` with values it built; the request travels
to the process serving that exercise (``runner.py``; in this process with ``--in-process``),
which answers with plain data: a ``Result``. Failures arrive as the exceptions in ``failures``.
How long a call took is measured here, by the grader, never read from the worker.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .failures import GradingFailure, ImportFailure, LearnerError, Lost, NotStarted, TimedOut
from . import treefiles
from .manifest import Exercise, load
from .runner import Runner, WorkerLost
from .worker import parts as worker_parts
from .worker import wire
from .worker.wire import File, Part  # noqa: F401  (tests import them from here)

PARTS = Path(__file__).resolve().with_name("parts")
# Read once, when the grader starts and before any code under test runs.
PART_SOURCES = {p.stem: p.read_text(encoding="utf-8") for p in sorted(PARTS.glob("*.py"))}
_LOADS = {name: set(re.findall(r"""\bload_part\(["'](\w+)["']\)""", src)) for name, src in PART_SOURCES.items()}
_GRADED = {e.id for e in load()}
worker_parts.give(PART_SOURCES)  # this process may build any part (the oracles of some checks do)


def load_part(name: str):
    """The reference part ``harness/parts/<name>.py``, built in this (the grader's) process."""
    return worker_parts.load(name)


def needed_parts(names: set[str]) -> set[str]:
    """``names`` and every part they load, transitively."""
    out, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        if name not in PART_SOURCES:
            raise ValueError(f"no reference part harness/parts/{name}.py")
        out.add(name)
        todo += _LOADS[name]
    return out


def _part_targets(value: Any, found: set[str]) -> set[str]:
    if isinstance(value, list):
        for v in value:
            _part_targets(v, found)
    elif isinstance(value, dict):
        if "$part" in value:
            found.add(str(value["$part"]).partition(".")[0])
        for v in value.values():
            _part_targets(v, found)
    return found


class Backend(Protocol):
    def probe(self, exercise: str, rules: dict, header: dict, arrays: list[np.ndarray], timeout: float, fresh: bool = False,
              measure: bool = False) -> tuple[dict, list, str]: ...


class WorkerBackend:
    """The tree runs in worker processes, one per exercise (``sandbox``: bubblewrap, or None)."""

    def __init__(self, tree: Path, echo: bool = False, sandbox=None, start: str | None = None, require_sandbox: bool = False,
                 sources: dict[str, str] | None = None):
        sources = treefiles.read(tree).sources if sources is None else sources
        self.runner = Runner(tree, echo, sandbox, start, require_sandbox, sources=sources)

    def probe(self, exercise, rules, header, arrays, timeout, fresh=False, measure=False):
        return self.runner.probe(exercise, rules, header, arrays, timeout, fresh, measure)

    def prepare(self, exercises: list[Exercise]) -> None:
        """Start the worker hosts these exercises will need, side by side."""
        self.runner.prepare([(tuple(e.hidden_modules), tuple(e.worker_imports)) for e in exercises])

    def close(self) -> None:
        self.runner.close()


class InProcessBackend:
    """Runs probes in the test process, so ``breakpoint()`` and pdb work. Not a valid grade."""

    def __init__(self, tree: Path, sources: dict[str, str] | None = None):
        from .worker import probes
        from .worker.tree import Tree

        self.tree = Tree(tree, treefiles.read(tree).sources if sources is None else sources)
        self.scratch = Path(tempfile.mkdtemp(prefix="kata-in-process-"))
        probes.SCRATCH = self.scratch
        weakref.finalize(self, shutil.rmtree, str(self.scratch), True)  # also when nobody calls close()

    def probe(self, exercise, rules, header, arrays, timeout, fresh=False, measure=False):
        from .worker import probes
        from .worker.guard import Guard

        # through the wire format both ways, so that a debug run sees exactly what a worker would
        header, arrays = wire.read(io.BytesIO(wire.encode(header, arrays)))
        guard = Guard(exercise, rules.get("forbidden", []), rules.get("forbidden_kernels", []), rules.get("forbidden_modules", []),
                      self.tree).install()
        try:
            reply, out = probes.run(self.tree, guard, header, arrays)
        finally:
            guard.uninstall()
        reply, out = wire.read(io.BytesIO(wire.encode(reply, out)))
        if measure:
            reply["resources"] = {"source": None, "why": "--in-process: nothing outside the test process measures it"}
        return reply, out, ""

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


@dataclass
class Result:
    out: Any  # a tensor; plain data with returns="data"; None with then=[...]
    grads: dict[Any, torch.Tensor] = field(default_factory=dict)
    param_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    initial: dict[str, torch.Tensor] = field(default_factory=dict)
    output: str = ""  # what the learner's code printed
    then: list[Any] = field(default_factory=list)  # results of the `then` method calls
    seconds: float = 0.0  # the round trip, timed by the grader (imports included on a first call)
    resources: dict | None = None  # with measure=True: what the kernel says the worker used (Runner.probe)

    def grad(self, key: Any) -> torch.Tensor:
        return self.grads[key]


_RAISE = {"not_started": NotStarted, "import": ImportFailure}
_ELSEWHERE = "*"  # the ``lost`` entry of hangs met while grading an exercise that does not own them


@dataclass
class Trouble:
    """What went wrong earlier in one exercise's worker (the grade's ``lost`` maps id -> this).

    A fault costs only the check that met it: after a time-out or a crash the next check gets a
    fresh process. ``hangs`` are the places of the tree that did not return (``worker/hangs.py``):
    later checks are stopped at once when they call one. ``spent`` is the time the exercise's
    checks lost to faults; the exercise may lose at most twice its time limit so (``budget``):
    each later check may run at most what is left, and when nothing is, its remaining checks are
    not run (``ended``)."""

    reason: str
    timeouts: int = 0
    ended: type[GradingFailure] | None = None  # set: the exercise's remaining checks are not run
    hangs: dict[tuple[str, str], tuple] = field(default_factory=dict)  # (file, function) -> (Place, "20 s in test_x")
    spent: float = 0.0
    budget: float = 0.0


class Impl:
    def __init__(self, backend: Backend, exercise: Exercise, lost: dict[str, str], timeout: float | None = None,
                 refused: str | None = None, fallback: frozenset[str] = frozenset(), check: str = "this check"):
        self.backend, self.exercise, self.lost, self.refused = backend, exercise, lost, refused
        self.timeout = timeout or exercise.timeout
        # modules of other exercises that the tree's module imports and that a reference part may
        # stand in for when they fail to import (``worker/tree.py``'s ``Tree.module``)
        self.fallback = frozenset(fallback)
        self.check = check
        self.printed: list[str] = []  # what the learner's code printed during this test
        self.called: list[str] = []  # the targets this test called, "module.name" (for watch)

    def rules(self) -> dict:
        ex = self.exercise
        return {"forbidden": list(ex.forbidden), "forbidden_kernels": list(ex.forbidden_kernels),
                "forbidden_modules": list(ex.forbidden_modules), "hidden_modules": list(ex.hidden_modules)}

    def _send(self, spec: dict, values: dict, parts: set[str] = frozenset(), fresh: bool = False, measure: bool = False) -> Result:
        if self.refused:
            raise LearnerError(self.refused)
        earlier = self.lost.get(self.exercise.id)
        if earlier is not None and earlier.ended is not None:
            raise earlier.ended(f"not run: {earlier.reason}")
        timeout = self.timeout if earlier is None else min(self.timeout, earlier.budget - earlier.spent)
        arrays: list[np.ndarray] = []
        packed = wire.pack(values, arrays)
        names = needed_parts(set(parts) | _part_targets(packed, set()))
        if self.exercise.module in names and self.exercise.id in _GRADED:
            raise ValueError(f"harness: exercise {self.exercise.id}'s checks may not use the reference part "
                             f"for its own module, parts/{self.exercise.module}.py")
        fallback = {m for m in self.fallback if self.exercise.module not in needed_parts({m})}
        names |= needed_parts(fallback)
        header = {**spec, "exercise": self.exercise.id, "values": packed, "parts": {n: PART_SOURCES[n] for n in sorted(names)},
                  "fallback": sorted(fallback), "hangs": self._known_hangs()}
        more = {"fresh": True} if fresh else {}
        more.update({"measure": True} if measure else {})
        for first in (True, False):
            start = time.perf_counter()
            try:
                reply, out, printed = self.backend.probe(self.exercise.id, self.rules(), header, arrays, timeout, **more)
                break
            except WorkerLost as e:
                if not (first and e.timed_out and e.stuck is not None and e.stuck.at_import
                        and self._module_of(e.stuck) in fallback):
                    if e.output.strip():
                        self.printed.append(e.output)
                    raise self._fault(e, time.perf_counter() - start, timeout) from None
                # Another exercise's module loops at import: that costs this check nothing. Said once
                # (its own exercise names it), then every import of it meets the tripwire and the part
                # stands in for it (``worker/tree.py``); this check runs again, in a fresh process.
                self.lost.setdefault(_ELSEWHERE, Trouble("")).hangs[(e.stuck.file, e.stuck.function)] = (
                    e.stuck, f"{timeout:g} s in {self.check} of exercise {self.exercise.id}")
                header["hangs"] = self._known_hangs()
        seconds = time.perf_counter() - start
        if printed.strip():
            self.printed.append(printed)
        if reply.get("status") == "ok":
            try:
                result = wire.unpack(reply["result"], out)
            except (KeyError, wire.WireError) as e:
                raise LearnerError(f"the worker's reply could not be read ({e})") from None
            if not isinstance(result, dict):
                raise LearnerError("the worker's reply could not be read")
            return Result(
                out=result.get("out"),
                then=list(result.get("then", [])),
                seconds=seconds,
                grads={_key(k): v for k, v in result.get("grads", {}).items()},
                param_grads=result.get("param_grads", {}),
                initial=result.get("initial", {}),
                output=printed,
                resources=reply.get("resources") if measure else None,
            )
        if reply.get("kind") == "hang":
            raise TimedOut(self._known_hang(str(reply.get("details", ""))))
        cls = _RAISE.get(reply.get("kind"), LearnerError)
        error = cls(str(reply.get("message", "")), str(reply.get("details", "")))
        error.kind = str(reply.get("kind", "raised"))
        raise error

    def _fault(self, e: WorkerLost, seconds: float, timeout: float) -> GradingFailure:
        """The failure of a check whose process hung or ended (``Trouble`` says what it costs)."""
        trouble = self.lost.setdefault(self.exercise.id, Trouble(e.reason, budget=2 * self.timeout))
        trouble.reason = e.reason
        if not e.timed_out and not e.crashed:
            # it broke the channel to the grader (or its host is gone): nothing more from it is trusted
            trouble.ended, trouble.reason = Lost, f"{e.reason}, earlier in this exercise"
            return Lost(e.reason)
        trouble.spent += seconds if not e.timed_out else max(seconds, timeout)
        if e.timed_out:
            trouble.timeouts += 1
            said = self._stuck(e, timeout)
            if e.stuck is not None:
                trouble.hangs[(e.stuck.file, e.stuck.function)] = (e.stuck, f"{timeout:g} s in {self.check}")
            failure: GradingFailure = TimedOut(said)
        else:
            failure = Lost(e.reason)
        if trouble.spent >= trouble.budget:
            trouble.ended, trouble.reason = TimedOut, (
                f"this exercise has lost {trouble.spent:.0f} s to code that did not return or ended its process, "
                f"twice its time limit of {self.timeout:g} s (first: {failure.message.splitlines()[0]})")
        return failure

    def _stuck(self, e: WorkerLost, timeout: float) -> str:
        """What to say of a check that ran out of time: where the tree's code was stopped."""
        place = e.stuck
        if place is None:
            return e.reason
        name = Path(place.file).name
        if place.at_import:
            return (f"importing {name} did not end within {timeout:g} s: an endless loop at import? It was at line "
                    f"{place.line} of {name} when stopped; later checks that import it fail at once.")
        return (f"{place.function} ({name}) did not return within {timeout:g} s: an endless loop? It was at line "
                f"{place.line} of {name} when stopped; later checks that call {place.function} fail at once.")

    def _known_hangs(self) -> list[list[str]]:
        """The places the tripwire stops in this exercise's probes: where its own checks hung, and
        any module of the tree whose import did not end (in whichever exercise it was met)."""
        places = {k for k, (place, _) in self._hangs() if place.at_import}
        trouble = self.lost.get(self.exercise.id)
        places |= set(trouble.hangs) if trouble is not None else set()
        return [list(k) for k in sorted(places)]

    def _hangs(self):
        """Every known hang of this grade: ``((file, function), (Place, when))``."""
        return [item for trouble in list(self.lost.values()) for item in trouble.hangs.items()]

    @staticmethod
    def _module_of(place) -> str:
        return Path(place.file).stem

    def _known_hang(self, details: str) -> str:
        """What to say of a check stopped on entering a place that hung in an earlier check."""
        trouble = self.lost.get(self.exercise.id)
        file, _, function = details.rpartition("::")
        name = Path(file).name
        what = f"imports {name}, whose import" if function == "<module>" else f"calls {function} ({name}), which"
        mine = list(trouble.hangs.items()) if trouble is not None else []  # this exercise's own first
        for (f, fn), (place, when) in mine + self._hangs():
            if fn == function and Path(f).name == name:
                return f"not run: it {what} did not end within {when} (an endless loop at line {place.line}?)"
        return f"not run: it {what} did not end in an earlier check of this exercise"

    def call(
        self,
        target: str,
        *args: Any,
        grad_output: torch.Tensor | None = None,
        grad_wrt=(),
        returns: str = "tensor",
        then: list[tuple] | None = None,
        substitute=(),
        device: str | None = None,
        **kwargs: Any,
    ) -> Result:
        """Call ``module.function(*args, **kwargs)`` in the tree under test.

        ``target`` is ``"module.name"`` or ``"module.Class.method"``. Arguments travel as
        ``wire.pack`` encodes them: tensors, numbers, strings, bytes, lists, tuples, dicts, and
        ``Part``s (objects built in the worker by a trusted reference part). With ``grad_output``,
        the output is backpropagated and ``Result.grads[key]`` holds the gradient of each argument
        in ``grad_wrt`` (a position for positional arguments, a name for keyword ones).
        ``returns="data"`` accepts plain data (ints, str, bytes, lists, tuples, dicts) instead of a
        tensor. ``then=[(method, args, kwargs), ...]`` calls methods on the returned object, in
        order, and returns their plain results in ``Result.then``; ``$len``, ``$list`` (args:
        (limit,)), ``$getitem`` and ``$attr`` are pseudo-methods. ``substitute=("layers",)``
        imports the target with those modules replaced by the harness's reference parts.
        ``device="meta"`` makes the call under ``torch.device("meta")``: a module built there
        allocates no memory (what it returns cannot be sent back; its methods' results can).
        """
        module, name = _split(target)
        self.called.append(target)
        spec: dict[str, Any] = {"probe": "call", "module": module, "target": name, "grad_wrt": [str(k) for k in grad_wrt],
                                "substitute": sorted(substitute), "device": device}
        if returns == "data":
            spec["returns"] = "data"
        values: dict[str, Any] = {"args": list(args), "kwargs": kwargs}
        if then is not None:
            values["then"] = [dict(zip(("method", "args", "kwargs"), (tuple(step) + ((), {}))[:3])) for step in then]
            for step in values["then"]:
                step["args"], step["kwargs"] = list(step["args"]), dict(step["kwargs"])
        if grad_output is not None:
            values["grad_output"] = grad_output
        return self._send(spec, values, set(substitute))

    def scenario(self, target: str, *args: Any, substitute=(), fresh: bool = False, measure: bool = False, **kwargs: Any) -> Result:
        """Run the trusted scenario ``harness/parts/<module>.py:<name>(learner, *args, **kwargs)`` in
        the worker: it calls the learner's functions (``learner("training.train_step")``) on objects
        it builds itself and returns plain data (tensors, numbers, lists, dicts) as ``Result.out``.
        Arguments travel as in ``call``. ``fresh``: in a new worker process, where none of the tree
        has run yet. ``measure``: ``Result.resources`` holds what the worker process used during
        this scenario (peak memory, threads, the processes it ever started), read from the kernel
        by the process that started it, out of the tree's reach (``Runner.probe``)."""
        self.called.append(target)
        spec = {"probe": "scenario", "scenario": target, "substitute": sorted(substitute)}
        return self._send(spec, {"args": list(args), "kwargs": kwargs}, {target.partition(".")[0], *substitute}, fresh, measure)

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
        seed: int | None = None,
    ) -> Result:
        """Build ``module.Class(*init_args, **init_kwargs)``, set ``params`` by attribute name,
        cast to ``dtype``, run ``forward(*inputs)`` and, with ``grad_output``, backward.
        ``Result.initial`` holds the parameters as built, before ``params`` were set. With
        ``seed``, ``torch.manual_seed(seed)`` runs just before the forward pass, so that an oracle
        seeded alike draws the same dropout masks."""
        module, name = _split(target)
        self.called.append(target)
        spec: dict[str, Any] = {
            "probe": "module", "module": module, "target": name,
            "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
            "train": train, "grad_wrt": [str(k) for k in grad_wrt], "substitute": sorted(substitute),
            "seed": None if seed is None else int(seed),
        }
        values: dict[str, Any] = {"args": list(init_args), "kwargs": dict(init_kwargs or {}), "inputs": list(inputs),
                                  "params": dict(params or {})}
        if grad_output is not None:
            values["grad_output"] = grad_output
        return self._send(spec, values, set(substitute))


def _split(target: str) -> tuple[str, str]:
    """``"module.name"`` or ``"module.Class.method"`` -> (module, dotted name)."""
    module, _, name = target.partition(".")
    if not module or not name:
        raise ValueError(f"target {target!r} should be 'module.name'")
    return module, name


def _key(k: str) -> Any:
    return int(k) if k.isdigit() else k
