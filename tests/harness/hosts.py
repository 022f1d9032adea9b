"""The processes that serve exercises: a host that forks a child per exercise, or a fresh process each.

``ForkHost`` (Linux) starts ``worker/host.py``, in the sandbox where one runs, which imports torch
once and forks one child per exercise; the grader hands each child two fresh sockets of its own,
and reads what the kernel says a child used through the host's control socket (``measure``).
``SpawnHost`` (macOS, Windows, ``KATA_WORKER_START=spawn``) starts a fresh process per exercise.
Both are made and owned by a ``runner.Runner`` (its tree, sandbox, sources and environment) and
hand back a ``channel.Session`` per exercise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import sandbox as sandboxing
from .channel import Session, WorkerLost
from .worker import processes, wire
from .worker.host import empty

HOST = Path(__file__).resolve().parent / "worker" / "host.py"
STARTUP = 180.0  # seconds a host may take to import torch on a cold, busy machine
CLOSING = 15.0  # seconds the host may take to end a session and clean up after it


def _interpreter() -> str:
    """This Python, with the directory it lies in resolved: an environment reached through a
    symlinked directory (a release's ``.nox/kata`` linked to another checkout's) is the same
    environment, and the sandbox shows it only at its real path. The file itself is left as it
    is: a virtualenv's ``python`` is a link that must keep its place in the environment."""
    exe = Path(sys.executable)
    try:
        return str(exe.parent.resolve() / exe.name)
    except OSError:
        return sys.executable


def _bytecode() -> list[str]:
    """The interpreter option that gives a worker this grade's private bytecode folder (see
    ``environment.fresh_prefix``; ``-I`` ignores PYTHONPYCACHEPREFIX): it reads no ``__pycache__``
    of the tree or of the worker's own files."""
    return ["-X", f"pycache_prefix={sys.pycache_prefix}"] if sys.pycache_prefix else []


class ForkHost:
    """A host process (in the sandbox, where there is one) that forks one child per exercise."""

    def __init__(self, runner: "runner.Runner", hide: tuple[str, ...], imports: tuple[str, ...] = ()):
        self.runner = runner
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        box = runner.sandbox
        if box is None:
            self.scratch = Path(tempfile.mkdtemp(prefix="kata-worker-"))
            host, tree, scratch = HOST, runner.tree, self.scratch
        else:
            self.scratch = None
            host = sandboxing.LIB / "harness" / "worker" / "host.py"
            tree, scratch = sandboxing.TREES / runner.tree.name, sandboxing.SCRATCH
        argv = [_interpreter(), "-I", "-B", *_bytecode(), "-u", "-X", "faulthandler", str(host), "--tree", str(tree),
                "--scratch", str(scratch), "--control", str(theirs.fileno())] + (["--sandboxed"] if box is not None else [])
        for module in imports:
            argv += ["--import", module]
        env = runner.environment(scratch)
        if box is not None:
            argv = box.command(argv, runner.tree, hide=_module_paths(hide), env=env)
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.proc = subprocess.Popen(argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.owner = os.getpid()  # the process that can wait for it (``alive``)
        theirs.close()
        self.log = bytearray()
        threading.Thread(target=self._drain_log, daemon=True).start()
        self.session: Session | None = None
        self.torch_version: str | None = None  # known once the host is ready (``wait_ready``)
        self.early: dict | None = None  # an ``ended`` that came while a ``measure`` was awaited

    def wait_ready(self) -> None:
        """Wait for the host to have imported torch (it starts importing as soon as it is made)."""
        if self.torch_version is not None:
            return
        ready = self._control_message(STARTUP)
        if ready is None or ready.get("status") != "ready":
            self.kill()
            raise WorkerLost(f"the worker did not start: {self.describe_log()}")
        self.torch_version = ready.get("torch")

    def _drain_log(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            if len(self.log) < 64 * 1024:
                self.log += line

    def describe_log(self) -> str:
        self.proc.poll()
        text = self.log.decode(errors="replace").strip()
        code = f"exit status {self.proc.returncode}" if self.proc.returncode is not None else "no answer"
        return f"{code}; it printed: {text[-1500:]}" if text else code

    def _control_message(self, timeout: float) -> dict | None:
        """The host's next message, or None when it does not come within ``timeout`` seconds, or
        sooner when a process of the sandbox is stopped (the code under test can stop its host)."""
        if self.early is not None:
            early, self.early = self.early, None
            return early
        deadline = time.monotonic() + timeout
        while True:
            self.control.settimeout(min(0.25, max(deadline - time.monotonic(), 0.001)))
            try:
                data = self.control.recv(65536)
                break
            except socket.timeout:
                if time.monotonic() >= deadline or processes.stopped(self.proc.pid):
                    return None
            except OSError:
                return None
        try:
            return json.loads(data) if data else None
        except ValueError:
            return None

    def alive(self) -> bool:
        if os.getpid() == self.owner:
            return self.proc.poll() is None
        # Adopted by a process forked from the one that started it (a grade of watch mode): not its
        # child, so poll() cannot wait for it (and would call it ended); /proc says whether it runs.
        try:
            with open(f"/proc/{self.proc.pid}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
        except (OSError, IndexError):
            return False

    def start(self, exercise: str, rules: dict, echo: bool) -> Session:
        self.wait_ready()
        ours, theirs = socket.socketpair()
        out_ours, out_theirs = socket.socketpair()
        request = {"op": "session", "exercise": exercise, "rules": rules}
        try:
            socket.send_fds(self.control, [json.dumps(request).encode()], [theirs.fileno(), out_theirs.fileno()])
        except OSError as e:
            self.kill()
            raise WorkerLost(f"the worker host is gone ({e}): {self.describe_log()}") from None
        finally:
            theirs.close()
            out_theirs.close()
        self.sockets = (ours, out_ours)
        self.session = Session(exercise, ours.makefile("rb"), ours.makefile("wb"), out_ours.recv, echo, self._lost,
                               self._ask_stack, _owned_by(self.runner, sandboxing.TREES / self.runner.tree.name
                                                          if self.runner.sandbox is not None else self.runner.tree))
        self.session.send_sources(self.runner.sources)
        return self.session

    def _ask_stack(self) -> bool:
        try:
            self.control.send(json.dumps({"op": "stack"}).encode())
            return True
        except OSError:
            return False

    def measure(self, phase: str) -> dict | None:
        """Have the host start (``phase="start"``) or end (``"end"``) measuring the session's
        child from outside it (``worker/host.py``'s ``measure``); the end returns what the kernel
        says it used. None when the host did not answer, or the child ended meanwhile."""
        try:
            self.control.send(json.dumps({"op": "measure", "phase": phase}).encode())
        except OSError:
            return None
        message = self._control_message(CLOSING)
        if message is not None and message.get("op") == "ended":
            self.early = message  # the child is gone: the session's end reads it
            return None
        return message.get("resources") if message is not None else None

    def _lost(self, kill: bool) -> int | None:
        """The session's child is gone or must go: have the host end it; returns its exit code."""
        self.session = None
        if kill:
            try:
                self.control.send(json.dumps({"op": "kill"}).encode())
            except OSError:
                pass
        ended = self._control_message(CLOSING)
        self._close_sockets()
        if ended is None or ended.get("op") != "ended":
            self.kill()  # a host that cannot end a session cannot be trusted with the next one
            return None
        return ended.get("code")

    def _close_sockets(self) -> None:
        for s in getattr(self, "sockets", ()):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.sockets = ()

    def end(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        try:
            session.proto_out.write(wire.encode({"op": "end"}))
            session.proto_out.flush()
        except OSError:
            pass
        ended = self._control_message(CLOSING)
        if ended is None or ended.get("op") != "ended":
            try:
                self.control.send(json.dumps({"op": "kill"}).encode())
            except OSError:
                pass
            ended = self._control_message(CLOSING)
            if ended is None or ended.get("op") != "ended":
                self.kill()
        self._close_sockets()

    def kill(self) -> None:
        self.session = None
        self._close_sockets()
        try:
            self.control.close()
        except OSError:
            pass
        _kill_group(self.proc)
        if self.scratch is not None:
            empty(self.scratch)
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def close(self) -> None:
        if self.alive():
            self.end()
            try:
                self.control.send(json.dumps({"op": "exit"}).encode())
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


class SpawnHost:
    """One fresh process per exercise (where fork is not safe or not there)."""

    def __init__(self, runner: "runner.Runner", hide: tuple[str, ...], imports: tuple[str, ...] = ()):
        self.runner, self.proc, self.session, self.scratch = runner, None, None, None
        self.torch_version = None

    def alive(self) -> bool:
        return True

    def wait_ready(self) -> None:
        pass

    def start(self, exercise: str, rules: dict, echo: bool) -> Session:
        self.scratch = Path(tempfile.mkdtemp(prefix="kata-worker-"))
        argv = [_interpreter(), "-I", "-B", *_bytecode(), "-u", "-X", "faulthandler", str(HOST),
                "--tree", str(self.runner.tree),
                "--scratch", str(self.scratch), "--session"]
        group = {"start_new_session": True} if os.name == "posix" else {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=self.scratch, env=self.runner.environment(self.scratch, inherit=True), **group)
        self.proc.stdin.write(wire.encode({"op": "session", "exercise": exercise, "rules": rules}))
        self.proc.stdin.flush()
        read = self.proc.stderr.read1 if hasattr(self.proc.stderr, "read1") else self.proc.stderr.read
        self.session = Session(exercise, self.proc.stdout, self.proc.stdin, read, echo, self._lost, self._ask_stack,
                               _owned_by(self.runner, self.runner.tree))
        self.session.send_sources(self.runner.sources)
        return self.session

    def measure(self, phase: str) -> dict | None:
        """As ``ForkHost.measure``, read by the grader itself from its own child's ``/proc`` on
        Linux: the same numbers, but orphans (which go to init here) are not seen. Elsewhere
        (macOS, Windows) nothing is read: the check has only what the worker measured in itself."""
        if not sys.platform.startswith("linux") or self.proc is None:
            return None if phase == "start" else {"source": None, "why": f"no /proc on {sys.platform}"}
        if phase == "start":
            self.window = processes.window_start(self.proc.pid)
            return None
        return {"source": "grader", **processes.window_end(self.proc.pid, getattr(self, "window", {}))}

    def _ask_stack(self) -> bool:
        if os.name != "posix" or self.proc is None or self.proc.poll() is not None:
            return False
        try:
            os.kill(self.proc.pid, signal.SIGUSR2)
            return True
        except OSError:
            return False

    def _lost(self, kill: bool) -> int | None:
        self.session = None
        if kill:
            self._kill()
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
            code = None
        self._clean()
        return code

    def _kill(self) -> None:
        _kill_group(self.proc)

    def _clean(self) -> None:
        if self.scratch is not None:
            empty(self.scratch)
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def end(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=CLOSING)
            except subprocess.TimeoutExpired:
                pass
            self._kill()
            self._clean()
        self.session = None

    def kill(self) -> None:
        if self.proc is not None:
            self._kill()
        self._clean()

    def close(self) -> None:
        self.end()


def _owned_by(runner: "runner.Runner", root: Path):
    """Whether a file named in a worker's stack dump is one of the tree's (as the worker sees the
    tree: ``root``): a path under it whose relative name the grader read."""
    prefix = str(Path(root).resolve()).rstrip("/") + "/"

    def owns(filename: str) -> bool:
        return filename.startswith(prefix) and filename[len(prefix):] in runner.sources

    return owns


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill a process started in a group of its own, and everything in that group."""
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _module_paths(names: tuple[str, ...]) -> list[Path]:
    """Where the packages ``names`` live (to be left out of a sandbox)."""
    import importlib.util

    out = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            continue
        if spec.submodule_search_locations:
            out += [Path(p) for p in spec.submodule_search_locations]
        elif spec.origin:
            out.append(Path(spec.origin))
    return out
