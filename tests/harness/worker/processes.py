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


# ---------------------------------------------------------------------------- resources, from outside
# Read by the process that started an exercise's process (the host, or the grader where no host
# is used), never by the exercise's own process: what the kernel says it used.

SIGCHLD_BIT = 1 << 16  # bit 17 of SigIgn: SIGCHLD ignored, so that ended children leave no trace


def _status(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` as ``field -> text``; {} when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
            return {key: value.strip() for key, _, value in (line.partition(":") for line in f)}
    except OSError:
        return {}


def _kib(status: dict[str, str], field: str) -> int | None:
    try:
        return int(status[field].split()[0])
    except (KeyError, IndexError, ValueError):
        return None


def _reaped(pid: int) -> int | None:
    """What the children ``pid`` waited for cost (``cminflt + cmajflt + cutime + cstime`` of
    ``/proc/<pid>/stat``): 0 while it has reaped none since it was forked."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return sum(int(fields[i]) for i in (8, 10, 13, 14))
    except (OSError, IndexError, ValueError):
        return None


def _all_below(pid: int, procs: dict[int, tuple[str, int]]) -> list[int]:
    """Every process below ``pid``, zombies included."""
    found, frontier = [], {pid}
    while frontier:
        frontier = {p for p, (_, parent) in procs.items() if parent in frontier and p not in found}
        found += sorted(frontier)
    return found


def window_start(pid: int) -> dict:
    """Start measuring process ``pid``: its peak resident memory is reset to what it holds now
    (``5`` into ``/proc/<pid>/clear_refs``). Returns the resident memory and threads at the start."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    status = _status(pid)
    return {"reset": reset, "resident_kib": _kib(status, "VmRSS"), "threads": _kib(status, "Threads")}


def window_end(pid: int, start: dict, reaper: int | None = None) -> dict:
    """What process ``pid`` used since ``window_start`` (``start`` is what it returned), and every
    process it started since it was forked, as the kernel shows them: ``peak_growth`` (bytes its
    peak resident memory rose above its resident memory at the start; None when the peak could
    not be reset), ``threads_started`` (threads now, less those at the start), and ``processes``:
    ``below`` (live or zombie processes below it), ``orphans`` (processes, live or zombie, that
    came to ``reaper``, the child subreaper that forked it, other than ``pid`` itself),
    ``reaped`` (whether it has waited for a child: their costs are in its counters) and
    ``sigchld_ignored`` (children that end would leave no trace). ``started`` sums them up."""
    status = _status(pid)
    hwm, before = _kib(status, "VmHWM"), start.get("resident_kib")
    growth = (hwm - before) * 1024 if start.get("reset") and hwm is not None and before is not None else None
    threads, threads_before = _kib(status, "Threads"), start.get("threads")
    procs = table()
    orphans = [p for p, (_, parent) in procs.items() if reaper is not None and parent == reaper and p != pid]
    orphans += [q for p in orphans for q in _all_below(p, procs)]
    ignored = int(status.get("SigIgn", "0") or "0", 16) & SIGCHLD_BIT != 0 if status else False
    reaped = _reaped(pid)
    found = {"below": len(_all_below(pid, procs)), "orphans": len(orphans), "reaped": bool(reaped),
             "sigchld_ignored": ignored}
    return {"peak_growth": growth, "threads": threads,
            "threads_started": None if threads is None or threads_before is None else threads - threads_before,
            "processes": found, "started": any(found.values()), "readable": bool(status) and reaped is not None}
