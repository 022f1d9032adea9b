"""The tree under test, imported in the worker as the package ``tree``, and its failures.

``Tree.module(name, substitute=("layers",))`` imports ``name`` from a second copy of the package
in which the listed modules are the harness's trusted reference parts (``parts.py``), so an
exercise that builds on earlier ones is graded on its own code only. ``Tree.learner_error``
turns an exception raised in the learner's code into a ``ProbeError`` whose traceback keeps the
learner's frames only.

The package is built from ``sources`` (relative posix path -> text), the ``.py`` files exactly as the
grader read and checked them (``harness/treefiles.py``, ``harness/allowlist.py``), by a meta-path
finder of its own (``_SourceFinder``): the import system opens no file of the tree, so no bytecode
(``__pycache__``, a ``.pyc`` of any invalidation mode), no extension module (``.so``) and no file
changed after the grader read it can run; a module not in ``sources`` does not exist. Each module
keeps its ``__file__`` (the path in the tree), and its text is registered with ``linecache`` so
that tracebacks show the learner's lines.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import linecache
import sys
import traceback
import types
from pathlib import Path
from typing import Any

from . import parts
from .hangs import KnownHang, rearm

TREE = "tree"  # the name the tree under test is imported as, whatever its directory is called


class ProbeError(Exception):
    """What a probe reports instead of a result. ``kind``: not_started, import, raised,
    bad_output, forbidden or harness."""

    def __init__(self, kind: str, message: str, details: str = ""):
        super().__init__(message)
        self.kind, self.message, self.details = kind, message, details


def _is_tree_name(name: str) -> bool:
    top = name.partition(".")[0]
    return top == TREE or top.startswith(TREE + "_with_reference_")


class _SourceFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads every module of the package ``tree`` (and its ``tree_with_reference_*``
    copies) from the grader's texts; any other name is left to the rest of ``sys.meta_path``."""

    def __init__(self):
        self.tree: Tree | None = None

    def _locate(self, name: str) -> tuple[str | None, bool]:
        """``(relative path of the module's source or None, is a package)``; raises
        ModuleNotFoundError for a name under the tree that no source holds."""
        parts = name.split(".")[1:]
        base = "/".join(parts)
        sources = self.tree.sources
        if not parts:
            return ("__init__.py" if "__init__.py" in sources else None), True
        if f"{base}.py" in sources:
            return f"{base}.py", False
        if f"{base}/__init__.py" in sources:
            return f"{base}/__init__.py", True
        if any(p.startswith(base + "/") for p in sources):
            return None, True  # a folder of modules without __init__.py (a namespace package)
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    def find_spec(self, name, path=None, target=None):
        if not _is_tree_name(name):
            return None
        if self.tree is None:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        rel, package = self._locate(name)
        origin = str(self.tree.path / rel) if rel is not None else None
        loader = self if rel is not None else None
        spec = importlib.machinery.ModuleSpec(name, loader, origin=origin, is_package=package)
        if package:
            # where the modules are, as today: __path__ is only ever searched by this finder
            folder = self.tree.path.joinpath(*name.split(".")[1:])
            spec.submodule_search_locations = [str(folder)]
        spec.has_location = rel is not None
        if rel is not None:
            spec.loader_state = rel
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        rel = module.__spec__.loader_state
        filename = module.__spec__.origin
        source = self.tree.sources[rel]
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        code = compile(source, filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, name: str) -> str | None:
        rel, _ = self._locate(name)
        return self.tree.sources.get(rel) if rel is not None else None


_FINDER = _SourceFinder()  # one per process, serving the tree made or used last


class Tree:
    def __init__(self, path: str | Path, sources: dict[str, str]):
        self.path = Path(path).resolve()
        self.sources = {str(k): str(v) for k, v in sources.items()}
        self._packages: dict[tuple[str, ...], types.ModuleType] = {}
        # modules of other exercises that a reference part may stand in for when importing them
        # fails (set per probe from the request's ``fallback``): see ``module``
        self.fallback: frozenset[str] = frozenset()
        self._activate()

    def _activate(self) -> None:
        """Make this tree the one ``import tree...`` finds in this process (with ``--in-process``
        and in the harness's tests, one process may import several trees, one after another)."""
        if _FINDER.tree is self and _FINDER in sys.meta_path:
            return
        for name in [m for m in sys.modules if _is_tree_name(m)]:
            del sys.modules[name]  # another tree imported in this process before
        if _FINDER.tree is not None:
            _FINDER.tree._packages.clear()
        _FINDER.tree = self
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)

    def _alias(self, substitute: tuple[str, ...]) -> str:
        return TREE if not substitute else f"{TREE}_with_reference_{'_'.join(substitute)}"

    def _load_package(self, substitute: tuple[str, ...] = ()) -> str:
        alias = self._alias(substitute)
        if substitute not in self._packages:
            spec = _FINDER.find_spec(alias)
            package = importlib.util.module_from_spec(spec)
            sys.modules[alias] = package
            try:
                if spec.loader is not None:
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
        """The tree's module ``name``, with the modules in ``substitute`` replaced by reference
        parts. When importing it fails in another module that ``fallback`` lists (a SyntaxError
        there, a name it lacks, an exception or a known loop in its top-level code), it is imported
        again with that module's part instead: a module another exercise owns costs this one
        nothing. The learner's own error is reported if that does not import either."""
        substitute = tuple(sorted(substitute))
        if f"{name}.py" not in self.sources:
            raise ProbeError("import", f"{self.rel(str(self.path / (name + '.py')))} does not exist")
        self._activate()
        try:
            alias = self._load_package(substitute)
            return importlib.import_module(f"{alias}.{name}")
        except ProbeError:
            raise
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            if isinstance(e, KnownHang):
                rearm()
            culprit = self.culprit(e)
            if culprit is not None and culprit != name and culprit in self.fallback and culprit not in substitute:
                try:
                    return self.module(name, substitute + (culprit,))
                except ProbeError:
                    pass
            raise self.learner_error(e, importing=name) from None

    def culprit(self, e: BaseException) -> str | None:
        """The tree's module whose import raised ``e``: the file of a SyntaxError or of a known
        loop, the module an ImportError names, else the innermost top-level frame of the tree."""
        if isinstance(e, SyntaxError) and self.owns(e.filename):
            return self.module_name(e.filename)
        if isinstance(e, KnownHang):
            return self.module_name(e.file) if self.owns(e.file) else None
        if isinstance(e, ImportError) and e.name and _is_tree_name(e.name) and "." in e.name:
            return e.name.partition(".")[2]
        for frame in reversed(traceback.extract_tb(e.__traceback__)):
            if frame.name == "<module>" and self.owns(frame.filename):
                return self.module_name(frame.filename)
        return None

    def module_name(self, filename: str) -> str | None:
        """``attention`` for the tree's ``attention.py``, ``pkg.x`` for ``pkg/x.py``."""
        try:
            rel = Path(filename).resolve().relative_to(self.path)
        except (OSError, ValueError):
            return None
        parts_ = rel.with_suffix("").parts
        return ".".join(parts_[:-1] if parts_[-1] == "__init__" else parts_) or None

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
        if isinstance(e, KnownHang):
            rel = self.rel(e.file) if self.owns(e.file) else e.file
            what = f"importing {Path(e.file).name}" if e.function == "<module>" else f"{e.function} ({Path(e.file).name})"
            return ProbeError("hang", f"{what} did not end in an earlier check of this exercise: not run again",
                              json_place(rel, e.function))
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


def json_place(rel: str, function: str) -> str:
    """A known hang's place, as the details of its ``hang`` reply: ``rel::function``."""
    return f"{rel}::{function}"
