"""Trusted probes: the only code that touches the tree under test.

A probe runs inside the worker process (or in the test process with ``--in-process``). It turns
the arrays the grader sent into tensors, calls the learner's function or module on them, checks
that what came back is a plain ``torch.Tensor``, and turns the results back into arrays. It
never compares anything: the grader does that, in a process the tree never ran in.
"""

from __future__ import annotations

import collections
import importlib
import importlib.machinery
import importlib.util
import sys
import traceback
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

TREE = "tree"  # the name the tree under test is imported as, whatever its directory is called
MAX_OUTPUT_BYTES = 256 * 1024 * 1024

_NP = {
    torch.bool: "bool",
    torch.uint8: "uint8",
    torch.int8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.float16: "float16",
    torch.float32: "float32",
    torch.float64: "float64",
}
_TORCH = {name: dtype for dtype, name in _NP.items()} | {"bfloat16": torch.bfloat16}


class ProbeError(Exception):
    """What a probe reports instead of a result: ``kind`` says whose fault and how."""

    def __init__(self, kind: str, message: str, details: str = ""):
        super().__init__(message)
        self.kind, self.message, self.details = kind, message, details


# --------------------------------------------------------------------------- tensors <-> arrays


def to_array(t: torch.Tensor) -> tuple[np.ndarray, str]:
    """A tensor as a numpy array and its torch dtype name (bf16 travels as float32)."""
    t = t.detach().cpu()
    name = str(t.dtype).removeprefix("torch.")
    if t.dtype == torch.bfloat16:
        t = t.float()
    elif t.dtype not in _NP:
        raise ProbeError("bad_output", f"a tensor of dtype {t.dtype} cannot be graded")
    return t.numpy(), name


def from_array(a: np.ndarray, dtype: str) -> torch.Tensor:
    if dtype not in _TORCH:
        raise ValueError(f"unknown dtype {dtype!r}")
    return torch.from_numpy(np.array(a, copy=True)).to(_TORCH[dtype])


def pack(value: Any, arrays: list[np.ndarray]) -> Any:
    """Replace tensors in a nested structure by ``{"$array": i, "dtype": name}``."""
    if isinstance(value, torch.Tensor):
        arr, name = to_array(value)
        arrays.append(arr)
        return {"$array": len(arrays) - 1, "dtype": name}
    if isinstance(value, dict):
        return {str(k): pack(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [pack(v, arrays) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot send {type(value).__name__}")


def unpack(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, dict):
        if "$array" in value:
            return from_array(arrays[value["$array"]], value["dtype"])
        return {k: unpack(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [unpack(v, arrays) for v in value]
    return value


# --------------------------------------------------------------------------- the tree under test


PARTS = Path(__file__).resolve().with_name("parts")


class Tree:
    """Imports the modules of a directory as the package ``tree`` (relative imports work).

    ``module(name, substitute=("layers",))`` imports ``name`` from a second copy of the package
    in which the listed modules are the harness's trusted reference parts (``harness/parts/``),
    so an exercise that builds on earlier ones is graded on its own code only.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        self._packages: dict[tuple[str, ...], types.ModuleType] = {}
        for name in [m for m in sys.modules if m == TREE or m.startswith((TREE + ".", TREE + "_with_reference_"))]:
            del sys.modules[name]  # another tree imported in this process before (--in-process)

    def _alias(self, substitute: tuple[str, ...]) -> str:
        return TREE if not substitute else f"{TREE}_with_reference_{'_'.join(substitute)}"

    def _load_package(self, substitute: tuple[str, ...] = ()) -> str:
        alias = self._alias(substitute)
        if substitute not in self._packages:
            init = self.path / "__init__.py"
            if init.exists():
                spec = importlib.util.spec_from_file_location(alias, init, submodule_search_locations=[str(self.path)])
            else:
                spec = importlib.machinery.ModuleSpec(alias, None, is_package=True)
                spec.submodule_search_locations = [str(self.path)]
            package = importlib.util.module_from_spec(spec)
            sys.modules[alias] = package
            try:
                if init.exists():
                    spec.loader.exec_module(package)
                for name in substitute:
                    part = PARTS / f"{name}.py"
                    if not part.exists():
                        raise ProbeError("harness", f"no reference part harness/parts/{name}.py")
                    pspec = importlib.util.spec_from_file_location(f"{alias}.{name}", part)
                    module = importlib.util.module_from_spec(pspec)
                    sys.modules[f"{alias}.{name}"] = module
                    pspec.loader.exec_module(module)
                    setattr(package, name, module)
            except BaseException:
                sys.modules.pop(alias, None)
                raise
            self._packages[substitute] = package
        return alias

    def module(self, name: str, substitute: tuple[str, ...] | list[str] = ()) -> types.ModuleType:
        substitute = tuple(sorted(substitute))
        if not (self.path / f"{name}.py").exists():
            raise ProbeError("import", f"{self.path / (name + '.py')} does not exist")
        try:
            alias = self._load_package(substitute)
            return importlib.import_module(f"{alias}.{name}")
        except ProbeError:
            raise
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            raise self.learner_error(e, importing=name) from None

    def attr(self, module: str, name: str, substitute=()) -> Any:
        mod = self.module(module, substitute)
        obj: Any = mod
        for part in name.split("."):
            if not hasattr(obj, part):
                raise ProbeError("import", f"{module}.py defines no `{name}`")
            obj = getattr(obj, part)
        return obj

    def learner_error(self, e: BaseException, importing: str | None = None) -> ProbeError:
        """The learner's exception, with the traceback trimmed to frames in the tree."""
        frames = [f for f in traceback.extract_tb(e.__traceback__) if self.owns(f.filename)]
        if isinstance(e, SyntaxError) and e.filename and self.owns(e.filename):
            where = f"{Path(e.filename).name}, line {e.lineno}"
            return ProbeError("import", f"SyntaxError in {where}: {e.msg}", _syntax_details(e))
        lines = [
            f"  File \"{self.rel(f.filename)}\", line {f.lineno}, in {f.name}\n    {(f.line or '').strip()}"
            for f in frames
        ]
        summary = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        details = ("Traceback (your code):\n" + "\n".join(lines) + "\n" if lines else "") + summary
        if isinstance(e, NotImplementedError) and frames:
            where = f" ({self.rel(frames[-1].filename)}, line {frames[-1].lineno})"
            return ProbeError("not_started", (str(e) or "NotImplementedError") + where)
        if importing is not None:
            return ProbeError("import", f"importing {importing}.py raised {summary}", details)
        where = f" ({self.rel(frames[-1].filename)}, line {frames[-1].lineno})" if frames else ""
        return ProbeError("raised", f"{summary}{where}", details)

    def owns(self, filename: str | None) -> bool:
        try:
            return filename is not None and Path(filename).resolve().is_relative_to(self.path)
        except (OSError, ValueError):
            return False

    def rel(self, filename: str) -> str:
        try:
            return str(Path(filename).resolve().relative_to(self.path.parent))
        except ValueError:
            return filename


def _syntax_details(e: SyntaxError) -> str:
    text = (e.text or "").rstrip("\n")
    caret = " " * max((e.offset or 1) - 1, 0) + "^" if text else ""
    return f"  File \"{Path(e.filename).name}\", line {e.lineno}\n    {text}\n    {caret}\nSyntaxError: {e.msg}"


# --------------------------------------------------------------------------- forbidden shortcuts


def _resolve(dotted: str) -> Any:
    obj: Any = importlib.import_module(dotted.split(".")[0])
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


_TORCH_DIR = Path(torch.__file__).resolve().parent
_HERE = Path(__file__).resolve()


def _called_from_parts(frame) -> bool:
    """Whether the nearest caller outside torch (and this module) is a reference part."""
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_absolute() and not path.is_relative_to(_TORCH_DIR) and path != _HERE:
            return path.parent == PARTS
        frame = frame.f_back
    return False


class _RefuseImports:
    """A meta-path finder that refuses the exercise's forbidden packages, under any name path."""

    def __init__(self, guard: "Guard"):
        self.guard = guard

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.guard.modules:
            self.guard._refuse(f"import {name}")
        return None


class Guard:
    """Refuses forbidden torch functions and kernels while a probe runs.

    Two layers: a ``TorchFunctionMode`` sees the public function whatever name it was imported
    under (an alias is the same object), and a ``TorchDispatchMode`` sees the aten kernel behind
    it, so detours (``torch.ops.aten._softmax``, a composite that calls it) are refused too.
    A refusal is recorded even if the learner's code catches the exception.
    """

    def __init__(self, exercise: str, functions: list[str], kernels: list[str], tree: Tree, modules: list[str] = ()):
        self.exercise, self.tree, self.modules = exercise, tree, tuple(modules)
        self.functions = {}
        for name in functions:
            obj = _resolve(name)
            if obj is not None:
                self.functions[id(obj)] = (obj, name)
        self.kernels = {}
        for name in kernels:
            namespace, _, op = name.partition(".")
            packet = getattr(getattr(torch.ops, namespace), op, None) if hasattr(torch.ops, namespace) else None
            if packet is not None:
                self.kernels[packet] = name
        self.violations: list[str] = []

    def _refuse(self, what: str) -> None:
        if _called_from_parts(sys._getframe(2)):
            return  # the harness's own reference parts may use the built-ins
        where = ""
        frame = sys._getframe(2)
        while frame is not None:
            if self.tree.owns(frame.f_code.co_filename):
                where = f" at {self.tree.rel(frame.f_code.co_filename)}, line {frame.f_lineno}"
                break
            frame = frame.f_back
        message = f"exercise {self.exercise} asks you to write this yourself, but your code called {what}{where}"
        if message not in self.violations:
            self.violations.append(message)
        raise RuntimeError(message)

    def __enter__(self) -> "Guard":
        guard = self

        class Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                hit = guard.functions.get(id(func))
                if hit is not None and hit[0] is func:
                    guard._refuse(hit[1])
                return func(*args, **(kwargs or {}))

        class Kernels(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = guard.kernels.get(func.overloadpacket)
                if name is not None:
                    guard._refuse(f"the kernel {name} (behind a built-in you may not use here)")
                return func(*args, **(kwargs or {}))

        self._modes = [Functions(), Kernels()] if (self.functions or self.kernels) else []
        for mode in self._modes:
            mode.__enter__()
        # Forbidden packages: hidden from sys.modules and refused on import while the probe runs.
        self._hidden = {m: sys.modules.pop(m) for m in list(sys.modules) if m.split(".")[0] in self.modules}
        self._finder = _RefuseImports(self) if self.modules else None
        if self._finder:
            sys.meta_path.insert(0, self._finder)
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(None, None, None)
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        sys.modules.update(self._hidden)


# --------------------------------------------------------------------------- probes


MAX_ITEMS = 10_000_000


def plain(value: Any, what: str, budget: list[int] | None = None) -> Any:
    """The learner's return value as trusted data: exact builtin types and plain tensors only.

    Subclasses are refused (an ``int`` subclass could lie in ``==``). Tuples, bytes and dicts
    with non-string keys are tagged so that the grader gets back exactly what was returned;
    a generator or other iterator is consumed into a list.
    """
    budget = budget if budget is not None else [MAX_ITEMS]
    budget[0] -= 1
    if budget[0] < 0:
        raise ProbeError("bad_output", f"{what} holds more than {MAX_ITEMS:,} items")
    t = type(value)
    if value is None or t in (bool, int, float, str):
        if t is int and abs(value) >= 2**63:
            raise ProbeError("bad_output", f"{what} holds an integer too large to grade")
        return value
    if t is torch.Tensor:
        return _checked(value, what)
    if t is np.ndarray:
        if value.dtype.name not in _TORCH and value.dtype.name != "bfloat16":
            raise ProbeError("bad_output", f"{what} is a numpy array of dtype {value.dtype}, which cannot be graded")
        return {"$ndarray": torch.from_numpy(np.ascontiguousarray(value).reshape(value.shape))}
    if t is bytes or t is bytearray:
        return {"$bytes": list(value)}
    if t is list:
        return [plain(v, what, budget) for v in value]
    if t is tuple:
        return {"$tuple": [plain(v, what, budget) for v in value]}
    if t is dict or t in (collections.Counter, collections.defaultdict, collections.OrderedDict):
        # dict.items, not the object's own items(): a subclass cannot lie about its contents
        return {"$dict": [[plain(k, what, budget), plain(v, what, budget)] for k, v in dict.items(value)]}
    if t in (set, frozenset):
        return {"$set": [plain(v, what, budget) for v in value]}
    if isinstance(value, types.GeneratorType) or (hasattr(t, "__next__") and hasattr(t, "__iter__")):
        items = []
        for item in value:
            items.append(plain(item, what, budget))
        return items
    raise ProbeError("bad_output", f"{what} should be plain data (tensor, int, str, bytes, list, tuple, dict), got {t.__module__}.{t.__qualname__}")


def unplain(value: Any) -> Any:
    """The inverse of ``plain`` on the grader's side (tensors already unpacked)."""
    if isinstance(value, list):
        return [unplain(v) for v in value]
    if isinstance(value, dict):
        if "$bytes" in value:
            return bytes(value["$bytes"])
        if "$tuple" in value:
            return tuple(unplain(v) for v in value["$tuple"])
        if "$dict" in value:
            return {_hashable(unplain(k)): unplain(v) for k, v in value["$dict"]}
        if "$set" in value:
            return {_hashable(unplain(v)) for v in value["$set"]}
        if "$ndarray" in value:
            return value["$ndarray"]
        return {k: unplain(v) for k, v in value.items()}
    return value


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def _checked(value: Any, what: str) -> torch.Tensor:
    if type(value) is not torch.Tensor:  # subclasses could lie about their values
        raise ProbeError(
            "bad_output", f"{what} should be a torch.Tensor, got {type(value).__module__}.{type(value).__qualname__}"
        )
    if value.numel() * value.element_size() > MAX_OUTPUT_BYTES:
        raise ProbeError("bad_output", f"{what} has shape {tuple(value.shape)}: far too large")
    return value


def _backward(out: torch.Tensor, grad_output: torch.Tensor, tree: Tree) -> None:
    if not out.requires_grad:
        raise ProbeError(
            "bad_output",
            "the output does not require grad, so no gradient can flow back to the inputs: "
            "did you use .detach(), .item(), .numpy() or torch.no_grad() on the way?",
        )
    if grad_output.shape != out.shape:
        raise ProbeError("bad_output", f"the output has shape {tuple(out.shape)}, expected {tuple(grad_output.shape)}")
    try:
        out.backward(grad_output.to(out.dtype))
    except Exception as e:  # an op of the learner's without a backward, say
        raise tree.learner_error(e) from None


def _load_part(name: str) -> types.ModuleType:
    """A trusted module from harness/parts/, loaded outside the tree's packages."""
    key = f"kata_part_{name}"
    if key not in sys.modules:
        path = PARTS / f"{name}.py"
        if not path.exists():
            raise ProbeError("harness", f"no reference part harness/parts/{name}.py")
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _resolve_args(spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> tuple[list, dict]:
    """Arguments as sent: ``{"$t": name}`` is a tensor; ``{"$part": "module.Name", "args": [...],
    "kwargs": {...}}`` is an object built by a trusted reference part (a tiny model, say)."""

    def ref(a: Any) -> Any:
        if isinstance(a, dict) and "$t" in a:
            return tensors[a["$t"]]
        if isinstance(a, dict) and "$tuple" in a:
            return tuple(ref(x) for x in a["$tuple"])
        if isinstance(a, list):
            return [ref(x) for x in a]
        if isinstance(a, dict) and "$part" not in a:
            return {k: ref(v) for k, v in a.items()}
        if isinstance(a, dict) and "$part" in a:
            module, _, name = a["$part"].partition(".")
            args, kwargs = _resolve_args(a, tensors)
            return getattr(_load_part(module), name)(*args, **kwargs)
        return a

    return [ref(a) for a in spec.get("args", [])], {k: ref(v) for k, v in spec.get("kwargs", {}).items()}


def _learner_call(tree: Tree, fn: Any, args: list, kwargs: dict) -> Any:
    try:
        return fn(*args, **kwargs)
    except ProbeError:
        raise
    except Exception as e:
        raise tree.learner_error(e) from None


def _pseudo(obj: Any, method: str, args: list, kwargs: dict, tree: Tree) -> Any:
    """``$len``, ``$list`` (at most ``args[0]`` items), ``$getitem`` and ``$attr`` on an object."""
    try:
        if method == "$len":
            return len(obj)
        if method == "$list":
            limit = args[0] if args else MAX_ITEMS
            out = []
            for item in obj:
                if len(out) >= limit:
                    break
                out.append(item)
            return out
        if method == "$getitem":
            return obj[args[0]]
        if method == "$attr":
            return getattr(obj, args[0])
    except ProbeError:
        raise
    except Exception as e:
        raise tree.learner_error(e) from None
    raise ProbeError("harness", f"unknown pseudo-method {method}")


def probe_call(tree: Tree, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Call ``module.target(*args, **kwargs)``; with ``grad_output``, also backpropagate.

    With ``then``, each ``{"method", "args", "kwargs"}`` is called in turn on what the call
    returned (``$len``, ``$list``, ``$getitem``, ``$attr`` are pseudo-methods) and the results
    come back as ``then``; with ``returns: "data"`` the output may be plain data, not a tensor.
    """
    fn = tree.attr(spec["module"], spec["target"], spec.get("substitute", ()))
    wrt = spec.get("grad_wrt", [])
    for name in wrt:
        tensors[name].requires_grad_(True)
    args, kwargs = _resolve_args(spec, tensors)
    out = _learner_call(tree, fn, args, kwargs)
    what = f"{spec['target']}(...)"
    if "then" in spec:
        results = []
        for step in spec["then"]:
            a, k = _resolve_args(step, tensors)
            method = step["method"]
            if method.startswith("$"):
                value = _pseudo(out, method, a, k, tree)
            else:
                bound = getattr(out, method, None)
                if bound is None:
                    raise ProbeError("bad_output", f"{what} returned a {type(out).__name__}, which has no method `{method}`")
                value = _learner_call(tree, bound, a, k)
            results.append(plain(value, f"{what}.{method}(...)"))
        return {"out": None, "then": results}
    if spec.get("returns") == "data":
        return {"out": plain(out, what)}
    out = _checked(out, what)
    result: dict[str, Any] = {"out": out}
    if spec.get("grad_output"):
        _backward(out, tensors[spec["grad_output"]], tree)
        result["grads"] = {n: tensors[n].grad if tensors[n].grad is not None else torch.zeros_like(tensors[n]) for n in wrt}
    return result


def probe_module(tree: Tree, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Build ``module.target(*init)``, optionally set parameters, run forward (and backward)."""
    cls = tree.attr(spec["module"], spec["target"], spec.get("substitute", ()))
    try:
        model = cls(*spec.get("init_args", []), **spec.get("init_kwargs", {}))
    except ProbeError:
        raise
    except Exception as e:
        raise tree.learner_error(e) from None
    if not isinstance(model, torch.nn.Module):
        raise ProbeError("bad_output", f"{spec['target']}(...) should build a torch.nn.Module, got {type(model).__name__}")
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for name, tname in spec.get("params", {}).items():
            p = dict(model.named_parameters()).get(name)
            if p is None:
                have = ", ".join(initial) or "none"
                raise ProbeError("bad_output", f"{spec['target']} has no parameter `{name}` (its parameters: {have})")
            if tuple(p.shape) != tuple(tensors[tname].shape):
                raise ProbeError(
                    "bad_output", f"{spec['target']}.{name} has shape {tuple(p.shape)}, expected {tuple(tensors[tname].shape)}"
                )
            p.copy_(tensors[tname])
    if spec.get("dtype"):
        model = model.to(_TORCH[spec["dtype"]])
    model.train(spec.get("train", False))
    wrt = spec.get("grad_wrt", [])
    for name in wrt:
        tensors[name].requires_grad_(True)
    inputs = [tensors[n] for n in spec.get("inputs", [])]
    try:
        out = model(*inputs)
    except ProbeError:
        raise
    except Exception as e:
        raise tree.learner_error(e) from None
    out = _checked(out, f"{spec['target']}.forward(...)")
    result: dict[str, Any] = {"out": out, "initial": initial}
    if spec.get("grad_output"):
        _backward(out, tensors[spec["grad_output"]], tree)
        result["grads"] = {n: tensors[n].grad if tensors[n].grad is not None else torch.zeros_like(tensors[n]) for n in wrt}
        result["param_grads"] = {
            n: p.grad if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()
        }
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


def probe_scenario(tree: Tree, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Run ``harness/parts/<module>.py``'s ``name(learner, *args, **kwargs)``: trusted code that
    drives the learner's functions through several calls (a training step on a model it built,
    a save and a resume) and returns plain data about what happened."""
    module, _, name = spec["scenario"].partition(".")
    fn = getattr(_load_part(module), name, None)
    if fn is None:
        raise ProbeError("harness", f"harness/parts/{module}.py has no scenario `{name}`")
    args, kwargs = _resolve_args(spec, tensors)
    out = fn(Learner(tree, spec.get("substitute", ())), *args, **kwargs)
    return {"out": plain(out, f"the scenario {spec['scenario']}")}


PROBES = {"call": probe_call, "module": probe_module, "scenario": probe_scenario}


def run(tree: Tree, spec: dict[str, Any], arrays: list[np.ndarray], rules: dict[str, Any]) -> tuple[dict, list]:
    """Run one probe request; returns the reply header and arrays (``status`` ok or error)."""
    try:
        tensors = {name: from_array(arrays[i], dtype) for name, (i, dtype) in spec.get("tensors", {}).items()}
        probe = PROBES[spec["probe"]]
        guard = Guard(spec.get("exercise", "?"), rules.get("forbidden", []), rules.get("forbidden_kernels", []), tree,
                      rules.get("forbidden_modules", []))
        try:
            with guard:
                result = probe(tree, spec, tensors)
            out_arrays: list[np.ndarray] = []
            header = {"status": "ok", "result": pack(result, out_arrays)}
        except ProbeError as e:
            if not guard.violations:
                raise
            out_arrays, header = [], {}
        if guard.violations:
            raise ProbeError("forbidden", guard.violations[0])
        return header, out_arrays
    except ProbeError as e:
        return {"status": "error", "kind": e.kind, "message": e.message, "details": e.details}, []
    except BaseException as e:  # SystemExit, KeyboardInterrupt, anything a probe did not expect
        err = tree.learner_error(e)
        return {"status": "error", "kind": err.kind, "message": err.message, "details": err.details}, []
