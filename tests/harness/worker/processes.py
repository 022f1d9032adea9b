"""Processes below a process, read from Linux's /proc: found, checked for a stop, killed.

The worker's host kills what an exercise left behind, the grader what the grade left, the
watchdog what is below a grader it ends; the grader also notices a host that the code under test
stopped. Elsewhere (no /proc) these find nothing.
"""

from __future__ import annotations

import os
import signal
import time

STOPPED = ("T", "t")


def table() -> dict[int, tuple[str, int]]:
    """``pid -> (state letter, parent pid)`` for every process this one can see."""
    out = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return out
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            out[int(entry)] = (fields[0].decode(), int(fields[1]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def below(pid: int, exclude=(), procs: dict[int, tuple[str, int]] | None = None) -> list[int]:
    """The living processes below ``pid`` (children, their children, ...), minus ``exclude``."""
    procs = table() if procs is None else procs
    found, frontier = [], {pid}
    while frontier:
        frontier = {p for p, (state, parent) in procs.items()
                    if parent in frontier and state != "Z" and p not in found and p not in exclude}
        found += sorted(frontier)
    return found


def stopped(pid: int) -> bool:
    """Whether ``pid`` or a process below it is stopped (SIGSTOP, or traced)."""
    procs = table()
    return any(procs.get(p, ("?", 0))[0] in STOPPED for p in [pid, *below(pid, procs=procs)])


def kill_below(pid: int, exclude=(), reap: bool = False) -> int:
    """SIGKILL every process below ``pid`` but ``exclude``, again until none is left (orphans of a
    killed process come back to a child subreaper); with ``reap``, this process is ``pid`` and
    collects them. Returns how many were killed."""
    killed = 0
    for _ in range(1000):
        victims = below(pid, exclude)
        if not victims:
            break
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            while reap:
                try:
                    done, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if done == 0:
                    break
            if not set(victims) & set(below(pid, exclude)):
                break
            time.sleep(0.005)
    return killed
