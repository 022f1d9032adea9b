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

What the tree's source may do is the allow-list's to say (``allowlist.py``, ``tests/allowlist.toml``),
on the texts ``treefiles.py`` read.
"""

from __future__ import annotations

import hashlib
import marshal
import site
import sys
from pathlib import Path

from .manifest import ROOT

GRADER_FILES = ("tests", "reference", "noxfile.py", "pyproject.toml")
STARTUP_HOOKS = ("sitecustomize.py", "usercustomize.py")


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
