"""The worker: a host process that serves each exercise in a fresh process of its own.

Started by the grader (``hosts.py``, for ``runner.py``), inside the sandbox where there is one. Two modes:

``host.py --tree DIR --scratch DIR --control FD [--sandboxed] [--import MODULE ...]`` (Linux). The host imports torch once, then
waits on the control socket (``AF_UNIX``, ``SOCK_SEQPACKET``). For each ``session`` request it
receives two new sockets from the grader (the session's protocol and its output) and forks a
child for that exercise. The child installs the exercise's refusals, then serves probes on its
protocol socket until told to ``end``; the first message on it holds the tree's sources, the only code of
the tree the child imports (``worker/tree.py``). The host waits for the child, kills every process it left
(the host is a child subreaper, so even a process in a new session comes back to it), empties the
scratch directory, and reports ``ended`` with the exit status. The child never sees the control
socket, so nothing an exercise starts can speak for the next one.

``host.py --tree DIR --scratch DIR --session`` (elsewhere, or when forced): one session on stdin
and stdout, the learner's prints on stderr; the grader starts one such process per exercise.

Whatever the learner's code prints goes to the output stream; after each probe a marker
(``END_OF_PROBE``) tells the grader where that probe's output ends.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import stat
import sys
import time
from pathlib import Path

END_OF_PROBE = b"\n\x1ekata-end-of-probe\x1e\n"
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER = 1, 4, 24, 36
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
CAPABILITY_VERSION_3 = 0x20080522


def _prctl(option: int, value: int, arg3: int = 0) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, value, arg3, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def isolate_host() -> bool:
    """Make this process non-dumpable, before it forks any exercise (the children inherit it).

    The kernel then lets no process without ``CAP_SYS_PTRACE`` over this one open its
    ``/proc/<pid>/mem``, ``environ`` or ``maps``, attach with ptrace or use ``process_vm_writev`` on
    it, even under the same uid and without Yama; and its ``/proc`` files belong to root. The
    children hold no capabilities (``isolate_child``), so none of them can. Returns whether it holds
    (False off Linux)."""
    return _prctl(PR_SET_DUMPABLE, 0)


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63


def capabilities() -> dict[str, int]:
    """This process's capability sets, from ``/proc/self/status`` (``CapEff`` and the rest); {} elsewhere."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Cap"):
                    name, value = line.split(":")
                    out[name] = int(value, 16)
    except (OSError, ValueError):
        pass
    return out


def isolate_child() -> list[str]:
    """In the forked child, before any of the tree runs: give up every capability for good.

    The bounding and ambient sets are emptied first (that needs ``CAP_SETPCAP``, which a child
    started as root outside the sandbox still has; inside the sandbox bubblewrap has emptied
    them already), then the effective, permitted and inheritable sets, and ``no_new_privs`` is set,
    so that neither a set-uid program nor root's ``execve`` gives any back. A child with no
    ``CAP_SYS_PTRACE`` cannot reach a non-dumpable host (``isolate_host``), whatever its uid.
    Returns the sets still not empty afterwards (nothing, when all holds; everything off Linux)."""
    if not sys.platform.startswith("linux"):
        return ["not Linux"]
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(_last_capability() + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EPERM once already gone: checked below
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    libc.capset(ctypes.byref(Header(CAPABILITY_VERSION_3, 0)), ctypes.byref((Data * 2)()))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    return [name for name, value in capabilities().items() if value]


def _limit_resources() -> None:
    gib = float(os.environ.get("KATA_WORKER_MEMORY_GB", "16"))
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if gib > 0:
            limit = int(gib * (1 << 30))
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # Windows; macOS refuses RLIMIT_AS
        pass


def _breakpoint(*args, **kwargs) -> None:
    sys.stderr.write("breakpoint() is skipped while grading in a worker process: rerun with --in-process to stop in the debugger.\n")


# --------------------------------------------------------------------------- one exercise


def serve(proto_in, proto_out, request: dict) -> None:
    """One exercise: install its refusals, then answer probes until ``end`` or the end of input."""
    from harness.worker import hangs, probes, wire
    from harness.worker.guard import Guard
    from harness.worker.tree import Tree

    _limit_resources()
    hangs.install_dump()  # where the code was stuck, when the grader asks before ending a probe that ran out of time
    sys.breakpointhook = _breakpoint
    sys.stdin = open(os.devnull)
    try:  # first, the tree's sources as the grader read them: the only code of the tree imported here
        given, _ = wire.read(proto_in)
    except EOFError:
        return
    if given.get("op") != "sources" or not isinstance(given.get("sources"), dict):
        return
    key = bytes.fromhex(str(given.pop("key", "")))  # signs every reply (wire.signature); kept in this frame only
    tree = Tree(request["tree"], given["sources"])
    rules = request.get("rules", {})
    guard = Guard(request.get("exercise", "?"), rules.get("forbidden", []), rules.get("forbidden_kernels", []),
                  rules.get("forbidden_modules", []), tree).install()
    wire.write(proto_out, wire.signed(key, {"status": "ready", "pid": os.getpid()}))
    while True:
        try:
            message, arrays = wire.read(proto_in)
        except EOFError:
            return
        if message.get("op") != "probe":
            return
        reply, out = probes.run(tree, guard, message, arrays)
        reply["id"] = message.get("id")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os.write(2, END_OF_PROBE)
        try:
            wire.write(proto_out, wire.signed(key, reply, out), out)
        except wire.WireError as e:
            error = {"status": "error", "kind": "bad_output", "message": str(e), "details": "", "id": message.get("id")}
            wire.write(proto_out, wire.signed(key, error))


def _child(control: socket.socket, proto: int, output: int, request: dict) -> None:
    """In the forked child: the session's sockets only, then ``serve``."""
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        left = isolate_child()
        if left:
            os.write(output, f"kata worker: could not give up the capabilities {left}: grading stops here\n".encode())
            os._exit(70)
        control.close()
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        sock = socket.socket(fileno=proto)
        serve(sock.makefile("rb"), sock.makefile("wb"), request)
    finally:
        os._exit(0)


# --------------------------------------------------------------------------- the host


def kill_descendants() -> int:
    """Kill every process below this one (orphans come back to a subreaper); returns how many."""
    from harness.worker import processes

    return processes.kill_below(os.getpid(), reap=True)


def _mount_points() -> list[Path]:
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            return [Path(line.split()[1].replace("\\040", " ")) for line in f if len(line.split()) > 1]
    except OSError:
        return []


def empty(directory: Path) -> None:
    """Remove everything in ``directory``, whatever modes the learner's code gave it. In the
    sandbox the environment may be bound below ``/tmp`` (a checkout under /tmp): mount points, and
    the directories that lead to them, stay."""
    def retry(function, path, _exc):
        try:
            os.chmod(os.path.dirname(path), stat.S_IRWXU)
            os.chmod(path, stat.S_IRWXU)
            function(path)
        except OSError:
            pass

    mounts = [m for m in _mount_points() if m != directory and m.is_relative_to(directory)]
    try:
        entries = list(directory.iterdir()) if directory.is_dir() else []
    except OSError:
        return
    for entry in entries:
        if any(m == entry or m.is_relative_to(entry) for m in mounts):
            if not any(m == entry for m in mounts):
                empty(entry)  # a directory on the way to a mount point: empty around it
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, onerror=retry)
        else:
            try:
                entry.unlink()
            except OSError:
                pass


def measure(pid: int, request: dict, windows: dict) -> dict:
    """The grader's ``measure`` request about the child ``pid``: ``phase`` ``start`` resets its
    peak memory; ``end`` reads what it used since, and the processes it started since it was
    forked (``processes.window_end``). The child cannot touch these numbers: this process reads
    them from the kernel, and the child can neither write nor trace this one (``isolate_host``)."""
    from harness.worker import processes

    if request.get("phase") == "start":
        windows[pid] = processes.window_start(pid)
        return {"op": "measured", "phase": "start"}
    used = processes.window_end(pid, windows.pop(pid, {}), reaper=os.getpid())
    return {"op": "measured", "phase": "end", "resources": {"source": "host", **used}}


def _wait(control: socket.socket, pid: int) -> int:
    """Wait for the child to end; a ``kill`` from the grader ends it, a ``measure`` is answered
    (``measure``). Returns its wait status."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):
        handle = None
    windows: dict = {}
    while True:
        ready, _, _ = select.select([control] + ([handle] if handle is not None else []), [], [], 0.05 if handle is None else None)
        if control in ready:
            message = control.recv(65536)
            request = json.loads(message) if message else {}
            if request.get("op") == "measure":
                control.send(json.dumps(measure(pid, request, windows)).encode())
            elif request.get("op") == "stack":  # the child writes its stack to its output (worker/hangs.py)
                try:
                    os.kill(pid, signal.SIGUSR2)
                except ProcessLookupError:
                    pass
            elif not message or request.get("op") == "kill":
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if not message:  # the grader is gone
                    kill_descendants()
                    os._exit(0)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if handle is not None:
                os.close(handle)
            return status


def host(control_fd: int, tree: str, scratch: Path, sandboxed: bool, imports: list[str] = ()) -> None:
    control = socket.socket(fileno=control_fd)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    isolate_host()
    subreaper = _prctl(PR_SET_CHILD_SUBREAPER, 1)
    import importlib

    import numpy  # noqa: F401  (once, before the first fork)
    import torch

    from harness.worker import probes, processes  # noqa: F401  (all the host will run, before any exercise)

    for module in imports:  # what the exercises' checks would otherwise import in every child
        try:
            importlib.import_module(module)
        except ImportError:
            pass

    control.send(json.dumps({"status": "ready", "torch": torch.__version__, "subreaper": subreaper}).encode())
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 20, 4)
        except OSError:
            return
        if not message:
            return
        request = json.loads(message)
        if request.get("op") != "session" or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            if request.get("op") == "exit":
                return
            continue
        proto, output = fds
        os.chdir(scratch)
        pid = os.fork()
        if pid == 0:
            _child(control, proto, output, {**request, "tree": tree})
        os.close(proto)
        os.close(output)
        status = _wait(control, pid)
        leftovers = kill_descendants()
        empty(scratch)
        if sandboxed:
            empty(Path("/dev/shm"))  # the sandbox's own, in memory: nothing passes to the next exercise
        code = os.waitstatus_to_exitcode(status)
        control.send(json.dumps({"op": "ended", "code": code, "leftovers": leftovers}).encode())


def main() -> None:
    args = sys.argv[1:]
    value = lambda name: args[args.index(name) + 1]  # noqa: E731
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the directory that holds harness/
    os.environ["TMPDIR"] = value("--scratch")
    if "--control" in args:
        imports = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--import"]
        host(int(value("--control")), value("--tree"), Path(value("--scratch")), "--sandboxed" in args, imports)
        return
    # spawn mode: one session on stdin/stdout
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import threading

    parent = os.getppid()

    def watch_parent() -> None:  # exit when the grader is gone, even if the code under test loops
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch_parent, daemon=True).start()
    left = isolate_child()  # the grader, its parent, is non-dumpable (runner.py): keep it out of reach
    if left and sys.platform.startswith("linux"):
        sys.stderr.write(f"kata worker: could not give up the capabilities {left}: grading stops here\n")
        os._exit(70)
    from harness.worker import wire

    try:
        request, _ = wire.read(proto_in)
    except EOFError:
        return
    os.chdir(value("--scratch"))
    serve(proto_in, proto_out, {**request, "tree": value("--tree")})
    os._exit(0)


if __name__ == "__main__":
    main()
