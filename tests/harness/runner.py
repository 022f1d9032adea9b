"""The grader's side of the worker boundary: one worker process per exercise, in a sandbox.

``Runner.probe(exercise, rules, request, arrays, timeout)`` sends a probe to the process serving
that exercise (starting it first) and returns the reply, its arrays and what the learner's code
printed, or raises ``WorkerLost`` when that process crashed, exited, hung past its time or sent
garbage. The next probe starts a fresh one.

On Linux a host process (``worker/host.py``) imports torch once and forks a child per exercise;
the grader hands each child two fresh sockets of its own (the protocol, and its output), so no
process of one exercise can speak for another, and the host kills whatever an exercise left
behind before the next one starts. Where bubblewrap runs, the host runs inside it (``sandbox.py``);
its sandbox lacks the packages the exercise's ``hidden_modules`` name (manifest.py: every package
some exercise forbids, but for those its checks need), so one host serves nearly every exercise and
the few that need such a package (tiktoken for 31) get a second one, started after the first probe.
Elsewhere (macOS, Windows, ``KATA_WORKER_START=spawn``) each exercise gets a fresh process.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import sandbox as sandboxing
from .worker import hangs, processes, wire
from .worker.host import END_OF_PROBE, empty, isolate_host

HOST = Path(__file__).resolve().parent / "worker" / "host.py"
KEEP = 8 * 1024  # bytes of learner output kept from the start and from the end of each probe
STARTUP = 180.0  # seconds a host may take to import torch on a cold, busy machine
CLOSING = 15.0  # seconds the host may take to end a session and clean up after it
PASS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LANG", "LC_ALL", "LD_LIBRARY_PATH")


class WorkerLost(Exception):
    """The worker died, hung or broke the protocol; ``reason`` says which."""

    def __init__(self, reason: str, output: str = "", timed_out: bool = False, stuck: hangs.Place | None = None,
                 crashed: bool = False):
        super().__init__(reason)
        self.reason, self.output, self.timed_out, self.crashed = reason, output, timed_out, crashed
        self.stuck = stuck  # with timed_out: the tree's innermost frame when it was stopped, if known


class _Output:
    """Learner output of the current probe: the first and last KEEP bytes, and a count."""

    def __init__(self, echo: bool):
        self.echo = echo
        self.lock = threading.Lock()
        self.ended = threading.Event()
        self._reset()

    def _reset(self) -> None:
        self.head, self.tail, self.total = bytearray(), bytearray(), 0

    def add(self, data: bytes) -> None:
        with self.lock:
            self.total += len(data)
            room = KEEP - len(self.head)
            if room > 0:
                self.head += data[:room]
                data = data[room:]
            self.tail = (self.tail + data)[-KEEP:]
        if self.echo and self.total <= 4 * KEEP:
            sys.stderr.write(data.decode(errors="replace"))

    def recent(self) -> str:
        """The last bytes received, left in place."""
        with self.lock:
            return (self.head if not self.tail else self.tail).decode(errors="replace")

    def take(self) -> str:
        with self.lock:
            text = self.head.decode(errors="replace")
            skipped = self.total - len(self.head) - len(self.tail)
            if skipped > 0:
                text += f"\n[... {skipped:,} more bytes not shown ...]\n"
            text += self.tail.decode(errors="replace")
            self._reset()
        return text


def _pump_output(read, output: _Output) -> None:
    buf = b""
    while True:
        try:
            chunk = read(65536)
        except (OSError, ValueError):
            chunk = b""
        if not chunk:
            output.add(buf)
            output.ended.set()
            return
        buf += chunk
        while True:
            i = buf.find(END_OF_PROBE)
            if i < 0:
                break
            output.add(buf[:i])
            buf = buf[i + len(END_OF_PROBE):]
            output.ended.set()
        keep = len(END_OF_PROBE) - 1  # a marker may be split across reads
        if len(buf) > keep:
            output.add(buf[:-keep])
            buf = buf[-keep:]


def _pump_replies(stream, replies: queue.Queue) -> None:
    while True:
        try:
            replies.put(("reply", wire.read(stream)))
        except EOFError:
            replies.put(("eof", None))
            return
        except (wire.WireError, OSError, ValueError) as e:
            replies.put(("garbage", str(e)))
            return


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


def _running(header: dict) -> str:
    """What a check was running, in the learner's words: ``softmax (attention.py)``."""
    if header.get("target"):
        module = header.get("module")
        return f"{header['target']} ({module}.py)" if module else str(header["target"])
    return "your code, in this check's run" if header.get("scenario") else "this check"


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the worker stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        extra = " (a segmentation fault: memory was accessed that does not exist)" if name == "SIGSEGV" else ""
        extra = " (killed, perhaps for using too much memory)" if name == "SIGKILL" else extra
        return f"the worker process was killed by {name}{extra}"
    return f"the worker process exited with code {code} (sys.exit or os._exit in the code under test?)"


class Session:
    """The process serving one exercise: requests go out, replies and printed output come back."""

    def __init__(self, exercise: str, proto_in, proto_out, output_read, echo: bool, on_lost, on_stuck=None, owns=None):
        self.exercise, self.proto_out, self.on_lost = exercise, proto_out, on_lost
        self.on_stuck = on_stuck  # asks the child to write its stack to its output (worker/hangs.py)
        self.owns = owns or (lambda filename: False)  # is a file of the dump the tree's
        self.requests = 0
        self.key = secrets.token_bytes(32)  # the worker signs its replies with it (wire.signature)
        self.output = _Output(echo)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=_pump_output, args=(output_read, self.output), daemon=True).start()
        threading.Thread(target=_pump_replies, args=(proto_in, self.replies), daemon=True).start()
        self.alive = True

    def _receive(self, timeout: float, doing: str) -> tuple[dict, list]:
        try:
            kind, payload = self.replies.get(timeout=timeout)
        except queue.Empty:
            self._ask_stack()
            self.on_lost(kill=True)
            printed, dump = hangs.split_dump(self._drain())
            raise WorkerLost(f"{doing} did not return within {timeout:g} s: an infinite loop?", printed, timed_out=True,
                             stuck=hangs.where_stuck(dump, self.owns)) from None
        if kind == "reply":
            if wire.genuine(self.key, *payload):
                payload[0].pop("mac", None)
                return payload
            self.on_lost(kill=True)
            raise WorkerLost(f"while running {doing}, a reply came back that the grader's probe did not sign: something in "
                             "the worker wrote to the grader's channel itself", self._drain())
        code = self.on_lost(kill=True)
        if kind == "garbage":
            raise WorkerLost(f"the worker sent something that is not a reply ({payload})", self._drain())
        raise WorkerLost(describe_exit(code) + f" while running {doing}", self._drain(), crashed=True)

    def _ask_stack(self, wait: float = 1.0) -> None:
        """Have the child write where it is stuck, and wait (at most ``wait`` s) for the text."""
        if self.on_stuck is None or not self.on_stuck():
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if "(most recent call first):" in self.output.recent():
                time.sleep(0.1)  # the rest of the dump
                return
            time.sleep(0.02)

    def _drain(self) -> str:
        self.alive = False
        self.output.ended.wait(2)
        return self.output.take()

    def send_sources(self, sources: dict[str, str]) -> None:
        """The tree's sources as the grader read them: the only code of the tree the worker imports."""
        try:
            self.proto_out.write(wire.encode({"op": "sources", "sources": sources, "key": self.key.hex()}))
            self.proto_out.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker is gone: ``started`` says so

    def started(self, timeout: float) -> None:
        header, _ = self._receive(timeout, "the worker's start")
        if header.get("status") != "ready":
            self.on_lost(kill=True)
            raise WorkerLost(f"the worker did not start: {str(header)[:200]}", self._drain())

    def request(self, header: dict, arrays: list[np.ndarray], timeout: float) -> tuple[dict, list, str]:
        self.output.ended.clear()
        self.requests += 1
        header = {**header, "op": "probe", "id": self.requests}
        try:
            self.proto_out.write(wire.encode(header, arrays))
            self.proto_out.flush()
        except (BrokenPipeError, OSError):
            code = self.on_lost(kill=True)
            raise WorkerLost(describe_exit(code) + " before the check started", self._drain(), crashed=True) from None
        reply, out = self._receive(timeout, _running(header))
        if reply.get("id") != self.requests:
            self.on_lost(kill=True)
            raise WorkerLost("the worker answered out of turn (something wrote to the grader's channel)", self._drain())
        self.output.ended.wait(2)
        return reply, out, self.output.take()


class _ForkHost:
    """A host process (in the sandbox, where there is one) that forks one child per exercise."""

    def __init__(self, runner: "Runner", hide: tuple[str, ...], imports: tuple[str, ...] = ()):
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


class _SpawnHost:
    """One fresh process per exercise (where fork is not safe or not there)."""

    def __init__(self, runner: "Runner", hide: tuple[str, ...], imports: tuple[str, ...] = ()):
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
        """As ``_ForkHost.measure``, read by the grader itself from its own child's ``/proc`` on
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


def _owned_by(runner: "Runner", root: Path):
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


# Hosts started before the Runner that will adopt them: by start.py before the grader imports
# torch, or by watch's warm process before each grade. Keyed by what makes two hosts alike.
_PRESTARTED: dict[tuple, "_ForkHost"] = {}


def _host_key(tree: Path, box, memory: str, hide: tuple[str, ...], imports: tuple[str, ...]) -> tuple:
    return (str(tree), box.describe() if box is not None else None, memory, hide, imports)


def _group(needs, sandboxed: bool) -> dict[tuple[str, ...], tuple[str, ...]]:
    """``(packages left out, modules to import)`` per exercise -> the hosts they call for, the one
    that serves the most exercises first. Every host imports what any exercise of the grade asks
    for: an import left to the child costs its time once per exercise, in the host once."""
    hosts: dict[tuple[str, ...], int] = {}
    every: set[str] = set()
    for hide, imports in needs:
        key = tuple(sorted(hide)) if sandboxed else ()
        hosts[key] = hosts.get(key, 0) + 1
        every.update(imports)
    order = sorted(hosts, key=lambda key: -hosts[key])
    return {key: tuple(sorted(every)) for key in order}


def prestart(tree: Path, box, needs) -> None:
    """Start, ahead of the grade, the Linux hosts a Runner for ``tree`` and ``box`` will adopt."""
    if not sys.platform.startswith("linux") or os.environ.get("KATA_WORKER_START", "fork") != "fork":
        return
    runner = Runner(tree, sandbox=box)
    memory = os.environ.get("KATA_WORKER_MEMORY_GB", "16")
    for hide, imports in list(_group(needs, box is not None).items())[:1]:  # the rest after the first probe
        key = _host_key(tree, box, memory, hide, imports)
        host = _PRESTARTED.get(key)
        if host is None or not host.alive():
            _PRESTARTED[key] = _ForkHost(runner, hide, imports)


def _adopt(key: tuple):
    """A prestarted host like ``key``'s that has imported at least ``key``'s modules, or None."""
    *alike, imports = key
    for other in list(_PRESTARTED):
        if list(other[:-1]) == alike and set(imports) <= set(other[-1]):
            return _PRESTARTED.pop(other)
    return None


@atexit.register
def _kill_prestarted() -> None:
    for host in _PRESTARTED.values():
        host.kill()
    _PRESTARTED.clear()


class Runner:
    """The worker processes of one grade, one exercise at a time."""

    def __init__(self, tree: Path, echo: bool = False, sandbox: "sandboxing.Sandbox | None" = None, start: str | None = None,
                 require_sandbox: bool = False, sources: dict[str, str] | None = None):
        self.tree, self.echo, self.sandbox, self.require_sandbox = tree, echo, sandbox, require_sandbox
        self.sources = dict(sources or {})  # the tree's .py files as the grader read them (``treefiles``)
        isolate_host()  # the grader too: without the sandbox, a worker could see it and write into it
        self.sandbox_failed: str | None = None  # why the sandbox could not start the worker, if it could not
        start = start or os.environ.get("KATA_WORKER_START") or ("fork" if sys.platform.startswith("linux") else "spawn")
        if start not in ("fork", "spawn"):
            raise ValueError(f"KATA_WORKER_START={start}: expected fork or spawn")
        if sandbox is not None:
            start = "fork"
        self.start = start
        self.hosts: dict[tuple[str, ...], Any] = {}
        self.later: dict[tuple[str, ...], tuple[str, ...]] = {}  # hosts to start once the first probe has its host
        self.current: tuple[tuple[str, ...], str] | None = None
        self.torch_version: str | None = None

    def environment(self, scratch: Path, inherit: bool = False) -> dict[str, str]:
        base = dict(os.environ) if (inherit or self.sandbox is None) else {}
        base.update({k: os.environ[k] for k in PASS_ENV if k in os.environ})
        base.update(HOME=str(scratch), TMPDIR=str(scratch), PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1",
                    KATA_WORKER_MEMORY_GB=os.environ.get("KATA_WORKER_MEMORY_GB", "16"))
        if self.sandbox is not None:
            base.setdefault("PATH", "/usr/bin:/bin")
            base.setdefault("LANG", "C.UTF-8")
        for key in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
            base.pop(key, None)
        return base

    def prepare(self, needs: list[tuple[tuple[str, ...], tuple[str, ...]]]) -> None:
        """Start the hosts that these ``(packages left out, modules to import)`` pairs, one per
        exercise, call for: the one that serves the most exercises now, the others once the first
        probe has its host (``_start_later``), so that they do not compete with the grade's start
        for the CPU. Each imports torch, and the modules the exercises need."""
        memory = os.environ.get("KATA_WORKER_MEMORY_GB", "16")
        for n, (key, imports) in enumerate(_group(needs, self.sandbox is not None).items()):
            if key in self.hosts:
                continue
            adopted = _adopt(_host_key(self.tree, self.sandbox, memory, key, imports))
            if adopted is not None and adopted.alive() and self.start == "fork":
                adopted.runner, self.hosts[key] = self, adopted
                continue
            if n > 0 and self.start == "fork":
                self.later[key] = imports
                continue
            try:
                self.hosts[key] = (_ForkHost if self.start == "fork" else _SpawnHost)(self, key, imports)
            except (OSError, WorkerLost):
                pass  # the first probe that needs it tries again, and reports

    def _host(self, hide: tuple[str, ...]):
        key = hide if self.sandbox is not None else ()
        host = self.hosts.get(key)
        if host is not None and not host.alive():
            host.kill()
            host = None
        if host is None:
            imports = self.later.pop(key, ())
            host = self.hosts[key] = (_ForkHost if self.start == "fork" else _SpawnHost)(self, key, imports)
        try:
            host.wait_ready()
        except WorkerLost as e:
            self.hosts.pop(key, None)
            if self.sandbox is None or self.require_sandbox:
                raise
            # The host imports torch and nothing of the tree: a failure here is the machine's
            # (a Python installed where the sandbox does not look, say). Grade without it, and say so.
            self.sandbox_failed = f"bubblewrap could not start the worker ({e.reason[:300]})"
            self.close()
            self.sandbox, self.start = None, ("fork" if sys.platform.startswith("linux") else "spawn")
            return self._host(hide)
        self.torch_version = host.torch_version or self.torch_version
        return host

    def _start_later(self) -> None:
        """Start the hosts ``prepare`` left for later (they import torch while the grade runs)."""
        while self.later:
            key, imports = next(iter(self.later.items()))
            del self.later[key]
            if key not in self.hosts:
                try:
                    self.hosts[key] = _ForkHost(self, key, imports)
                except (OSError, WorkerLost):
                    pass  # the first probe that needs it tries again, and reports

    def probe(self, exercise: str, rules: dict, header: dict, arrays: list[np.ndarray], timeout: float, fresh: bool = False,
              measure: bool = False) -> tuple[dict, list, str]:
        """Send one probe (see the module's docstring). ``fresh``: in a new process for the
        exercise, not the one its earlier probes ran in. ``measure``: the reply's ``resources``
        holds what the process used during this probe, read from the kernel by the process that
        started it (``_ForkHost.measure``); whatever the worker put there is dropped."""
        if fresh:
            self.end_session()
        hide = tuple(sorted(rules.get("hidden_modules", rules.get("forbidden_modules", []))))
        host = self._host(hide)
        self._start_later()
        key = (hide if self.sandbox is not None else (), exercise)
        if self.current != key or host.session is None:
            self.end_session()
            self.current = key
            host = self._host(hide)
            session = host.start(exercise, rules, self.echo)
            session.started(STARTUP)
        try:
            if measure:
                host.measure("start")
            reply, out, printed = host.session.request(header, arrays, timeout)
        except WorkerLost:
            self.current = None
            raise
        reply.pop("resources", None)
        if measure:
            reply["resources"] = host.measure("end") or {"source": None, "why": "the worker's host did not answer"}
        return reply, out, printed

    def end_session(self) -> None:
        if self.current is not None:
            host = self.hosts.get(self.current[0])
            if host is not None:
                host.end()
            self.current = None

    def close(self) -> None:
        """End every process of the grade at once: a host dies with everything below it (in the
        sandbox its PID namespace goes; without it, every child has the host as death signal)."""
        self.current = None
        self.later.clear()
        for host in self.hosts.values():
            host.kill()
        self.hosts.clear()
