"""Refusing the built-ins an exercise asks the learner to write, in the whole worker process.

A worker process serves one exercise, and its refusals are installed before the tree is imported,
for every thread, and with no switch to flip:

- kernels (``forbidden_kernels``, exact names or patterns such as ``aten.*softmax*``): a refusing
  implementation is registered through ``torch.library`` for each overload, at the backend keys,
  the autograd keys and the composite keys, so ``torch.softmax``, ``torch.ops.aten._softmax``,
  another thread, inference mode or a disabled dispatch mode all reach the same refusal;
- Python functions (``forbidden``): the function object's code is replaced, so every alias of it,
  whenever it was taken, refuses too; a builtin function is left to its kernel;
- packages (``forbidden_modules``): removed from ``sys.modules`` and refused on import (in the
  sandbox their files are not even there).

A refusal raises ``RuntimeError`` in the learner's code and is recorded: the probe reports it even
if the learner's code caught the exception. These checks live in the learner's own process, so
they are the second line; the sandbox and the grader's comparisons are the first.
"""

from __future__ import annotations

import fnmatch
import importlib
import sys
import types
import warnings
from typing import Any

from .tree import Tree

KEYS = ("CPU", "CUDA", "MPS", "SparseCPU", "SparseCUDA", "NestedTensorCPU", "NestedTensorCUDA", "QuantizedCPU",
        "Autograd", "CompositeImplicitAutograd")
_HOOK = "__kata_refuse__"  # the global through which a replaced function's code reaches the guard


def _template(*args, **kwargs):
    __kata_refuse__("NAME")  # noqa: F821  (a global of the function's own module, set by the guard)


def resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def kernel_overloads(patterns: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """``(namespace, "op.overload")`` for each registered operator whose ``namespace.op`` matches
    one of ``patterns`` (fnmatch); backward kernels are never matched."""
    import torch

    if not patterns:
        return []
    found = []
    for full in torch._C._dispatch_get_all_op_names():
        namespace, _, rest = full.partition("::")
        packet = rest.partition(".")[0]
        if "backward" in packet:
            continue
        if any(fnmatch.fnmatchcase(f"{namespace}.{packet}", p) for p in patterns):
            found.append((namespace, rest))
    return sorted(found)


class Guard:
    def __init__(self, exercise: str, functions=(), kernels=(), modules=(), tree: Tree | None = None):
        self.exercise, self.tree = exercise, tree
        self.functions, self.kernels, self.modules = tuple(functions), tuple(kernels), tuple(modules)
        self.violations: list[str] = []
        self._libraries: list[Any] = []
        self._codes: list[tuple[types.FunctionType, types.CodeType]] = []
        self._replaced: list[tuple[dict, str, Any]] = []
        self._finder: _RefuseImports | None = None
        self._hidden: dict[str, types.ModuleType] = {}

    # ----------------------------------------------------------------------------- refusing

    def refuse(self, what: str) -> None:
        where, frame = "", sys._getframe(1)
        while frame is not None:
            if self.tree is not None and self.tree.owns(frame.f_code.co_filename):
                line = _source_line(frame)
                where = f" at {self.tree.rel(frame.f_code.co_filename)}, line {frame.f_lineno}" + (f": {line}" if line else "")
                break
            frame = frame.f_back
        message = f"exercise {self.exercise} asks you to write this yourself, but your code called {what}{where}"
        if message not in self.violations:
            self.violations.append(message)
        raise RuntimeError(message)

    def take(self) -> list[str]:
        found, self.violations = self.violations, []
        return found

    # ----------------------------------------------------------------------------- installing

    def install(self) -> "Guard":
        if self.kernels:
            self._install_kernels()
        # With kernels refused, torch.compile could still generate its own code for them.
        functions = self.functions + (("torch.compile",) if self.kernels else ())
        for name in functions:
            fn = resolve(name)
            if not isinstance(fn, types.FunctionType):
                continue  # a builtin: its kernel is refused
            if fn.__closure__ is None:
                self._swap(fn, name)
                continue
            self._replaced += _replace_everywhere(fn, _refusing(self, name))  # a decorated function: its wrapper...
            for cell in fn.__closure__:  # ... and the function it wraps
                inner = cell.cell_contents
                if isinstance(inner, types.FunctionType) and inner.__closure__ is None and inner.__name__ == fn.__name__:
                    self._swap(inner, name)
        if self.modules:
            self._hidden = {m: sys.modules.pop(m) for m in list(sys.modules) if m.split(".")[0] in self.modules}
            self._finder = _RefuseImports(self)
            sys.meta_path.insert(0, self._finder)
        return self

    def _swap(self, fn: types.FunctionType, name: str) -> None:
        """Give ``fn`` a body that refuses: every reference to it, old or new, refuses."""
        code = _template.__code__
        code = code.replace(co_consts=tuple(name if c == "NAME" else c for c in code.co_consts),
                            co_name=fn.__code__.co_name, co_qualname=fn.__code__.co_qualname)
        fn.__globals__[_HOOK] = self.refuse
        self._codes.append((fn, fn.__code__))
        fn.__code__ = code

    def _install_kernels(self) -> None:
        import torch

        libraries: dict[str, Any] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel": the point
            for namespace, overload in kernel_overloads(self.kernels):
                lib = libraries.get(namespace)
                if lib is None:
                    lib = libraries[namespace] = torch.library.Library(namespace, "IMPL")
                refusal = _kernel_refusal(self, f"{namespace}.{overload.partition('.')[0]}")
                for key in KEYS:
                    try:
                        lib.impl(overload, refusal, key)
                    except (RuntimeError, ValueError):
                        pass  # a key this build of torch does not have
        self._libraries = list(libraries.values())

    def uninstall(self) -> None:
        """Only for in-process debug runs: a worker process keeps its refusals until it ends."""
        for lib in self._libraries:
            lib._destroy()
        self._libraries = []
        for fn, code in self._codes:
            fn.__code__ = code
        for namespace, key, value in self._replaced:
            namespace[key] = value
        self._codes, self._replaced = [], []
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        sys.modules.update(self._hidden)


def _kernel_refusal(guard: Guard, name: str):
    def refusal(*args, **kwargs):
        guard.refuse(f"the kernel {name} (behind a built-in this exercise forbids)")

    return refusal


def _refusing(guard: Guard, name: str):
    def refused(*args, **kwargs):
        guard.refuse(name)

    return refused


def _replace_everywhere(fn: Any, replacement: Any) -> list[tuple[dict, str, Any]]:
    """Put ``replacement`` wherever a loaded module holds ``fn`` as an attribute; returns what
    was replaced, as ``(namespace, key, old value)``."""
    done = []
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            if value is fn:
                namespace[key] = replacement
                done.append((namespace, key, fn))
    return done


def _source_line(frame) -> str:
    import linecache

    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"`{line}`" if line else ""


class _RefuseImports:
    """A meta-path finder that refuses the exercise's forbidden packages, under any name path."""

    def __init__(self, guard: Guard):
        self.guard = guard

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.guard.modules:
            self.guard.refuse(f"import {name}")
        return None
