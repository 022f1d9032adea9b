"""The Kata session: one grade's state and the checks it makes before any code of the tree runs.

``Kata`` is made once per pytest run (``plugin.pytest_configure``): it resolves the tree under test
(``options.resolve_tree``), draws the seed, chooses the sandbox, reads the tree's files once and
checks them against the allow-list (the refusals), takes the snapshot of the grader's own files,
reads the environment, starts the watchdog and the worker backend, and holds the outcomes
(``results.py``). ``kill_descendants`` ends whatever the grade left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from . import allowlist, environment, integrity, manifest, options, reference, results, treefiles
from . import sandbox as sandboxing
from .impl import PART_SOURCES, InProcessBackend, Trouble, WorkerBackend
from .options import DEFAULT_GRADE_TIMEOUT, NAMED_TREES
from .results import Outcome
from .worker import processes


class Kata:
    """One grade: its options, tree, seed, sandbox, the tree's files and their refusals, the
    snapshots that can void it, its worker backend and watchdog, and the outcomes recorded so far."""

    def __init__(self, config: pytest.Config):
        self.config = config
        opt = config.option
        try:
            self.tree = options.resolve_tree(opt.impl)
        except options.TreeError as e:
            raise pytest.UsageError(str(e)) from None
        self.tree_label = opt.impl
        self.shown_as = opt.show_tree_as  # None: the tree's path, and the sandbox's, are shown
        self.in_process = opt.in_process
        self.seed = opt.seed if opt.seed is not None else secrets.randbelow(2**31)
        try:
            self.selected = {e.id for arg in opt.exercise for x in arg.split(",") if x for e in manifest.select(x)}
        except KeyError as e:
            raise pytest.UsageError(str(e.args[0])) from None
        if opt.worker_memory is not None:
            os.environ["KATA_WORKER_MEMORY_GB"] = str(opt.worker_memory)
        self.backend = None
        self.watchdog: subprocess.Popen | None = None
        self.report_digest: str | None = None
        self.lost: dict[str, Trouble] = {}  # exercise id -> what went wrong in its worker
        self.outcomes: dict[str, Outcome] = {}
        self.started = time.time()
        self.sandbox, self.sandbox_reason = self._choose_sandbox()
        # The tree's Python files, read once, before any of its code runs: the allow-list checks
        # these texts, and the worker imports these texts and nothing else of the tree.
        start = time.perf_counter()
        self.files = treefiles.read(self.tree)
        self.sources = self.files.sources
        self.tree_read_seconds = time.perf_counter() - start
        if config.option.grade and not self.in_process:
            # the worker hosts import torch while this process takes its snapshots and collects the
            # checks (no code of the tree runs before the first check)
            self.get_backend([e for e in manifest.load() if not self.selected or e.id in self.selected])
        # Before any of the tree's code runs: what the grader's files and its environment look
        # like, the expected outputs in memory, and what of the tree's source the allow-list refuses.
        self.void: list[str] = []
        self.snapshot = integrity.snapshot()
        # The environment is read on a thread (stat calls leave the interpreter free) while this
        # one collects the checks; ``environment_checked`` waits for it before any code of the tree runs.
        self.environment: dict = {}
        self.environment_status = "not read"
        self._environment_thread = threading.Thread(target=self._check_environment, daemon=True)
        self._environment_thread.start()
        reference.preload()
        self.refusals = self._check_tree()

    def _check_tree(self) -> dict[str, str]:
        """The tree's Python files as read (``treefiles``: regular files only, capped), checked
        against the allow-list: exercise id -> why it is refused, for each exercise refused (a
        violation in its module, in a file that module imports, or in ``__init__.py``; or such a file
        that the grader refused to read)."""
        start = time.perf_counter()
        files = self.files
        known = set(files.sources) | set(files.refused)

        def imports(name: str) -> set[str]:
            return allowlist.tree_imports(name, files.sources[name], known)

        refusals = {}
        self.fallback = {ex.id: self._fallback(ex, imports) for ex in manifest.load()}
        for ex in manifest.load():
            if self.selected and ex.id not in self.selected:
                continue
            unread = treefiles.costs(files.refused, files.sources, ex.module, imports)
            if unread:
                refusals[ex.id] = (f"the grader refused to read {unread[0]}" +
                                   "".join(f"\nalso refused: {u}" for u in unread[1:5]))
                continue
            violations = allowlist.check(files.sources, ex)
            if violations:
                more = [v.message for v in violations[1:5]]
                rest = f"\n(and {len(violations) - 5} more)" if len(violations) > 5 else ""
                refusals[ex.id] = "\n".join([violations[0].message, *more]) + rest
        self.tree_check_seconds = time.perf_counter() - start
        return refusals

    def _fallback(self, ex: manifest.Exercise, imports) -> frozenset[str]:
        """The tree's modules that ``ex``'s module imports, directly or not, that another
        exercise owns and a reference part can stand in for: when one of them fails to import,
        ``ex`` is graded with the part (``worker/tree.py``), so a typo there costs ``ex`` nothing."""
        seen, todo = set(), [ex.module]
        while todo:
            name = todo.pop()
            if f"{name}.py" in self.files.sources and name not in seen:
                seen.add(name)
                todo += [m.removesuffix(".py").replace("/", ".") for m in imports(f"{name}.py")]
        return frozenset(m for m in seen if m != ex.module and m in PART_SOURCES)

    def _check_environment(self) -> None:
        self.environment = environment.signature()
        expected = environment.recorded_digest()
        recorded = None if expected == environment.digest(self.environment) else environment.read_record()
        self.environment_status = "recorded" if expected is not None or recorded is not None else "no record (not made by nox)"
        earlier = environment.tainted()
        changed = environment.changes(recorded, self.environment) if recorded is not None else []
        if recorded is not None and expected is not None and not changed:
            changed = ["the record's digest does not match its files: the record itself was changed"]
        if earlier or changed:
            self.environment_status = "changed since it was built"
            why = f"an earlier grade saw it change ({earlier})" if earlier else f"{'; '.join(changed)}"
            self.void.append(f"the environment {sys.prefix} changed since it was built: {why}; {environment.REBUILD}")
            environment.taint(why)

    def environment_checked(self) -> None:
        """The environment as it was before any code of the tree ran (see ``_check_environment``)."""
        self._environment_thread.join()

    def _choose_sandbox(self):
        opt = self.config.option
        if self.in_process:
            return None, "in-process debug run"
        if opt.no_sandbox:
            return None, "switched off with --no-sandbox"
        box, reason = sandboxing.find()
        if box is None and self.require_sandbox:
            raise pytest.UsageError(f"--require-sandbox: {reason}")
        return box, reason

    @property
    def require_sandbox(self) -> bool:
        return bool(self.config.option.require_sandbox or os.environ.get("KATA_REQUIRE_SANDBOX") == "1")

    def sandbox_fell_through(self) -> None:
        """The worker could not start in the sandbox (and none was required): say so."""
        runner = getattr(self.backend, "runner", None)
        if self.sandbox is not None and runner is not None and runner.sandbox_failed:
            self.sandbox, self.sandbox_reason = None, runner.sandbox_failed

    @property
    def sandbox_label(self) -> str:
        self.sandbox_fell_through()
        if self.sandbox is None:
            return f"none ({self.sandbox_reason})"
        return self.sandbox.describe(path=self.shown_as is None)

    @property
    def tree_name(self) -> str:
        """The tree as the scoreboard and the report name it: ``--show-tree-as``, else a named tree, else its path."""
        if self.shown_as is not None:
            return self.shown_as
        return self.tree_label if self.tree_label in NAMED_TREES else str(self.tree)

    def get_backend(self, exercises: list[manifest.Exercise] | None = None):
        """The backend of this run, made on first use; ``exercises`` (by default those collected)
        tell the worker backend which hosts to start at once."""
        if self.backend is None:
            if self.in_process:
                self.backend = InProcessBackend(self.tree, self.sources)
            else:
                echo = self.config.option.capture == "no"
                self.start_watchdog()
                self.backend = WorkerBackend(self.tree, echo=echo, sandbox=self.sandbox, require_sandbox=self.require_sandbox,
                                             sources=self.sources)
                self.backend.prepare(exercises if exercises is not None else [o.exercise for o in self.outcomes.values()])
        return self.backend

    def start_watchdog(self) -> None:
        """A process outside this one that ends the grade if this process is stopped or runs past
        ``--grade-timeout``; it leaves when this process exits (its standard input closes)."""
        if self.watchdog is not None:
            return
        deadline = self.config.option.grade_timeout or float(os.environ.get("KATA_GRADE_TIMEOUT", DEFAULT_GRADE_TIMEOUT))
        if not self.config.option.grade and not self.config.option.grade_timeout:
            # The maintainers' suite (`nox -s tests`, plain pytest) is not a learner's grade: a slow
            # machine makes it slower, never void. Each grade it starts keeps its own bound.
            deadline = float("inf")
        args = [sys.executable, "-I", "-B", str(Path(__file__).with_name("watchdog.py")), str(os.getpid()), str(deadline)]
        if self.config.option.report:
            args.append(str(Path(self.config.option.report).resolve()))
        group = {"start_new_session": True} if os.name == "posix" else {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        capture = self.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            # its messages go to the terminal, not to a test's captured output
            self.watchdog = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, **group)

    def stop_watchdog(self) -> None:
        if self.watchdog is not None:
            try:
                self.watchdog.stdin.close()
                self.watchdog.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.watchdog.kill()
            self.watchdog = None

    def score(self, outcome: Outcome) -> float:
        """``outcome``'s points in this grade (``results.score``: none when it is void)."""
        return results.score(outcome, self.void)

    def blocked_by(self, outcome: Outcome) -> list[manifest.Exercise]:
        """``results.blocked_by``, among the exercises of this grade."""
        return results.blocked_by(outcome, self.outcomes)

    def graded(self) -> list[Outcome]:
        """This grade's outcomes, in course order."""
        return results.graded(self.outcomes)


# --------------------------------------------------------------------------- processes


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """On Linux, orphans of the processes this grade starts come back to this process."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def kill_descendants(exclude: int | None = None) -> None:
    """Kill every process below this one but ``exclude`` (Linux: read from /proc)."""
    if sys.platform.startswith("linux"):
        processes.kill_below(os.getpid(), exclude=() if exclude is None else (exclude,), reap=True)
