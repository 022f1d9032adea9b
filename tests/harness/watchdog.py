"""A watchdog outside the grader: a grade ends, with a clear message, even if the grader cannot.

Started by the session (``session.py``) as ``python watchdog.py PID DEADLINE [REPORT]`` in a session of its own,
with a pipe on its standard input whose other end only the grader holds: when the grader exits,
normally or not, the pipe closes and the watchdog leaves. Until then it checks, four times a
second, that the grader

- is not stopped (``SIGSTOP``, say, sent by the code under test where no sandbox hides the grader
  from it) while the process that started it is running: a stop by the shell's job control
  (Ctrl-Z) stops both and is left alone;
- has not run past ``DEADLINE`` seconds.

Either way it kills the grader, writes a report that says the grade is void (when the grade was
asked for one), and says what happened on the terminal; ``nox -s grade`` then ends with a failure.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the directory that holds harness/
from harness.worker import processes  # noqa: E402


def _state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid), or None where there is no /proc entry."""
    return processes.table().get(pid)


def _void(report: str | None, reason: str) -> None:
    sys.stderr.write(f"\nGRADE VOID: {reason}\n")
    sys.stderr.flush()
    if not report:
        return
    path = Path(report)
    data = {"score": 0, "output": f"GRADE VOID: {reason}", "output_format": "text", "tests": [],
            "extra_data": {"finished": False, "void": [reason], "max_score": 0}}
    try:
        tmp = path.with_name(path.name + ".watchdog.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass


def watch(pid: int, deadline: float, report: str | None) -> None:
    end = time.monotonic() + deadline
    stopped_since = None
    gone = threading.Event()

    def wait_for_eof() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        gone.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    while not gone.wait(0.25):
        state = _state(pid)
        if state is not None and state[0] in ("T", "t"):
            parent = _state(state[1])
            job_control = parent is not None and parent[0] in ("T", "t")
            if job_control:
                stopped_since, end = None, end + 0.25  # a suspended grade is not running out of time
            elif stopped_since is None:
                stopped_since = time.monotonic()
            elif time.monotonic() - stopped_since > 1.0:
                _kill(pid)
                _void(report, "the grader was stopped by a signal from outside the grade (the code under test can "
                      "do that where no sandbox hides the grader from it); the grade was ended")
                return
        else:
            stopped_since = None
        if time.monotonic() > end:
            _kill(pid)
            _void(report, f"the grade ran past its time limit of {deadline:g} s (--grade-timeout) and was ended")
            return


def _kill(pid: int) -> None:
    """Kill the grader and, first, every process below it (where /proc tells them)."""
    processes.kill_below(pid, exclude=(os.getpid(),))
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    watch(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
    sys.stderr.flush()
    os._exit(0)  # the thread that reads standard input may still be blocked in its read
