"""The tree under test, imported in the worker as the package ``tree``, and its failures.

``Tree.module(name, substitute=("layers",))`` imports ``name`` from a second copy of the package
in which the listed modules are the harness's trusted reference parts (``parts.py``), so an
exercise that builds on earlier ones is graded on its own code only. ``Tree.learner_error``
turns an exception raised in the learner's code into a ``ProbeError`` whose traceback keeps the
learner's frames only.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import traceback
import types
from pathlib import Path
from typing import Any

from . import parts

TREE = "tree"  # the name the tree under test is imported as, whatever its directory is called


class ProbeError(Exception):
    """What a probe reports instead of a result. ``kind``: not_started, import, raised,
    bad_output, forbidden or harness."""

    def __init__(self, kind: str, message: str, details: str = ""):
        super().__init__(message)
        self.kind, self.message, self.details = kind, message, details


class Tree:
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
                    try:
                        setattr(package, name, parts.module(name, f"{alias}.{name}"))
                    except parts.MissingPart as e:
                        raise ProbeError("harness", str(e)) from None
            except BaseException:
                sys.modules.pop(alias, None)
                raise
            self._packages[substitute] = package
        return alias

    def module(self, name: str, substitute: tuple[str, ...] | list[str] = ()) -> types.ModuleType:
        substitute = tuple(sorted(substitute))
        if not (self.path / f"{name}.py").exists():
            raise ProbeError("import", f"{self.rel(str(self.path / (name + '.py')))} does not exist")
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
        obj: Any = self.module(module, substitute)
        for part in name.split("."):
            if not hasattr(obj, part):
                raise ProbeError("import", f"{module}.py defines no `{name}`")
            obj = getattr(obj, part)
        return obj

    def learner_error(self, e: BaseException, importing: str | None = None) -> ProbeError:
        """The learner's exception, with the traceback trimmed to frames in the tree."""
        if isinstance(e, ProbeError):
            return e
        frames = [f for f in traceback.extract_tb(e.__traceback__) if self.owns(f.filename)]
        if isinstance(e, SyntaxError) and e.filename and self.owns(e.filename):
            where = f"{Path(e.filename).name}, line {e.lineno}"
            return ProbeError("import", f"SyntaxError in {where}: {e.msg}", _syntax_details(e))
        lines = [f"  File \"{self.rel(f.filename)}\", line {f.lineno}, in {f.name}\n    {(f.line or '').strip()}" for f in frames]
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
        except (OSError, ValueError):
            return filename


def _syntax_details(e: SyntaxError) -> str:
    text = (e.text or "").rstrip("\n")
    caret = " " * max((e.offset or 1) - 1, 0) + "^" if text else ""
    return f"  File \"{Path(e.filename).name}\", line {e.lineno}\n    {text}\n    {caret}\nSyntaxError: {e.msg}"
