"""What the grader checks about its own files and about the tree's source, without running it.

``snapshot`` hashes the grader's checkout (tests/, reference/, noxfile.py, pyproject.toml) and
the Python start-up hooks of this environment (``*.pth``, ``sitecustomize``, ``usercustomize``);
a grade whose snapshot changed while it ran is void, since the code under test could have
rewritten the tests, the expected outputs, or code that the next grading process would run.

What the tree's source may do is the allow-list's to say (``allowlist.py``, ``tests/allowlist.toml``),
on the texts ``treefiles.py`` read.
"""

from __future__ import annotations

import hashlib
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
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
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


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    out = [f"{p} was added" for p in sorted(set(after) - set(before))]
    out += [f"{p} was removed" for p in sorted(set(before) - set(after))]
    out += [f"{p} was changed" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return out
