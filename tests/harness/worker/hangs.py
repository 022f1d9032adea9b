"""Where the learner's code was stuck when a check ran out of time, and not waiting on it twice.

When a probe does not return in time, the grader has the host send the child ``SIGUSR2`` before
killing it: ``faulthandler`` (registered by the trusted serving loop, ``install_dump``) writes the
Python stack of every thread to the child's output, and ``where_stuck`` reads the innermost frame
of the tree from that text. The grader then names the function that did not return (``softmax
(attention.py, line 33)``) or the module whose import did not end (``<module>``: a loop at import).

Later checks of the same exercise send those places back (``hangs`` in the request): while a
probe runs, ``tripwire`` stops any call into one of them at once with ``KnownHang``, so a function
that looped once costs each later check that calls it a moment, not the time limit, and the checks
that never call it keep their verdict. What the tree prints cannot gain it anything here: a forged
stack only names a place of its own code, and a check that meets a known hang fails.
"""

from __future__ import annotations

import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass

DUMP_SIGNAL = "SIGUSR2"
_HEADER = re.compile(r"(?:Current thread|Thread) 0x[0-9a-fA-F]+ \(most recent call first\):\n")
_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+|\?\?\?) in (?P<function>\S+)$')


@dataclass(frozen=True)
class Place:
    """A frame of the tree: the file as the worker compiled it, its line and function."""

    file: str
    line: int
    function: str

    @property
    def at_import(self) -> bool:
        return self.function == "<module>"


class KnownHang(BaseException):
    """Raised by ``tripwire`` on entering a place that did not return in an earlier check (a
    BaseException, so that the learner's ``except Exception`` does not swallow it)."""

    def __init__(self, file: str, function: str):
        super().__init__(file, function)
        self.file, self.function = file, function


def install_dump() -> None:
    """In the serving child: ``SIGUSR2`` writes every thread's stack to standard error (fd 2)."""
    import faulthandler
    import signal

    faulthandler.register(getattr(signal, DUMP_SIGNAL), all_threads=True, chain=False)


def split_dump(output: str) -> tuple[str, str]:
    """``(what the code printed, the stack dump)``. The dump is the last run of thread blocks in
    the output (the child was killed right after writing it): from the last thread header back
    over every header that only frame lines separate from the next. ``""`` when there is none."""
    found = list(_HEADER.finditer(output))
    if not found:
        return output, ""
    first = len(found) - 1
    while first > 0:
        between = output[found[first - 1].end():found[first].start()]
        if not all(_FRAME.match(line) or not line.strip() for line in between.splitlines()):
            break
        first -= 1
    start = found[first].start()
    return output[:start], output[start:]


def where_stuck(dump: str, owns) -> Place | None:
    """The innermost frame of the tree in the dump's current thread (else any thread), where
    ``owns(file)`` says a file belongs to the tree; None when no frame of the tree is there."""
    blocks = _HEADER.split(dump)[1:]
    headers = _HEADER.findall(dump)
    ordered = [b for h, b in zip(headers, blocks) if h.startswith("Current")] + \
              [b for h, b in zip(headers, blocks) if not h.startswith("Current")]
    for block in ordered:
        for line in block.splitlines():
            m = _FRAME.match(line)
            if m and owns(m["file"]):
                number = int(m["line"]) if m["line"].isdigit() else 0
                return Place(m["file"], number, m["function"])
    return None


@contextmanager
def tripwire(places):
    """While the block runs, a call into any of ``places`` (``(file, function)`` pairs) raises
    ``KnownHang`` in that frame (``sys.settrace``: one check per Python call, only while there
    are places to watch)."""
    known = {(str(f), str(n)) for f, n in places}
    if not known:
        yield
        return

    def trace(frame, event, arg):
        if event == "call":
            code = frame.f_code
            if (code.co_filename, code.co_name) in known:
                raise KnownHang(code.co_filename, code.co_name)
        return None

    global _ACTIVE
    previous, outer = sys.gettrace(), _ACTIVE
    _ACTIVE = trace
    sys.settrace(trace)
    try:
        yield
    finally:
        _ACTIVE = outer
        sys.settrace(previous)


_ACTIVE = None  # the trace function of the tripwire in force, if any


def rearm() -> None:
    """Put the tripwire back after a ``KnownHang`` (Python turns tracing off when a trace function
    raises), so that a second known place met later in the same probe is stopped too."""
    if _ACTIVE is not None:
        sys.settrace(_ACTIVE)
