"""How many threads torch uses, chosen from the cores that are free now (glue, not an exercise).

PyTorch starts one thread per core, as if the machine were idle. Its threads work in lock step (each
operation waits for the slowest), so on a machine where other work holds a core, a thread that
shares that core holds back all the others: on a 2-core machine with other work running, training
with 2 threads ran at a fraction of its speed with 1. ``use_threads`` is what ``train``,
``finetune``, ``sample`` and ``chat`` call first: it keeps a number the user chose (``--threads N``,
else the environment's ``OMP_NUM_THREADS``), and otherwise counts the cores this process may run
on, measures how busy they are (Linux: ``/proc/stat`` over a fifth of a second; elsewhere the
load average), and takes one thread per core that is at least half idle, at least one. It says
what it chose, and how to change it, in one line on stderr (stdout stays the job's output).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

SAMPLE_SECONDS = 0.2  # how long /proc/stat is watched
HOW_TO_CHANGE = "--threads N (or OMP_NUM_THREADS=N) to choose"


def choose_threads(cores: int, busy: float, limit: int | None = None) -> int:
    """Threads for ``cores`` cores of which ``busy`` (in cores, 0 to ``cores``) are taken by other
    work: one per core that is at least half idle (``floor(cores - busy + 0.5)``), at least 1 and
    at most ``limit`` (torch's own default, one per physical core) when it is given."""
    free = cores - min(max(busy, 0.0), cores)
    threads = math.floor(free + 0.5)
    if limit is not None:
        threads = min(threads, limit)
    return max(1, threads)


def requested_threads(flag: int | None, environ: dict | None = None) -> tuple[int, str] | None:
    """The number the user chose and where: ``--threads`` first, then ``OMP_NUM_THREADS`` (a
    positive integer; any other value is ignored, as torch ignores it); None when neither is set."""
    if flag is not None:
        return flag, f"--threads {flag}"
    value = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) >= 1:
        return int(value), f"OMP_NUM_THREADS={value}"
    return None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the system has one, no more than a
    Linux cgroup's CPU quota (a container's ``cpu.max``), else ``os.cpu_count()``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _cpu_times() -> dict[int, tuple[int, int]]:
    """Linux's per-CPU counters: cpu number -> (idle time, total time), in clock ticks."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            times[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return times


def busy_cores(seconds: float = SAMPLE_SECONDS) -> tuple[float, str]:
    """How many of this process's cores other work keeps busy, and how it was measured: the
    non-idle share of each over ``seconds`` from ``/proc/stat`` (this process sleeps meanwhile,
    so it counts only the others), else the 1-minute load average, else 0."""
    try:
        mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        before = _cpu_times()
        time.sleep(seconds)
        after = _cpu_times()
        busy = 0.0
        for cpu, (idle, total) in after.items():
            if (mine is None or cpu in mine) and cpu in before and total > before[cpu][1]:
                busy += 1.0 - (idle - before[cpu][0]) / (total - before[cpu][1])
        return busy, f"{seconds:g} s of /proc/stat"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0], "the load average"
    except (OSError, AttributeError):
        return 0.0, "no measure of load on this system"


def add_threads_option(parser) -> None:
    """The ``--threads N`` option every job shares (default: chosen by ``use_threads``)."""
    def positive(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"expected a number of threads, 1 or more, got {text!r}")
        return int(text)

    parser.add_argument("--threads", type=positive, metavar="N",
                        help="torch's threads (default: OMP_NUM_THREADS where it is set, else one per core that is "
                             "at least half idle now)")


def use_threads(flag: int | None = None, announce: bool = True) -> int:
    """Sets torch's thread count (the user's choice, else ``choose_threads`` of the cores free now)
    and, with ``announce``, says so in one line on stderr; returns the count."""
    chosen = requested_threads(flag)
    if chosen is not None:
        threads, why = chosen
        line = f"threads: {threads} ({why})"
    else:
        cores, (busy, how) = usable_cores(), busy_cores()
        threads = choose_threads(cores, busy, limit=torch.get_num_threads())
        line = (f"threads: {threads} of {cores} core(s), {busy:.1f} busy with other work ({how}); "
                f"{HOW_TO_CHANGE}")
    torch.set_num_threads(threads)
    if announce:
        print(line, file=sys.stderr, flush=True)
    return threads
