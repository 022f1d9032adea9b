"""A record of the Python environment the grader runs in, to tell when code under test changed it.

The record lists every file of the environment (``sys.prefix``: its interpreter link, its
``site-packages`` with every ``.pth`` file and ``__pycache__``), of the package directories it adds
from elsewhere (a ``.pth`` file naming another ``site-packages``), and of the interpreter's standard
library (where ``site``, ``sitecustomize`` and the
modules every grade imports live), each with a cheap signature: size, modification and change
times, inode. A file rewritten in place changes its change time, which no user can set back.

``noxfile.py`` writes the record each time it builds or updates ``.nox/kata`` (``python
environment.py --record``). Each grade compares the environment with the record when it starts
and again when it ends; a difference voids the grade, and the grader then removes the
environment's stamp, so that the next ``nox`` session rebuilds it from scratch. In the sandbox the
environment is read-only; without it, this is what stops a tree from poisoning later grades.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import sysconfig
from pathlib import Path

RECORD_NAME = "kata-env-record.json"
STAMP_NAME = "kata-env.json"  # noxfile.py's note of what it installed; without it nox rebuilds
TAINT_NAME = "kata-env-changed.txt"  # left by a grade that saw the environment change
SKIP_STDLIB = {"site-packages", "dist-packages", "test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip"}
REBUILD = "rebuild it: `rm -rf .nox/kata`, then any nox session makes it again"


def record_path(prefix: str | Path | None = None) -> Path:
    return Path(prefix or sys.prefix) / RECORD_NAME


def _roots() -> list[tuple[Path, set[str]]]:
    """(directory, names to skip at its top) for each part of the environment."""
    prefix = Path(sys.prefix).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    roots = [(prefix, set()), (stdlib, SKIP_STDLIB)]

    def covered(p: Path) -> bool:
        for root, skip in roots:
            if p.is_relative_to(root):
                rel = p.relative_to(root).parts
                if not (rel and rel[0] in skip):
                    return True
        return False

    for entry in sys.path:  # packages added from elsewhere (a .pth file naming another site-packages)
        p = Path(entry).resolve() if entry else None
        if p is None or not p.is_dir() or covered(p) or not any(part in ("site-packages", "dist-packages") for part in p.parts):
            continue
        roots.append((p, set()))
    return roots


def signature() -> dict[str, list[int]]:
    """``path -> [size, mtime_ns, ctime_ns, inode]`` for every file of the environment."""
    out: dict[str, list[int]] = {}

    def walk(directory: str, skip: set[str]) -> None:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in skip:
                        walk(entry.path, set())
                    continue
                if entry.name in (RECORD_NAME, STAMP_NAME, TAINT_NAME):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            out[entry.path] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    for root, skip in _roots():
        walk(str(root), skip)
    return out


def changes(before: dict[str, list[int]], after: dict[str, list[int]], limit: int = 5) -> list[str]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    out = [f"{p} was added" for p in added] + [f"{p} was removed" for p in removed] + [f"{p} was changed" for p in changed]
    if len(out) > limit:
        out = out[:limit] + [f"and {len(out) - limit} more"]
    return out


def digest(files: dict[str, list[int]]) -> str:
    """One hash of a signature: equal signatures, equal digests."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(f"{path}\0{files[path]}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def write_record() -> Path:
    path = record_path()
    tmp = path.with_name(path.name + ".tmp")
    files = signature()
    # the digest first: a grade compares it alone, and reads the files only to say what changed
    tmp.write_text(json.dumps({"digest": digest(files), "python": sys.version, "files": files}), encoding="utf-8")
    tmp.replace(path)
    return path


def recorded_digest() -> str | None:
    """The record's digest, read from the start of the file (None without a record)."""
    try:
        with open(record_path(), encoding="utf-8") as f:
            head = f.read(200)
    except OSError:
        return None
    found = re.match(r'\{"digest": "([0-9a-f]{64})"', head)
    return found.group(1) if found else None


def read_record() -> dict[str, list[int]] | None:
    try:
        data = json.loads(record_path().read_text(encoding="utf-8"))
        return {str(k): list(v) for k, v in data["files"].items()}
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None


def taint(reason: str) -> None:
    """Mark the environment as changed: every later grade from it is void, and the next nox
    session rebuilds it from scratch (nox rebuilds when its stamp is gone)."""
    try:
        (Path(sys.prefix) / STAMP_NAME).unlink()
    except OSError:
        pass
    try:
        (Path(sys.prefix) / TAINT_NAME).write_text(reason + "\n", encoding="utf-8")
    except OSError:
        pass


def tainted() -> str | None:
    """Why an earlier grade marked this environment as changed, or None."""
    try:
        return (Path(sys.prefix) / TAINT_NAME).read_text(encoding="utf-8").strip() or "it changed during an earlier grade"
    except OSError:
        return None


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python environment.py --record   (writes the record of this environment)")
    sys.dont_write_bytecode = True
    print(f"recorded {len(json.loads(write_record().read_text())['files']):,} files of {sys.prefix}")
