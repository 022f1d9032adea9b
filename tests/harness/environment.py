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

Writing the record also writes, first, two things the record then covers:

- the sandbox's record (``sandbox.record()``: which ``bwrap`` this environment's grades use, and
  its sha256);
- the **bytecode mirror** ``kata-pycache``: the environment's and the standard library's own
  ``.pyc`` files, as symbolic links laid out as ``PYTHONPYCACHEPREFIX`` wants them. A grade never
  reads bytecode from the checkout: it runs with a private, fresh ``PYTHONPYCACHEPREFIX``
  (``fresh_prefix``: a new temporary folder per grade, holding only links to this mirror's folders
  of the environment and the standard library), so a ``.pyc`` planted beside the grader's sources
  or the tree's is never read, while torch and the standard library still load from bytecode
  (an empty prefix costs each process that imports torch about 3.5 s of CPU, measured). Nothing of
  the checkout is ever in the mirror: it is written only here, and grades write no bytecode.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

RECORD_NAME = "kata-env-record.json"
STAMP_NAME = "kata-env.json"  # noxfile.py's note of what it installed; without it nox rebuilds
TAINT_NAME = "kata-env-changed.txt"  # left by a grade that saw the environment change
BYTECODE_NAME = "kata-pycache"  # the mirror of the environment's bytecode, for PYTHONPYCACHEPREFIX
ROOTS_NAME = "kata-roots.json"  # in the mirror: the folders it mirrors
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


def mirror_bytecode() -> Path:
    """Write ``sys.prefix/kata-pycache``: each ``__pycache__/NAME.TAG.pyc`` of the environment and
    the standard library (this interpreter's tag only) linked (symbolically) at
    ``kata-pycache/<its source folder>/NAME.TAG.pyc``, where ``PYTHONPYCACHEPREFIX`` looks; links
    to files no longer there removed. The files themselves are left untouched."""
    mirror = Path(sys.prefix).resolve() / BYTECODE_NAME
    suffix = f".{sys.implementation.cache_tag}.pyc"
    roots = _roots()
    want: dict[str, str] = {}
    for root, skip in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            if dirpath == str(root):
                dirnames[:] = [d for d in dirnames if d not in skip]
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != str(mirror)]
            if os.path.basename(dirpath) != "__pycache__":
                continue
            source_dir = os.path.dirname(dirpath)
            for name in filenames:
                if name.endswith(suffix):
                    want[str(mirror) + source_dir + "/" + name] = os.path.join(dirpath, name)
    for dest, src in want.items():
        # A symbolic link: a hard link would change the file's own change time (every record of the
        # standard library, other environments' included, would then see it changed).
        try:
            if os.path.islink(dest) and os.readlink(dest) == src:
                continue
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = dest + ".tmp"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(src, tmp)
            os.replace(tmp, dest)
        except OSError:
            continue
    for dirpath, _, filenames in os.walk(mirror):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path not in want and path != str(mirror / ROOTS_NAME):
                os.unlink(path)
    mirror.mkdir(exist_ok=True)
    (mirror / ROOTS_NAME).write_text(json.dumps([str(root) for root, _ in roots]), encoding="utf-8")
    return mirror


def fresh_prefix(prefix: str | Path | None = None) -> Path:
    """A new temporary folder for one grade's ``PYTHONPYCACHEPREFIX``: for each folder that the
    environment ``prefix`` (default: this one) mirrors, a link to its mirror, and nothing else,
    so that bytecode of the checkout (the grader's, the tree's) is never found there. The caller
    removes it; every process that uses it must write no bytecode (``PYTHONDONTWRITEBYTECODE``)."""
    mirror = Path(prefix or sys.prefix).resolve() / BYTECODE_NAME
    top = Path(tempfile.mkdtemp(prefix="kata-pycache-"))
    try:
        roots = sorted(json.loads((mirror / ROOTS_NAME).read_text(encoding="utf-8")), key=len)
    except (OSError, ValueError, TypeError):
        roots = []
    linked: list[Path] = []
    for root in map(Path, roots):
        if not root.is_absolute() or any(root.is_relative_to(r) for r in linked):
            continue
        if not (mirror / root.relative_to("/")).is_dir():
            continue
        dest = top / root.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(mirror / root.relative_to("/"), target_is_directory=True)
        linked.append(root)
    return top


def write_record() -> Path:
    mirror_bytecode()
    _record_sandbox()
    path = record_path()
    tmp = path.with_name(path.name + ".tmp")
    files = signature()
    # the digest first: a grade compares it alone, and reads the files only to say what changed
    tmp.write_text(json.dumps({"digest": digest(files), "python": sys.version, "files": files}), encoding="utf-8")
    tmp.replace(path)
    return path


def _record_sandbox() -> None:
    """Record which bwrap this environment's grades use (``sandbox.record``), without reading
    bytecode from the checkout."""
    private = None
    if sys.pycache_prefix is None:
        private = sys.pycache_prefix = tempfile.mkdtemp(prefix="kata-pycache-")
    here = str(Path(__file__).resolve().parents[1])  # the folder that holds harness/
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        from harness import sandbox

        sandbox.record()
    finally:
        if private is not None:
            sys.pycache_prefix = None
            shutil.rmtree(private, ignore_errors=True)


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
    print(f"sandbox: {json.loads((Path(sys.prefix) / 'kata-sandbox.json').read_text()).get('path') or 'none'}")
