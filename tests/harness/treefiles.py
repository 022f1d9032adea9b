"""The tree under test as the grader reads it: once, before any of its code runs, and never again.

``read(root)`` walks the tree without following links and returns its Python sources, the only
text the grader checks (``allowlist``) and the only code the worker imports (``worker/tree.py``
loads the package from these texts, never from the tree's files). Every other file (data, ``.so``,
``.pyc``, ``__pycache__``) is neither read nor executed.

A ``.py`` file is read only when it is a regular file of at most ``MAX_FILE`` bytes, and the
sources together may hold at most ``MAX_TOTAL`` bytes. Anything else that a module could be
imported from is refused by name, without being read: a FIFO, a socket or a device, a huge file,
and every symbolic link. Links are refused whether they leave the tree or not: no honest tree
needs one (``nox -s stubs`` writes none), and a link read once and checked could point elsewhere
by the time anything else looks. Each file is opened with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO
opens at once, a link not at all) and checked with ``fstat`` before a byte is read, so a hostile
tree costs the grader milliseconds, not the watchdog's half hour.
"""

from __future__ import annotations

import importlib.util
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

MAX_FILE = 1_000_000  # bytes in one .py file (the largest of solutions/ is about 40 kB)
MAX_TOTAL = 16_000_000  # bytes in all of them together
MAX_ENTRIES = 20_000  # directory entries walked, all folders together
SKIPPED_DIRS = ("__pycache__",)


@dataclass
class TreeFiles:
    """``sources``: relative posix path -> text of each ``.py`` file read. ``refused``: relative
    posix path -> why it was not read (``"a symbolic link"``, ...), for files and folders alike."""

    sources: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def read(root: Path) -> TreeFiles:
    """The tree's Python sources, read as regular files only (see the module's docstring)."""
    out = TreeFiles()
    budget = {"bytes": MAX_TOTAL, "entries": MAX_ENTRIES}
    _walk(Path(root), "", out, budget)
    return out


def _walk(folder: Path, prefix: str, out: TreeFiles, budget: dict) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        out.refused[prefix.rstrip("/") or "."] = f"its folder could not be listed ({e.strerror})"
        return
    for entry in entries:
        budget["entries"] -= 1
        rel = prefix + entry.name
        if budget["entries"] < 0:
            out.refused["(the tree)"] = f"it holds more than {MAX_ENTRIES:,} files and folders; none read further"
            return
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError as e:
            if entry.name.endswith(".py"):
                out.refused[rel] = f"it could not be examined ({e.strerror})"
            continue
        if stat.S_ISDIR(info.st_mode):
            if entry.name not in SKIPPED_DIRS and entry.name.isidentifier():
                _walk(Path(entry.path), rel + "/", out, budget)
            continue
        if stat.S_ISLNK(info.st_mode):
            if entry.name.endswith(".py") or entry.name.isidentifier():  # a module, or a folder of them
                out.refused[rel] = _link(entry.path)
            continue
        if not entry.name.endswith(".py"):
            continue  # data, .so, .pyc...: never read, never imported
        text, why = _read_source(entry.path, info, budget)
        if why is not None:
            out.refused[rel] = why
        else:
            out.sources[rel] = text


def _link(path: str) -> str:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return f"it is a symbolic link (to {target}); the grader reads regular files only"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _read_source(path: str, info: os.stat_result, budget: dict) -> tuple[str | None, str | None]:
    """``(text, None)``, or ``(None, why it was refused)``; reads at most ``MAX_FILE + 1`` bytes."""
    if not stat.S_ISREG(info.st_mode):
        return None, f"it is {_kind(info.st_mode)}; the grader reads regular files only"
    if info.st_size > MAX_FILE:
        return None, f"it holds {info.st_size:,} bytes; a Python file of the tree may hold at most {MAX_FILE:,}"
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        return None, f"it could not be opened ({e.strerror})"
    try:
        now = os.fstat(fd)  # what was opened, which may not be what was listed
        if not stat.S_ISREG(now.st_mode):
            return None, f"it is {_kind(now.st_mode)}; the grader reads regular files only"
        data = _read_at_most(fd, MAX_FILE + 1)
    except OSError as e:
        return None, f"it could not be read ({e.strerror})"
    finally:
        os.close(fd)
    if len(data) > MAX_FILE:
        return None, f"it holds more than {MAX_FILE:,} bytes; a Python file of the tree may hold at most {MAX_FILE:,}"
    budget["bytes"] -= len(data)
    if budget["bytes"] < 0:
        return None, f"the tree's Python files hold more than {MAX_TOTAL:,} bytes in all; the grader read no further"
    try:
        return importlib.util.decode_source(data), None  # the file's coding line, as Python itself reads it
    except (UnicodeDecodeError, SyntaxError, LookupError) as e:
        return None, f"it is not text Python can read ({type(e).__name__}: {e})"


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def costs(refused: dict[str, str], sources: dict[str, str], module: str, imports) -> list[str]:
    """``path: why`` for each refused entry that costs the exercise whose module is ``module``
    (``attention``): its own file, a file its module imports (``imports(file)`` -> the tree files
    a file imports, transitively followed here), the package's ``__init__.py``, or an entry that
    is no ``.py`` file (a linked folder, the walk cut short), which could hold any module."""
    own = f"{module}.py"
    seen, todo = set(), [own, "__init__.py"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in sources:
            todo += sorted(imports(name))
    return [f"{path}: {why}" for path, why in sorted(refused.items()) if path in seen or not path.endswith(".py")]
