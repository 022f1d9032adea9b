"""The channel to the process serving one exercise: requests out, replies and printed output back.

A ``Session`` writes each probe's request in the one encoding (``worker/wire.py``), checks that the
reply is signed with the session's key and answers this request, keeps the first and last
``KEEP`` bytes of what the learner's code printed, and turns a worker that died, hung or broke
the protocol into ``WorkerLost``, with the reason in the learner's words (``describe_exit``).
The hosts (``hosts.py``) make sessions; ``runner.py`` uses them.
"""

from __future__ import annotations

import queue
import secrets
import signal
import sys
import threading
import time

import numpy as np

from .worker import hangs, wire
from .worker.host import END_OF_PROBE

KEEP = 8 * 1024  # bytes of learner output kept from the start and from the end of each probe


class WorkerLost(Exception):
    """The worker died, hung or broke the protocol; ``reason`` says which."""

    def __init__(self, reason: str, output: str = "", timed_out: bool = False, stuck: hangs.Place | None = None,
                 crashed: bool = False):
        super().__init__(reason)
        self.reason, self.output, self.timed_out, self.crashed = reason, output, timed_out, crashed
        self.stuck = stuck  # with timed_out: the tree's innermost frame when it was stopped, if known


class Output:
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


def pump_output(read, output: Output) -> None:
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


def pump_replies(stream, replies: queue.Queue) -> None:
    while True:
        try:
            replies.put(("reply", wire.read(stream)))
        except EOFError:
            replies.put(("eof", None))
            return
        except (wire.WireError, OSError, ValueError) as e:
            replies.put(("garbage", str(e)))
            return


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
        self.output = Output(echo)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=pump_output, args=(output_read, self.output), daemon=True).start()
        threading.Thread(target=pump_replies, args=(proto_in, self.replies), daemon=True).start()
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
