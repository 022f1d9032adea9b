"""The allow-list: what the tree's code may do, checked by the grader from the source before any of it runs.

The policy is ``tests/allowlist.toml``, beside the manifest; this module reads it and judges each Python
file of the tree with ``ast`` only: it never imports, compiles or runs the tree. ``check(sources,
exercise)`` lists the violations that cost an exercise (its module's file, every file of the tree that
file imports, transitively, and the package's ``__init__.py``); ``scan`` judges one file; each
``Violation`` names the file, the line, the code and the rule, in the learner's words.

Why a visitor of our own and not RestrictedPython: RestrictedPython compiles the code into a guarded
form whose guards (``_getattr_``, ``_write_``, ``_getiter_``...) run inside the process that runs the
code, which is exactly the process whose behaviour we may not trust; its policy is a compile-time
rewrite, not a verdict with a file, a line and a reason; and its defaults refuse honest code (every
``_name``, ``self._cache`` included, augmented assignment to attributes, ``print``) while they allow
what matters here (``torch.ops``, ``torch._C``, public modules that start processes). The rules we need
are few and about names: a focused visitor says exactly which, and costs a few milliseconds a file.

How names are judged. Every name bound by an import (``import torch as t``, ``from torch import nn``,
``from . import attention``) and every simple alias of one (``F = torch.nn.functional``) is resolved to
its dotted origin, so that ``t.ops``, ``nn.modules``, ``from sys import _getframe`` are judged as
``torch.ops``, ``torch.nn.modules``, ``sys._getframe``. A module may appear only as the base of an
attribute (``torch.tensor``): passed, returned or stored anywhere else it could be reached under a name
this scan cannot follow, so that is refused (rule ``modules``), and so is a name imported from another
file of the tree that names a module there (``from .attention import torch``: ``check`` joins the files).
Attributes that are dangerous on any object (dunders off the list, private names of other objects,
frames, code objects, modules reached as attributes) are refused whatever the base is.

Decisions, each so that honest code never meets a rule:
- ``F.softmax`` and every public torch function are allowed: an exercise's forbidden built-ins are refused
  when called, by the worker, with its own message ("exercise 01 asks you to write this yourself...").
- ``setattr`` with a computed name is allowed on a plain object (LoRA replaces children by name: it writes,
  and reads nothing); on a module or a class reached through ``type()`` it is refused. ``getattr``,
  ``hasattr`` and ``delattr`` need a name written in the code, judged like ``x.name``.
- ``threading`` is refused (no solution needs it; a thread started at import runs outside every check),
  and so are ``subprocess``, ``multiprocessing``, ``signal``, ``socket``; ``torch.distributed`` and
  ``torch.nn.parallel`` only where the manifest grants them (exercise 18).
- Private names: ``self._x``/``cls._x`` in a method (``self`` its first parameter, never rebound),
  ``super()._x``, and a tree module's own ``attention._helper``; nothing else (``torch._C``, ``x._foo``).
- A variable named like a built-in (``dir``, ``vars``, ``open``) is the learner's where Python's scoping
  makes it so; the built-in itself (``vars(x)``, ``getattr`` passed around, ``eval``) is refused.
- A string used as an annotation is judged as code (``typing.get_type_hints`` would run it).

What it does not do: follow values through data (a module stored in a list is refused, not followed),
or read strings built at run time (``getattr`` with a computed name is refused instead; a path built
from pieces is the sandbox's to stop). A ``SyntaxError`` is not a violation: the worker reports it
as the learner's error, as before.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from . import manifest

POLICY_FILE = Path(__file__).resolve().parents[1] / "allowlist.toml"
TREE_NAME = "tree"  # the name the worker imports the tree as (worker/tree.py): absolute imports of it are refused
READ_ONLY_CALLS = {"getattr": 2, "hasattr": 2, "delattr": 2, "setattr": 3}  # builtin -> arguments it takes
REFLECTION_BUILTINS = {"vars", "globals", "locals", "dir"}
CODE_BUILTINS = {"exec", "eval", "compile", "__import__", "help"}
PATH_PATTERN = re.compile(r"(^|[\s\"'=:(,]|\.\.)/+(proc|sys|dev)(/|$)")
SNIPPET = 60
SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
          ast.DictComp, ast.GeneratorExp)
CODING = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")


@dataclass(frozen=True)
class Violation:
    file: str  # path relative to the tree root, posix ("attention.py", "sub/x.py")
    line: int
    rule: str  # the rule's id in tests/allowlist.toml
    message: str  # one line in the learner's words, naming the file, the line, the code and the rule


@dataclass(frozen=True)
class Policy:
    allowed: frozenset[str]
    by_exercise: frozenset[str]
    dunder_attributes: frozenset[str]
    dunder_names: frozenset[str]
    refused_dunder_methods: frozenset[str]
    own: frozenset[str]
    sys_attributes: frozenset[str]
    os_attributes: frozenset[str]
    settable: tuple[str, ...]
    refused: dict[str, tuple[str, str]]  # dotted name or pattern -> (rule, why)
    refused_attributes: dict[str, str]  # attribute name or pattern -> rule
    rules: dict[str, str]  # rule id -> what it tells the learner


@functools.lru_cache(maxsize=None)
def policy(path: Path = POLICY_FILE) -> Policy:
    """The policy file, read once."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    names = data["names"]
    rules = dict(data["rules"])
    refused = {name: (entry["rule"], entry["why"]) for name, entry in data["refused"].items()}
    attributes = {name: rule for rule, listed in data["refused_attributes"].items() for name in listed}
    unknown = sorted(({rule for rule, _ in refused.values()} | set(attributes.values())) - set(rules))
    if unknown:
        raise ValueError(f"{path}: rule(s) {', '.join(unknown)} are used but not described in [rules]")
    return Policy(
        allowed=frozenset(data["imports"]["allowed"]), by_exercise=frozenset(data["imports"]["by_exercise"]),
        dunder_attributes=frozenset(names["dunder_attributes"]), dunder_names=frozenset(names["dunder_names"]),
        refused_dunder_methods=frozenset(names["refused_dunder_methods"]), own=frozenset(names["own"]),
        sys_attributes=frozenset(names["sys"]), os_attributes=frozenset(names["os"]),
        settable=tuple(names["settable"]), refused=refused, refused_attributes=attributes, rules=rules,
    )


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


# ---------------------------------------------------------------------------------------------------
# Judging dotted names (modules and their attributes), independent of any file


def _refused_entry(dotted: str, pol: Policy) -> tuple[str, str, str] | None:
    """(name, rule, why) of the refused entry that covers ``dotted`` (itself or a module above it)."""
    parts = dotted.split(".")
    for n in range(1, len(parts) + 1):
        prefix = ".".join(parts[:n])
        if prefix in pol.refused:
            return (prefix, *pol.refused[prefix])
        for name, (rule, why) in pol.refused.items():
            if "*" in name and fnmatch.fnmatchcase(prefix, name):
                return name, rule, why
    return None


def judge_module(module: str, allowed_imports: frozenset[str], pol: Policy) -> tuple[str, str] | None:
    """(rule, why) if ``import module`` is refused for code allowed ``allowed_imports`` beyond the base."""
    refused = _refused_entry(module, pol)
    if refused:
        return refused[1], refused[2]
    parts = module.split(".")
    if any(p.startswith("_") and not is_dunder(p) for p in parts) or (module != "__future__" and is_dunder(parts[0])):
        return "private", "is a private module"
    granted = {m for m in allowed_imports}
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in granted:
            return None
        if prefix in pol.by_exercise:
            return "imports", "is a module only the exercises that list it in the manifest's allowed_imports may import"
    if parts[0] in pol.allowed:
        return None
    return "imports", pol.rules["imports"]


def judge_chain(dotted: str, allowed_imports: frozenset[str], pol: Policy) -> tuple[str, str] | None:
    """(rule, why) if reaching ``dotted`` (a module's attribute chain such as ``torch.nn.functional.softmax``)
    is refused. The chain's module part is judged as an import; its attributes by name."""
    parts = dotted.split(".")
    refused = _refused_entry(dotted, pol)
    if refused:
        return refused[1], refused[2]
    for n in range(1, len(parts)):
        attribute = parts[n]
        rule = judge_attribute_name(attribute, pol)
        if rule:
            return rule
        if parts[0] == "sys" and n == 1 and attribute not in pol.sys_attributes:
            return "sys", pol.rules["sys"]
        if parts[0] == "os" and n == 1 and attribute not in pol.os_attributes:
            return "os", pol.rules["os"]
        prefix = ".".join(parts[:n + 1])
        if prefix in pol.by_exercise and not any(prefix == g or prefix.startswith(g + ".") for g in allowed_imports):
            return "imports", "is a module only the exercises that list it in the manifest's allowed_imports may use"
    return None


def judge_attribute_name(name: str, pol: Policy) -> tuple[str, str] | None:
    """(rule, why) if reading the attribute ``name`` of ANY object (not the learner's own) is refused."""
    if is_dunder(name):
        if name in pol.dunder_attributes:
            return None
        if name in ("__code__",):
            return "code", "reaches a function's code object"
        if name in ("__traceback__",):
            return "frames", "reaches the interpreter's frames through a traceback"
        if name == "__class__":
            return "dunder", "uses __class__ (write type(x) for an object's class)"
        return "dunder", pol.rules["dunder"]
    if name in pol.refused_attributes:
        rule = pol.refused_attributes[name]
        return rule, pol.rules[rule]
    for pattern, rule in pol.refused_attributes.items():
        if "*" in pattern and fnmatch.fnmatchcase(name, pattern):
            return rule, pol.rules[rule]
    if name.startswith("_"):
        return "private", pol.rules["private"]
    return None


# ---------------------------------------------------------------------------------------------------
# Resolving the tree's own imports


def _package_of(file: str) -> list[str]:
    """The package path of a tree file: [] for the root, ["sub"] for sub/x.py and sub/__init__.py."""
    parts = file.split("/")
    return parts[:-1]


def _resolve_relative(file: str, level: int, module: str | None) -> list[str] | None:
    """The tree module path (list of names) that a relative import names; None when it leaves the tree."""
    package = _package_of(file)
    if level - 1 > len(package):
        return None
    base = package[: len(package) - (level - 1)]
    return base + (module.split(".") if module else [])


def _files_for(path: list[str], files: set[str]) -> set[str]:
    """The tree files that importing the module ``path`` runs: its own file and every package __init__ above it."""
    found = set()
    for n in range(1, len(path)):
        init = "/".join(path[:n]) + "/__init__.py"
        if init in files:
            found.add(init)
    if path:
        for candidate in ("/".join(path) + ".py", "/".join(path) + "/__init__.py"):
            if candidate in files:
                found.add(candidate)
    return found


def _tree_import_paths(file: str, tree: ast.AST) -> Iterator[tuple[list[str], list[str]]]:
    """For each import of the tree in a file: (module path, names imported from it)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                path = _resolve_relative(file, node.level, node.module)
            elif node.module and node.module.split(".")[0] == TREE_NAME:
                path = node.module.split(".")[1:]
            else:
                continue
            if path is not None:
                yield path, [a.name for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == TREE_NAME:
                    yield alias.name.split(".")[1:], []


def tree_imports(file: str, source: str, files: set[str]) -> set[str]:
    """The tree files this file imports (relative and absolute-within-tree imports), resolved against `files`."""
    return set(_tree_imports(file, source, frozenset(files)))


@functools.lru_cache(maxsize=4096)
def _tree_imports(file: str, source: str, files: frozenset[str]) -> frozenset[str]:
    try:
        tree = ast.parse(source, filename=file)
    except (SyntaxError, ValueError):
        return set()
    found: set[str] = set()
    for path, names in _tree_import_paths(file, tree):
        found |= _files_for(path, files)
        for name in names:  # `from . import attention`, `from .sub import x`: the name may be a module
            found |= _files_for(path + [name], files)
    found.discard(file)
    return frozenset(found)


# ---------------------------------------------------------------------------------------------------
# One file


@dataclass(frozen=True)
class _Origin:
    """What a name of the file stands for: a dotted name outside the tree, or a name of a tree module."""
    dotted: str  # "torch.nn" / "math.sqrt"; for the tree: "<tree>:<module path>[:<name>]"
    is_module: bool  # bound by `import x` (certainly a module)

    @property
    def in_tree(self) -> bool:
        return self.dotted.startswith("<tree>:")


@dataclass
class FileReport:
    violations: list[Violation]
    module_names: set[str]  # names the file binds to modules (its `import`s): other files may not take them
    defined: set[str]  # names the file binds at module level itself (def, class, assignment, tree imports)
    tree_references: list[tuple[str, str, int, str]]  # (tree module path, name, line, code) it takes from the tree


class _Scanner:
    def __init__(self, file: str, source: str, allowed_imports: frozenset[str], pol: Policy):
        self.file, self.source, self.allowed, self.pol = file, source, allowed_imports, pol
        self.violations: list[Violation] = []
        self.origins: dict[str, set[_Origin]] = {}
        self.string_names: dict[str, set[str | None]] = {}  # name -> the string constants assigned to it
        self.module_names: set[str] = set()
        self.tree_references: list[tuple[str, str, int, str]] = []
        self.parents: dict[ast.AST, ast.AST] = {}
        self.rebound: set[str] = set()  # names of self.pol.own assigned somewhere in the file
        self.lines: list[str] | None = None
        self.bound: dict[ast.AST | None, set[str]] | None = None  # names bound per scope (_bindings)
        self.declared: dict[ast.AST | None, set[str]] = {}  # names declared global or nonlocal per scope
        self.deleted: set[str] = set()  # names deleted somewhere in the file
        self.class_names: set[str] | None = None  # the file's classes and their aliases (_is_class)
        self.nodes: list[ast.AST] = []

    # --- reporting

    def code(self, node: ast.AST) -> str:
        """The node's source text on one line, shortened (ast.get_source_segment splits the whole file per call)."""
        if self.lines is None:
            self.lines = self.source.splitlines(keepends=True)
        start, end = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
        text = ""
        if start is not None and end is not None and 0 < start <= end <= len(self.lines):
            chunk = self.lines[start - 1:end]
            try:  # columns are UTF-8 byte offsets
                if len(chunk) == 1:
                    chunk = [chunk[0].encode()[node.col_offset:node.end_col_offset].decode()]
                else:
                    chunk[0] = chunk[0].encode()[node.col_offset:].decode()
                    chunk[-1] = chunk[-1].encode()[:node.end_col_offset].decode()
                text = "".join(chunk)
            except (UnicodeDecodeError, TypeError):
                text = ""
        text = " ".join((text or ast.unparse(node)).split())
        return text if len(text) <= SNIPPET else text[: SNIPPET - 3] + "..."

    def report(self, node: ast.AST, rule: str, why: str | None = None, code: str | None = None) -> None:
        line = getattr(node, "lineno", 0)
        snippet = code if code is not None else self.code(node)
        why = why or self.pol.rules[rule]
        message = (f"{self.file} line {line}: `{snippet}` {why}; learner code may not "
                   f"(allow-list rule: {rule}, tests/allowlist.toml)")
        self.violations.append(Violation(self.file, line, rule, message))

    # --- first pass: what the file's names stand for

    def bind(self, name: str, origin: _Origin) -> None:
        self.origins.setdefault(name, set()).add(origin)
        if not origin.in_tree or origin.dotted.count(":") == 1:
            self.module_names.add(name)  # another file of the tree may not take it: it would escape this scan

    def collect(self, tree: ast.AST) -> None:
        self.nodes = list(ast.walk(tree))
        assignments = []
        for node in self.nodes:
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)):
                assignments.append(node)
        for node in self.nodes:
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) and node.id in self.pol.own:
                self.rebound.add(node.id)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.bind(alias.asname, _Origin(self._absolute(alias.name), True))
                        self.module_names.add(alias.asname)
                    else:
                        first = alias.name.split(".")[0]
                        self.bind(first, _Origin(self._absolute(first), True))
                        self.module_names.add(first)
            elif isinstance(node, ast.ImportFrom):
                base = self._from_base(node)
                if base is None:
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        continue
                    if base == "<tree>:":  # `from . import attention`: a module of the tree
                        dotted = f"<tree>:{alias.name}"
                    elif base.startswith("<tree>:"):  # `from .attention import softmax`
                        dotted = f"{base}:{alias.name}"
                    else:
                        dotted = f"{base}.{alias.name}"
                    self.bind(alias.asname or alias.name, _Origin(dotted, False))
        # aliases: `F = torch.nn.functional`, `(m := torch)`; repeated until nothing new is bound
        for _ in range(3):
            for node in assignments:
                targets, value = self._assignment(node)
                for target in targets:
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        self.string_names.setdefault(target, set()).add(value.value)
                    else:
                        self.string_names.setdefault(target, set()).add(None)
                    for origin in self.resolve(value):
                        self.bind(target, origin)
                        if origin.is_module or origin.in_tree:
                            self.module_names.add(target)

    @staticmethod
    def _assignment(node: ast.AST) -> tuple[list[str], ast.AST | None]:
        if isinstance(node, ast.Assign):
            return [t.id for t in node.targets if isinstance(t, ast.Name)], node.value
        if isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and isinstance(node.target, ast.Name) and node.value:
            return [node.target.id], node.value
        return [], None

    def _absolute(self, module: str) -> str:
        if module.split(".")[0] == TREE_NAME:
            return "<tree>:" + module.partition(".")[2]
        return module

    def _from_base(self, node: ast.ImportFrom) -> str | None:
        if node.level:
            path = _resolve_relative(self.file, node.level, node.module)
            return None if path is None else "<tree>:" + ".".join(path)
        return self._absolute(node.module or "")

    def resolve(self, node: ast.AST | None) -> set[_Origin]:
        """The origins an expression may stand for: a name bound by an import or alias, followed by attributes."""
        if isinstance(node, ast.Name):
            return set(self.origins.get(node.id, ()))
        if isinstance(node, ast.Attribute):
            found = set()
            for origin in self.resolve(node.value):
                if origin.in_tree:
                    sep = ":" if origin.dotted.count(":") == 1 else "."
                    found.add(_Origin(f"{origin.dotted}{sep}{node.attr}", False))
                else:
                    found.add(_Origin(f"{origin.dotted}.{node.attr}", False))
            return found
        return set()

    # --- second pass: the rules

    def run(self, tree: ast.AST) -> list[Violation]:
        self.collect(tree)
        for node in self.nodes:
            method = getattr(self, "visit_" + type(node).__name__, None)
            if method:
                method(node)
        self._annotations(tree)
        return self.violations

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._judge_import(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if is_dunder(alias.name) and alias.name not in self.pol.dunder_names:
                self.report(node, "dunder", f"imports the dunder name {alias.name}")
        if any(a.name == "*" for a in node.names):
            self.report(node, "imports", "imports every name of a module at once (name the ones the file uses)")
        if node.level:
            path = _resolve_relative(self.file, node.level, node.module)
            if path is None:
                self.report(node, "imports", "imports from outside the tree")
                return
            for alias in node.names:
                if alias.name != "*":
                    self.tree_references.append((".".join(path), alias.name, node.lineno, self.code(node)))
            return
        module = node.module or ""
        if self._judge_import(node, module):
            return
        if module.split(".")[0] == TREE_NAME:
            return
        for alias in node.names:
            if alias.name == "*":
                continue
            found = judge_chain(f"{module}.{alias.name}", self.allowed, self.pol)
            if found:
                self.report(node, found[0], found[1])

    def _judge_import(self, node: ast.AST, module: str) -> bool:
        if module.split(".")[0] == TREE_NAME:
            self.report(node, "imports", "imports the tree by the name the grader gives it (import the tree's "
                        "modules relatively: `from .attention import softmax`)")
            return True
        found = judge_module(module, self.allowed, self.pol)
        if found:
            self.report(node, found[0], found[1])
            return True
        return False

    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if is_dunder(name) and name not in self.pol.dunder_names:
            if name == "__builtins__":
                self.report(node, "internals", "reaches and replaces Python's built-in functions")
            elif name == "__import__":
                self.report(node, "code", "imports modules by a name computed at run time")
            else:
                self.report(node, "dunder", "uses a dunder name outside the short list in tests/allowlist.toml")
            return
        if name in CODE_BUILTINS and self.is_builtin(node):
            self.report(node, "code")
            return
        if name in REFLECTION_BUILTINS and self.is_builtin(node):
            self.report(node, "reflection", "reads a namespace's names as data")
            return
        parent = self.parents.get(node)
        if name in READ_ONLY_CALLS and self.is_builtin(node):
            if not (isinstance(parent, ast.Call) and parent.func is node):
                self.report(node, "reflection", f"passes the built-in {name} around as a value")
            return
        if not isinstance(node.ctx, ast.Load):
            return
        origins = self.origins.get(name, set())
        if any(o.is_module or (o.in_tree and o.dotted.count(":") == 1) for o in origins):
            if not self._module_use_allowed(node, parent):
                self.report(node, "modules", f"uses the module {name} as a value (only `{name}.<name>` is allowed)")
        for origin in origins:
            if not origin.in_tree and not (isinstance(parent, ast.Attribute) and parent.value is node):
                found = judge_chain(origin.dotted, self.allowed, self.pol)
                if found:
                    self.report(node, found[0], found[1])
        self._judge_escape(node)

    def _scope(self, node: ast.AST) -> ast.AST | None:
        """The function, lambda, comprehension, class or module whose names ``node`` is looked up in. A function's
        defaults, annotations and decorators, a class's bases and a comprehension's first iterable are evaluated
        in the enclosing scope (``def f(getattr=getattr)`` reads the built-in)."""
        child, scope = node, self.parents.get(node)
        while scope is not None:
            if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inside = child in scope.body if isinstance(scope.body, list) else child is scope.body
            elif isinstance(scope, ast.ClassDef):
                inside = child in scope.body
            elif isinstance(scope, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                inside = not (child is scope.generators[0] and self._under(node, scope.generators[0].iter))
            else:
                inside = isinstance(scope, ast.Module)
            if inside:
                return scope
            child, scope = scope, self.parents.get(scope)
        return None

    def _under(self, node: ast.AST, ancestor: ast.AST) -> bool:
        while node is not None:
            if node is ancestor:
                return True
            node = self.parents.get(node)
        return False

    def _bindings(self) -> dict[ast.AST | None, set[str]]:
        """Per scope, the names bound in it (assigned, parameters, defs, imports, loop and `as` targets)."""
        if self.bound is not None:
            return self.bound
        bound: dict[ast.AST | None, set[str]] = {}
        for node in self.nodes:
            names: list[str] = []
            scope = self._scope(node)
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                names = [node.id]
                if isinstance(node.ctx, ast.Del):
                    self.deleted.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.alias):
                names = [node.asname or node.name.split(".")[0]]
            elif isinstance(node, ast.arg):  # a parameter: bound in its function (arg -> arguments -> function)
                names, scope = [node.arg], self.parents.get(self.parents.get(node))
            elif isinstance(node, ast.ExceptHandler) and node.name:
                names = [node.name]
            elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
                names = [node.name]
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                self.declared.setdefault(scope, set()).update(node.names)
            bound.setdefault(scope, set()).update(names)
        self.bound = bound
        return bound

    def module_level_names(self) -> set[str]:
        """The names bound at module level, and those functions declare global."""
        bound = self._bindings()
        names = set().union(*(v for k, v in bound.items() if isinstance(k, ast.Module)))
        return names | set().union(*self.declared.values()) if self.declared else names

    def is_builtin(self, node: ast.Name) -> bool:
        """Whether the name ``node`` reads Python's built-in of that name (``dir`` may be the learner's variable).
        A name bound in an enclosing function is the learner's; one bound at module level is too, unless the file
        deletes it somewhere (``del dir`` brings the built-in back)."""
        name = node.id
        if name in self.origins:
            return False
        bound = self._bindings()
        if not any(name in names for names in bound.values()):
            return True
        scope, first = self._scope(node), True
        while scope is not None and not isinstance(scope, ast.Module):
            if name in self.declared.get(scope, ()):
                break  # `global dir` / `nonlocal dir`: the module's (or an outer function's) binding decides
            if name in bound.get(scope, ()) and (first or not isinstance(scope, ast.ClassDef)):
                return False
            first = False
            scope = self._scope(scope)
        module_scope = scope if scope is not None else None
        return not (name in bound.get(module_scope, ()) and name not in self.deleted)

    def _is_value_use(self, node: ast.expr) -> bool:
        """Whether an expression's value goes somewhere this scan cannot follow: anywhere but the base of an
        attribute, the function of a call, or the right side of a plain alias (``F = torch.nn.functional``)."""
        parent = self.parents.get(node)
        if not isinstance(getattr(node, "ctx", None), ast.Load):
            return False
        if isinstance(parent, ast.Attribute) and parent.value is node:
            return False
        if isinstance(parent, ast.Call) and parent.func is node:
            return False
        return not self._module_use_allowed(node, parent)

    def _judge_escape(self, node: ast.expr) -> None:
        """A torch or numpy chain passed on as a value must not hold what is refused below it (``torch.utils``
        holds ``benchmark``; ``torch.nn`` holds ``parallel``), nor be a loader whose arguments are checked."""
        if not self._is_value_use(node):
            return
        for origin in self.resolve(node):
            if origin.in_tree or origin.is_module:
                continue  # a module bound by `import` is refused as a value in visit_Name
            dotted = origin.dotted
            root, last = dotted.split(".")[0], dotted.rsplit(".", 1)[-1]
            if root in ("torch", "numpy") and last == "load":
                self.report(node, "loading", f"passes {dotted} on as a value (call it, with its safe arguments)")
                return
            below = [name for name in list(self.pol.refused) + sorted(self.pol.by_exercise)
                     if name.startswith(dotted + ".") and name not in self.allowed]
            if below:
                self.report(node, "modules", f"uses {dotted} as a value, and it holds {below[0]}, which learner "
                            "code may not use")
                return

    def _module_use_allowed(self, node: ast.Name, parent: ast.AST | None) -> bool:
        if isinstance(parent, ast.Attribute) and parent.value is node:
            return True
        if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id in READ_ONLY_CALLS \
                and parent.args and parent.args[0] is node:
            return True  # getattr(torch, "float32"): the name is judged as `torch.float32` (or refused if computed)
        targets, value = self._assignment(parent) if parent is not None else ([], None)
        if isinstance(self.parents.get(parent), ast.ClassDef):
            return False  # a class attribute is reachable as `A.t` and `self.t`: the scan could not follow it
        return value is node and bool(targets) and isinstance(parent, (ast.Assign, ast.NamedExpr, ast.AnnAssign)) \
            and all(isinstance(t, ast.Name) for t in getattr(parent, "targets", [getattr(parent, "target", None)]))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._judge_attribute(node, node.value, node.attr, store=not isinstance(node.ctx, ast.Load))
        self._judge_escape(node)

    def _judge_attribute(self, node: ast.AST, base: ast.AST, attr: str, store: bool) -> None:
        own = self._is_own(base)
        origins = self.resolve(base)
        in_tree = bool(origins) and all(o.in_tree and o.dotted.count(":") == 1 for o in origins)
        if is_dunder(attr) or not (own or in_tree):
            found = judge_attribute_name(attr, self.pol)
            if found:
                self.report(node, found[0], found[1])
                return
        for origin in origins:
            if origin.in_tree:
                if origin.dotted.count(":") == 1:  # an attribute of a tree module: `attention.softmax`
                    self.tree_references.append((origin.dotted.split(":")[1], attr, node.lineno, self.code(node)))
                continue
            dotted = f"{origin.dotted}.{attr}"
            found = judge_chain(dotted, self.allowed, self.pol)
            if found:
                self.report(node, found[0], found[1])
                return
            if store and not any(dotted.startswith(s + ".") for s in self.pol.settable):
                self.report(node, "patching", f"changes {dotted} (for every check in the process)")
                return
        if store and self._involves_type_call(base):
            self.report(node, "patching", "changes a class it reached through type() (for every check in the process)")

    def _is_own(self, base: ast.AST) -> bool:
        """Whether ``base`` is the object a method was called on: ``self``/``cls`` as the first parameter of a
        method (never rebound in the file), or ``super()`` without arguments inside a method."""
        if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
            return not base.args and not base.keywords and self._method_of(base, None) is not None
        if not isinstance(base, ast.Name) or base.id not in self.pol.own or base.id in self.origins:
            return False
        if base.id in self.rebound:
            return False
        return self._method_of(base, base.id) is not None

    def _method_of(self, node: ast.AST, name: str | None) -> ast.AST | None:
        """The method (a function directly in a class body) whose first parameter is ``name`` and whose scope
        holds ``node`` (for ``name`` None: the innermost function, if it is a method)."""
        scope = self.parents.get(node)
        while scope is not None:
            if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                args = scope.args
                names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
                names += [a.arg for a in (args.vararg, args.kwarg) if a]
                if name is None or name in names:
                    first = (args.posonlyargs + args.args)[:1]
                    is_method = isinstance(self.parents.get(scope), ast.ClassDef)
                    if is_method and (name is None or (first and first[0].arg == name)):
                        return scope
                    return None
            scope = self.parents.get(scope)
        return None

    def _is_class(self, node: ast.AST) -> bool:
        """Whether ``node`` names a class of the file (``class T``, an alias ``C = T``) or ``cls``: setattr on a
        class with a computed name could give it a method that Python or torch calls by name (__torch_function__)."""
        if not isinstance(node, ast.Name):
            return False
        if self.class_names is None:
            names = {n.name for n in self.nodes if isinstance(n, ast.ClassDef)} | {"cls"}
            for _ in range(3):
                for n in self.nodes:
                    if isinstance(n, ast.Assign) and isinstance(n.value, ast.Name) and n.value.id in names:
                        names |= {t.id for t in n.targets if isinstance(t, ast.Name)}
            self.class_names = names
        return node.id in self.class_names

    @staticmethod
    def _involves_type_call(node: ast.AST) -> bool:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id in ("type", "super"):
                return True
        return False

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "type" and self.is_builtin(func) and len(node.args) > 1:
            self.report(node, "code", "builds a class from a dictionary of names (write a class statement)")
        if isinstance(func, ast.Name) and func.id in READ_ONLY_CALLS and self.is_builtin(func):
            self._reflective_call(node, func.id)
        if isinstance(func, ast.Attribute) and func.attr in ("format", "format_map"):
            self._format_call(node, func)
        if isinstance(func, ast.Name) and func.id == "open" and self.is_builtin(func) or \
                {o.dotted for o in self.resolve(func)} & {"io.open", "io.FileIO", "os.fdopen"}:
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, int):
                self.report(node, "files", "opens a file descriptor by number (the grader's pipes among them)")
        for origin in self.resolve(func):
            root, last = origin.dotted.split(".")[0], origin.dotted.rsplit(".", 1)[-1]
            if root == "torch" and last == "load" and not self._keyword_is(node, "weights_only", True):
                self.report(node, "loading", "loads a file with pickle (pass weights_only=True)")
            if root == "numpy" and last == "load" and not self._keyword_absent_or(node, "allow_pickle", False):
                self.report(node, "loading", "loads pickled objects (leave allow_pickle False)")

    @staticmethod
    def _keyword_is(node: ast.Call, name: str, value: Any) -> bool:
        return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value
                   for k in node.keywords)

    def _keyword_absent_or(self, node: ast.Call, name: str, value: Any) -> bool:
        given = [k for k in node.keywords if k.arg == name or k.arg is None]
        return not given or self._keyword_is(node, name, value) and len(given) == 1

    def _reflective_call(self, node: ast.Call, name: str) -> None:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            self.report(node, "reflection", f"calls {name} with arguments unpacked at run time")
            return
        if len(node.args) < 2:
            return  # a TypeError at run time, the learner's to see
        attr = node.args[1]
        if not (isinstance(attr, ast.Constant) and isinstance(attr.value, str)):
            if name == "setattr" and not self.resolve(node.args[0]) and not self._involves_type_call(node.args[0]) \
                    and not self._is_class(node.args[0]):
                return  # setattr(module, name, LoRA(child)) as LoRA does: it writes, it reads nothing
            self.report(node, "reflection", f"calls {name} with a name that is not written in the code")
            return
        self._judge_attribute(node, node.args[0], attr.value, store=name in ("setattr", "delattr"))

    def _format_call(self, node: ast.Call, func: ast.Attribute) -> None:
        base = func.value
        texts: set[str | None]
        if isinstance(base, ast.Constant) and isinstance(base.value, str):
            texts = {base.value}
        elif isinstance(base, ast.Name) and base.id in self.string_names:
            texts = self.string_names[base.id]
        elif isinstance(base, ast.Name) and base.id in self.pol.own or self.resolve(base) and all(
                o.in_tree for o in self.resolve(base)):
            return  # the learner's own format method
        elif {o.dotted for o in self.resolve(base)} & {"str.format", "str.format_map"} or base is not None and \
                isinstance(base, ast.Name) and base.id == "str":
            first = node.args[0] if node.args else None
            texts = {first.value} if isinstance(first, ast.Constant) and isinstance(first.value, str) else {None}
        else:
            texts = {None}
        for text in texts:
            if text is None:
                self.report(node, "reflection", "formats with a template that is not written in the code "
                            "(write the template as a string literal, or use an f-string)")
                return
            if self._format_reaches(text):
                self.report(node, "reflection", "formats with fields that read attributes or items "
                            "(`{0.name}`, `{0[k]}`): pass the values themselves")
                return

    @staticmethod
    def _format_reaches(text: str) -> bool:
        try:
            fields = list(string.Formatter().parse(text))
        except ValueError:
            return False
        for _, field, spec, _ in fields:
            if field and ("." in field or "[" in field):
                return True
            if spec and "{" in spec and _Scanner._format_reaches(spec):
                return True
        return False

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(value, str) and not self._is_docstring(node) and PATH_PATTERN.search(value):
            self.report(node, "files")

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        if PATH_PATTERN.search(text) and not any(PATH_PATTERN.search(v.value) for v in node.values
                                                 if isinstance(v, ast.Constant) and isinstance(v.value, str)):
            self.report(node, "files")

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.Add) and not isinstance(self.parents.get(node), ast.BinOp):
            pieces = self._constant_sum(node)
            if pieces is not None and len(pieces) > 1 and PATH_PATTERN.search("".join(pieces)) \
                    and not any(PATH_PATTERN.search(p) for p in pieces):
                self.report(node, "files")

    def _constant_sum(self, node: ast.AST) -> list[str] | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self._constant_sum(node.left), self._constant_sum(node.right)
            return None if left is None or right is None else left + right
        return None

    def _is_docstring(self, node: ast.Constant) -> bool:
        return isinstance(self.parents.get(node), ast.Expr)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if node.name in self.pol.refused_dunder_methods:
            self.report(node, "internals", f"defines {node.name}, which takes over what torch, pickle or the "
                        "collector do with the object", code=f"def {node.name}")

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for statement in node.body:
            targets, _ = self._assignment(statement)
            for target in targets:
                if target in self.pol.refused_dunder_methods:
                    self.report(statement, "internals", f"defines {target}, which takes over what torch, pickle "
                                "or the collector do with the object")

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        for name in node.names:
            if is_dunder(name) and name not in self.pol.dunder_names:
                self.report(node, "dunder", "uses a dunder name outside the short list in tests/allowlist.toml")

    visit_Nonlocal = visit_Global

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        for attr in node.kwd_attrs:  # `case Foo(__dict__=d)` reads the attribute
            found = judge_attribute_name(attr, self.pol)
            if found:
                self.report(node, found[0], found[1])

    def _annotations(self, tree: ast.AST) -> None:
        """Annotations written as strings are code to typing.get_type_hints and friends: judge them as code."""
        for node in self.nodes:
            annotations: list[ast.AST | None] = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                every = args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
                annotations = [a.annotation for a in every] + [node.returns]
            elif isinstance(node, ast.AnnAssign):
                annotations = [node.annotation]
            for annotation in annotations:
                for sub in ast.walk(annotation) if annotation is not None else ():
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        self._annotation_text(sub)

    def _annotation_text(self, node: ast.Constant) -> None:
        try:
            expression = ast.parse(node.value, mode="eval")
        except (SyntaxError, ValueError):
            return
        inner = _Scanner(self.file, node.value, self.allowed, self.pol)
        inner.origins, inner.module_names = self.origins, self.module_names
        for sub in ast.walk(expression):
            for child in ast.iter_child_nodes(sub):
                inner.parents[child] = sub
        for sub in ast.walk(expression):
            method = getattr(inner, "visit_" + type(sub).__name__, None)
            if method and not isinstance(sub, ast.Constant):
                method(sub)
        for v in inner.violations:
            self.report(node, v.rule, v.message.split("` ", 1)[1].split("; learner code may not")[0])


@functools.lru_cache(maxsize=4096)
def _analyse(file: str, source: str, allowed_imports: frozenset[str]) -> FileReport | None:
    """One file's violations and the facts that `check` joins across files; None for a SyntaxError."""
    try:
        tree = ast.parse(source, filename=file)
    except (SyntaxError, ValueError):
        return None
    scanner = _Scanner(file, source, allowed_imports, policy())
    violations = scanner.run(tree)
    for number, line in enumerate(source.splitlines()[:2], 1):
        cookie = CODING.match(line)
        if cookie and cookie.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
            violations.append(Violation(file, number, "code", f"{file} line {number}: `{line.strip()[:SNIPPET]}` "
                                        "declares a source encoding other than UTF-8 (what runs would differ from "
                                        "what is read); learner code may not (allow-list rule: code, "
                                        "tests/allowlist.toml)"))
    unique = sorted(set(violations), key=lambda v: (v.line, v.rule, v.message))
    defined = scanner.module_level_names() - scanner.module_names
    return FileReport(unique, scanner.module_names, defined, scanner.tree_references)


def scan(file: str, source: str, allowed_imports: frozenset[str]) -> list[Violation]:
    """Every rule broken in one file (a SyntaxError is NOT a violation: return [] and let the import fail
    normally in the worker, so the learner sees their SyntaxError as today). ``allowed_imports``: the
    modules this file may import beyond the policy's base list (an exercise's manifest extras)."""
    report = _analyse(file, source, frozenset(allowed_imports))
    return list(report.violations) if report else []


def _module_file(path: str, files: set[str]) -> str | None:
    parts = [p for p in path.split(".") if p]
    for candidate in ("/".join(parts) + "/__init__.py", "/".join(parts) + ".py") if parts else ("__init__.py",):
        if candidate in files:
            return candidate
    return None


def reached_files(sources: dict[str, str], module: str) -> list[str]:
    """The tree files whose code runs when the worker imports ``module``: the package's __init__.py, the
    module's file and every tree file they import, transitively (sorted; the module's file need not exist)."""
    files = set(sources)
    start = [f for f in ("__init__.py", _module_file(module, files)) if f]
    start += sorted(_files_for(module.split("."), files) - set(start))
    seen: list[str] = []
    queue = list(start)
    while queue:
        file = queue.pop(0)
        if file in seen or file not in files:
            continue
        seen.append(file)
        queue.extend(sorted(tree_imports(file, sources[file], files)))
    return sorted(seen)


def check(sources: dict[str, str], exercise: "manifest.Exercise") -> list[Violation]:
    """The violations that cost `exercise`: in its module's file, in every tree file that file imports
    (transitively), and in the package's __init__.py; each file judged with that exercise's allowed
    imports (the policy's base list + the manifest's per-exercise extras)."""
    allowed = frozenset(getattr(exercise, "allowed_imports", ()) or ())
    files = set(sources)
    found: list[Violation] = []
    for file in reached_files(sources, exercise.module):
        report = _analyse(file, sources[file], allowed)
        if report is None:
            continue
        found.extend(report.violations)
        for module, name, line, code in report.tree_references:  # `from .attention import torch`
            target = _module_file(module, files)
            target_report = _analyse(target, sources[target], allowed) if target else None
            if target_report is None or _module_file(f"{module}.{name}", files) is not None:
                continue  # a file with a SyntaxError fails on import; a module of the tree is judged on its own
            if name in target_report.module_names:
                why = f"reaches {name} through {target} (import what the file needs itself)"
            elif name not in target_report.defined:  # at grade time {target} may be the grader's own module
                why = f"takes {name} from {target}, which does not define it"
            else:
                continue
            message = f"{file} line {line}: `{code}` {why}; learner code may not (allow-list rule: modules, " \
                      "tests/allowlist.toml)"
            found.append(Violation(file, line, "modules", message))
    return sorted(set(found), key=lambda v: (v.file, v.line, v.rule, v.message))
