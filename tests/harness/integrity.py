"""What the grader checks about its own files and about the tree's source, without running it.

``snapshot`` hashes the grader's checkout (tests/, reference/, noxfile.py, pyproject.toml, their
``__pycache__`` and ``.pyc`` files included) and the Python start-up hooks of this environment
(``*.pth``, ``sitecustomize``, ``usercustomize``); a grade whose snapshot changed while it ran is
void, since the code under test could have rewritten the tests, the expected outputs, or code (or
bytecode) that the next grading process would run.

``forged_bytecode`` is for a plain ``pytest`` run, which reads ``__pycache__`` beside the grader's
sources (``nox -s grade``, ``run_autograder`` and ``watch`` give each grade a private bytecode
folder, where none of the checkout's bytecode is: see ``environment.fresh_prefix``). It lists
each ``.pyc`` there whose code is not what its source compiles to. The plugin refuses to grade
when there is one, rather than voiding the grade: such a file means that the grader itself may
already run replaced code, so nothing it would conclude, a void included, can be trusted. Honest
bytecode (an earlier plain run wrote it) passes. It cannot vouch for the module that runs it:
a forged ``plugin.pyc`` would skip the check, which is why grades come through those commands.

``escape_hatches`` reads the tree's source as tokens and finds the PyTorch internals that would get
around the worker's refusal of forbidden built-ins (the dispatcher, kernel registration, PyTorch's
own decompositions, the compilers, code rewriting); ``loader_hatches`` finds ways to load code by
file path. These are a second line: the refusals live in the worker process itself.
"""

from __future__ import annotations

import hashlib
import io
import marshal
import site
import sys
import tokenize
from pathlib import Path

from .manifest import ROOT

GRADER_FILES = ("tests", "reference", "noxfile.py", "pyproject.toml")
STARTUP_HOOKS = ("sitecustomize.py", "usercustomize.py")

ESCAPES = {
    "DisableTorchFunction": "switches off torch function modes",
    "DisableTorchFunctionSubclass": "switches off torch function modes",
    "_disable_current_modes": "switches off torch dispatch modes",
    "_unset_dispatch_mode": "switches off torch dispatch modes",
    "_pop_mode": "removes torch modes",
    "_pop_mode_temporarily": "removes torch modes",
    "_pop_torch_function_stack": "removes torch function modes",
    "_set_torch_function_mode": "replaces torch function modes",
    "_len_torch_function_stack": "inspects torch function modes",
    "_get_function_stack_at": "inspects torch function modes",
    "_python_dispatch": "reaches into the grader's dispatch-mode machinery",
    "TorchFunctionMode": "installs or inspects torch function modes",
    "TorchDispatchMode": "installs or inspects torch dispatch modes",
    "_DisableTorchDispatch": "switches off torch dispatch modes",
    "_ExcludeDispatchKeyGuard": "skips dispatch keys",
    "_IncludeDispatchKeyGuard": "forces dispatch keys",
    "_AutoDispatchBelowAutograd": "skips dispatch keys",
    "_dispatch": "reaches into PyTorch's dispatcher",
    "Library": "registers or removes PyTorch kernels",
    "_destroy": "removes registered PyTorch kernels",
    "get_kernel": "reaches PyTorch's kernels directly",
    "_decomp": "runs PyTorch's own decompositions of the built-ins",
    "_refs": "runs PyTorch's own reference implementations of the built-ins",
    "_prims": "runs PyTorch's primitive decompositions",
    "_dynamo": "compiles code with TorchDynamo",
    "_inductor": "compiles code with TorchInductor",
    "__code__": "rewrites functions, the grader's included",
    "__kata_refuse__": "reaches into the grader's refusals",
    "get_objects": "searches the interpreter's objects (the grader's included)",
    "get_referrers": "searches the interpreter's objects (the grader's included)",
    "harness": "reaches into the grader's own modules",
    "kata_part": "reaches into the grader's reference parts",
    "tree_with_reference": "reaches into the grader's reference parts",
}
PREFIXES = ("kata_part", "tree_with_reference", "_dispatch")  # names that start with these count too
# Ways to load code that no import statement shows: refused for exercises that forbid built-ins or
# packages (in the sandbox a forbidden package is not even there; without it, this is the check).
LOADERS = {
    "spec_from_file_location": "loads a module from a file path",
    "SourceFileLoader": "loads a module from a file path",
    "SourcelessFileLoader": "loads compiled code from a file path",
    "ExtensionFileLoader": "loads a compiled extension from a file path",
    "module_from_spec": "builds a module by hand",
    "reload": "reloads a module (and the functions the grader refused)",
    "ctypes": "calls compiled code directly",
    "CDLL": "loads a shared library",
    "_tiktoken": "loads tiktoken's compiled core",
}


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _grader_files(root: Path):
    for name in GRADER_FILES:
        path = root / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file():  # bytecode too: a .pyc planted during a grade voids it
                    yield p


def _startup_hooks():
    dirs = set()
    for d in [*getattr(site, "getsitepackages", lambda: [])(), site.getusersitepackages(), *sys.path]:
        if d and Path(d).is_dir():
            dirs.add(Path(d).resolve())
    for d in sorted(dirs):
        try:
            for p in sorted(d.glob("*.pth")):
                yield p
        except OSError:
            continue
        for name in STARTUP_HOOKS:
            if (d / name).is_file():
                yield d / name


def snapshot(root: Path = ROOT) -> dict[str, str]:
    files = {}
    for path in _grader_files(root):
        files[path.relative_to(root).as_posix()] = _hash(path)
    for path in _startup_hooks():
        files[str(path)] = _hash(path)
    return files


def forged_bytecode(root: Path = ROOT, config=None) -> list[str]:
    """``path: why`` for each ``.pyc`` under tests/ and reference/ that this run could read and
    that is not what its source compiles to (or, for pytest's own, given its ``config``: what
    pytest's assertion rewriting makes of it), or has no source beside it. Data only: each file is
    read with ``marshal``, never run. Bytecode of other interpreters, optimisation levels or
    pytest versions is never read here, and is left alone."""
    plain = f"{sys.implementation.cache_tag}.pyc"
    rewritten = None
    if config is not None:
        from _pytest.assertion import rewrite

        rewritten = f"{rewrite.PYTEST_TAG}.pyc"
    found = []
    for name in ("tests", "reference"):
        for pyc in sorted((root / name).rglob("*.pyc")):
            stem, _, kind = pyc.name.partition(".")
            if kind not in (plain, rewritten):
                continue
            rel = pyc.relative_to(root).as_posix()
            source = pyc.parent.parent / f"{stem}.py"
            if pyc.parent.name != "__pycache__" or not source.is_file():
                found.append(f"{rel}: no source beside it")
                continue
            try:
                code = marshal.loads(pyc.read_bytes()[16:])
                if kind == plain:
                    expected = compile(source.read_bytes(), str(source), "exec", dont_inherit=True)
                else:
                    expected = rewrite._rewrite_test(source, config)[1]
                if code != expected:
                    found.append(f"{rel}: not the code of {source.name}")
            except (OSError, ValueError, EOFError, TypeError, SyntaxError) as e:
                found.append(f"{rel}: unreadable ({type(e).__name__})")
    return found


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    out = [f"{p} was added" for p in sorted(set(after) - set(before))]
    out += [f"{p} was removed" for p in sorted(set(before) - set(after))]
    out += [f"{p} was changed" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return out


_TOKENS: dict[tuple, list] = {}


def _code_tokens(tree: Path) -> list:
    """``(where, token, bare)`` for each NAME and STRING token of the tree's .py files, where is
    ``file:line`` and ``bare`` marks a string standing alone as a statement (a docstring).
    Comments are not tokens of these kinds; files that do not tokenize are skipped. Read once per
    state of the files (the checks of a grade ask for them many times)."""
    paths = sorted(p for p in tree.rglob("*.py") if "__pycache__" not in p.parts)
    key = (str(tree), tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths))
    if key not in _TOKENS:
        _TOKENS.clear()
        _TOKENS[key] = list(_read_tokens(tree, paths))
    return _TOKENS[key]


def _read_tokens(tree: Path, paths: list[Path]):
    for path in paths:
        try:
            tokens = list(tokenize.tokenize(io.BytesIO(path.read_bytes()).readline))
        except (tokenize.TokenError, SyntaxError, OSError):
            continue
        rel, prev = path.relative_to(tree.parent).as_posix(), None
        for tok in tokens:
            if tok.type in (tokenize.NAME, tokenize.STRING):
                bare = tok.type == tokenize.STRING and prev in (tokenize.INDENT, tokenize.NEWLINE, tokenize.NL, tokenize.ENCODING, None)
                yield f"{rel}:{tok.start[0]}", tok, bare
            if tok.type not in (tokenize.COMMENT, tokenize.NL):
                prev = tok.type


def escape_hatches(tree: Path) -> list[str]:
    """``file:line: NAME (what it does)`` for each escape hatch named in the tree's code.

    Names and string literals count (``getattr(torch._C, "DisableTorchFunction")``); comments
    and docstrings do not."""
    found = []
    for where, tok, bare in _code_tokens(tree):
        if bare:
            continue
        text = tok.string
        for name, what in ESCAPES.items():
            if tok.type == tokenize.NAME:
                hit = text == name or (name in PREFIXES and text.startswith(name))
            else:
                hit = name in text and (name != "harness" or "harness." in text or text.strip("'\"") == "harness")
            if hit:
                found.append(f"{where}: {name} ({what})")
    return found


def loader_hatches(tree: Path) -> list[str]:
    """``file:line: NAME (what it does)`` for each way of loading code by hand named in the tree."""
    found = []
    for where, tok, bare in _code_tokens(tree):
        if bare:
            continue
        text = tok.string if tok.type == tokenize.NAME else tok.string.strip("'\"bBrRuUfF")
        for name, what in LOADERS.items():
            if text == name or (tok.type == tokenize.STRING and name in text):
                found.append(f"{where}: {name} ({what})")
    return found


def module_uses(tree: Path, modules: tuple[str, ...] | list[str]) -> list[str]:
    """``file:line: module`` wherever the tree's code names one of ``modules``: as a name
    (``import tiktoken``, ``from tiktoken._educational import ...``) or as a string that is the
    module's dotted name (``importlib.import_module("tiktoken")``)."""
    found = []
    for where, tok, _ in _code_tokens(tree):
        text = tok.string if tok.type == tokenize.NAME else tok.string.strip("'\"bBrRuUfF")
        for module in modules:
            if text == module or (tok.type == tokenize.STRING and text.startswith(module + ".")):
                found.append(f"{where}: {module}")
    return found
