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

The parts: ``channel.py`` (a ``Session``: the requests, replies and output of one exercise's
process, and ``WorkerLost``), ``hosts.py`` (the processes that serve exercises); here, the hosts
started ahead of the grade (``prestart``) and the ``Runner`` that chooses, starts and ends them.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import sandbox as sandboxing
from .channel import WorkerLost
from .hosts import STARTUP, ForkHost, SpawnHost
from .worker.host import isolate_host

PASS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LANG", "LC_ALL", "LD_LIBRARY_PATH")


# Hosts started before the Runner that will adopt them: by start.py before the grader imports
# torch, or by watch's warm process before each grade. Keyed by what makes two hosts alike.
_PRESTARTED: dict[tuple, "ForkHost"] = {}


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
            _PRESTARTED[key] = ForkHost(runner, hide, imports)


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
                self.hosts[key] = (ForkHost if self.start == "fork" else SpawnHost)(self, key, imports)
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
            host = self.hosts[key] = (ForkHost if self.start == "fork" else SpawnHost)(self, key, imports)
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
                    self.hosts[key] = ForkHost(self, key, imports)
                except (OSError, WorkerLost):
                    pass  # the first probe that needs it tries again, and reports

    def probe(self, exercise: str, rules: dict, header: dict, arrays: list[np.ndarray], timeout: float, fresh: bool = False,
              measure: bool = False) -> tuple[dict, list, str]:
        """Send one probe (see the module's docstring). ``fresh``: in a new process for the
        exercise, not the one its earlier probes ran in. ``measure``: the reply's ``resources``
        holds what the process used during this probe, read from the kernel by the process that
        started it (``ForkHost.measure``); whatever the worker put there is dropped."""
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
