"""The sandbox's self-check: run inside it before a grade (``sandbox.py``), it says whether it holds.

``python -I -S -B selfcheck.py JSON`` prints one line of JSON, ``{"problems": [...]}``, and exits
0; an empty list means the sandbox holds. JSON, written by the grader from outside, names:

- ``absent``: paths of the host that must not exist here (the checkout's other folders,
  ``solutions/``, ``tests/``, ``reference/``, ``.git``, and the home directory);
- ``top``: the only names allowed at ``/`` (what the sandbox's arguments put there);
- ``host``: ``[st_dev, st_ino]`` of directories of the host (its root, the checkout) that no
  directory at ``/`` may be, nor ``/`` itself;
- ``pids``: ``[[pid, start time], ...]`` of host processes (its pid 1, the grader) that must not
  be visible here: the PID namespace is the sandbox's own;
- and the network: no interface but ``lo``.

Standard library only and nothing imported from the checkout: it runs with ``-S`` (no
``site``), in a few milliseconds.
"""

from __future__ import annotations

import json
import os
import sys


def start_time(pid: int) -> str | None:
    """Field 22 of ``/proc/PID/stat`` (when the process started, in clock ticks since boot)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def interfaces() -> list[str]:
    """The network interfaces this process's network namespace holds."""
    try:
        with open("/proc/self/net/dev", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return []
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line]


def problems(spec: dict) -> list[str]:
    out = [f"{path} is visible" for path in spec.get("absent", []) if os.path.lexists(path)]
    allowed = set(spec.get("top", []))
    out += [f"/{name} is there, which the sandbox does not make" for name in sorted(os.listdir("/"))
            if name not in allowed]
    host = {tuple(x) for x in spec.get("host", [])}
    for path in ["/", *(f"/{name}" for name in os.listdir("/"))]:
        try:
            st = os.stat(path) if not os.path.islink(path) else None
        except OSError:
            continue
        if st is not None and (st.st_dev, st.st_ino) in host:
            out.append(f"{path} is a directory of the host")
    for pid, started in spec.get("pids", []):
        if start_time(pid) == started:
            out.append(f"the host's process {pid} is visible: the PID namespace is not the sandbox's own")
    if os.getpid() > 64:
        out.append(f"this process is pid {os.getpid()}: the PID namespace is not the sandbox's own")
    extra = [name for name in interfaces() if name != "lo"]
    if extra:
        out.append(f"network interfaces {', '.join(extra)} are there")
    return out


if __name__ == "__main__":
    print(json.dumps({"problems": problems(json.loads(sys.argv[1]))}))
