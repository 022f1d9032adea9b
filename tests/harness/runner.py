"""The grader's side of the worker boundary: start, feed, time out and replace workers.

``Runner.probe`` sends a request and returns the worker's reply and arrays, or raises
``WorkerLost`` when the worker crashed, exited, hung past its time or sent garbage. The next
probe starts a fresh worker. Whatever the learner's code prints is read from the worker's stderr
by a thread, bounded, and handed back with the reply that followed it.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from . import wire
from .worker import END_OF_PROBE

WORKER = Path(__file__).with_name("worker.py")
KEEP = 8 * 1024  # bytes of learner output kept from the start and from the end of each probe


class WorkerLost(Exception):
    """The worker died, hung or broke the protocol; ``reason`` says which."""

    def __init__(self, reason: str, output: str = ""):
        super().__init__(reason)
        self.reason, self.output = reason, output


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

    def take(self) -> str:
        with self.lock:
            text = self.head.decode(errors="replace")
            skipped = self.total - len(self.head) - len(self.tail)
            if skipped > 0:
                text += f"\n[... {skipped:,} more bytes not shown ...]\n"
            text += self.tail.decode(errors="replace")
            self._reset()
        return text


def _pump_stderr(stream, output: _Output) -> None:
    buf = b""
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
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
            buf = buf[i + len(END_OF_PROBE) :]
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


def _describe_exit(code: int | None) -> str:
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


class Worker:
    def __init__(self, tree: Path, echo: bool = False, startup_timeout: float = 180.0):
        self.tree, self.echo = tree, echo
        self.cwd = tempfile.mkdtemp(prefix="kata-worker-")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        # Its own process group, so that whatever the code under test starts is killed with it.
        group = {"start_new_session": True} if os.name == "posix" else {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        self.proc = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", str(WORKER), str(tree)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env=env,
            **group,
        )
        self.requests = 0
        self.output = _Output(echo)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=_pump_stderr, args=(self.proc.stderr, self.output), daemon=True).start()
        threading.Thread(target=_pump_replies, args=(self.proc.stdout, self.replies), daemon=True).start()
        header, _ = self._receive(startup_timeout, "starting")
        if header.get("status") != "ready":
            self.kill()
            raise WorkerLost(f"the worker did not start: {header!r}")
        self.torch_version = header.get("torch")

    def _receive(self, timeout: float, doing: str) -> tuple[dict, list]:
        try:
            kind, payload = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise WorkerLost(f"timed out after {timeout:g} s while {doing} (an infinite loop?)", self._drain()) from None
        if kind == "reply":
            return payload
        self.kill()
        if kind == "garbage":
            raise WorkerLost(f"the worker sent something that is not a reply ({payload})", self._drain())
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        raise WorkerLost(_describe_exit(code) + f" while {doing}", self._drain())

    def _drain(self) -> str:
        self.output.ended.wait(2)
        return self.output.take()

    def request(self, header: dict, arrays: list[np.ndarray], timeout: float) -> tuple[dict, list, str]:
        self.output.ended.clear()
        self.requests += 1
        header = {**header, "id": self.requests}
        try:
            self.proc.stdin.write(wire.encode(header, arrays))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.kill()
            raise WorkerLost(_describe_exit(self.proc.poll()) + " before the probe started", self._drain()) from None
        reply, out = self._receive(timeout, f"running {header.get('target', 'a probe')}")
        if reply.get("id") != self.requests:
            self.kill()
            raise WorkerLost("the worker answered out of turn (something wrote to the grader's channel)", self._drain())
        self.output.ended.wait(2)
        return reply, out, self.output.take()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if os.name == "posix":
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and anything it started
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def close(self) -> None:
        self.kill()  # nothing of the worker's outlives the grade


class Runner:
    """One worker for the whole run, replaced when it is lost."""

    def __init__(self, tree: Path, echo: bool = False):
        self.tree, self.echo = tree, echo
        self.worker: Worker | None = None
        self.torch_version: str | None = None

    def probe(self, header: dict[str, Any], arrays: list[np.ndarray], timeout: float) -> tuple[dict, list, str]:
        if self.worker is None or not self.worker.alive():
            self.worker = Worker(self.tree, self.echo)
            self.torch_version = self.worker.torch_version
        try:
            return self.worker.request(header, arrays, timeout)
        except WorkerLost:
            self.worker = None
            raise

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None
