"""The pytest plugin: the grade's options, its hooks and the fixtures of graded tests.

A graded test module sets ``EXERCISE = "01"`` and takes the ``impl`` fixture. Its checks run the
tree under test in worker processes, sandboxed where bubblewrap runs (see ``runner`` and
``sandbox``); this process never imports that tree. What the grade's verdict depends on is
decided here: the comparisons, the timing, the score and the report, written last, once every
process the grade started is gone.

The parts: ``start.py`` (before torch is imported: the private bytecode folder, the worker hosts
started from the command line), ``options.py`` (the table of options, the tree under test),
``session.py`` (the ``Kata`` session: seed, sandbox, watchdog, refusals, the environment and the
grader's own files; killing what the grade left), ``results.py`` (checks, outcomes, scoring),
``scoreboard.py`` (the scoreboard and the next step) and ``report.py`` (results.json).
"""

from __future__ import annotations

import re
import secrets
import shutil
import sys
import zlib
from pathlib import Path

import pytest

from . import environment, manifest, options, start

start.start(sys.argv[1:])

import torch  # noqa: E402  (after the hosts have started)

from . import integrity  # noqa: E402
from .failures import GradingFailure, named_mistake  # noqa: E402
from .impl import Impl  # noqa: E402
from .report import write_report, write_void  # noqa: E402
from .results import Check, Outcome  # noqa: E402
from .scoreboard import next_step, scoreboard, write_failures  # noqa: E402
from .session import Kata, become_subreaper, kill_descendants  # noqa: E402

def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_to(parser.getgroup("kata", "GPT kata grading"))


def _kata(config: pytest.Config) -> Kata:
    return config.stash[_KEY]


_KEY = pytest.StashKey[Kata]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "exercise(id): a graded check of exercise `id` (set by EXERCISE = 'id')")
    sys.dont_write_bytecode = True  # a grade writes nothing into the environment or the checkout
    report = Path(config.option.report) if config.option.report else None
    if config.option.seed is None:
        config.option.seed = secrets.randbelow(2**31)
    if report is not None:
        # Before any file of the tree is read, the report says the grade did not finish: a run that
        # crashes or is killed leaves this void report, never a file that was there before.
        write_void(config.option, report, "grading did not finish")
    try:
        if start.PREFIX_AT_START is None and (config.option.grade or report is not None):
            forged = integrity.forged_bytecode(config=config)
            if forged:
                raise pytest.UsageError(
                    "bytecode beside the grader's sources is not what they compile to, so the grader itself may have "
                    f"been replaced: {'; '.join(forged[:3])}. Delete the __pycache__ folders of tests/ and reference/, "
                    "and grade with `nox -s grade` (which gives every grade a private bytecode folder)")
        if not config.option.in_process:
            become_subreaper()
        config.stash[_KEY] = Kata(config)
    except BaseException as e:
        if report is not None:
            write_void(config.option, report, f"not graded: {e}")
        raise
    if config.option.grade:
        config.option.tbstyle = "no"
        config.option.reportchars = ""


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A grade reads only the graded test files of the exercises it grades (collecting the rest,
    the harness's own tests included, would cost a second for nothing)."""
    if not config.option.grade:
        return None
    path = Path(collection_path)
    if path.is_dir():
        return True if path.name in ("meta", "integration", "bench", "harness") else None
    match = re.fullmatch(r"test_(\d\d)_\w+\.py", path.name)
    if path.suffix == ".py" and not match:
        return True
    selected = _kata(config).selected
    return True if match and selected and match.group(1) not in selected else None


def _exercise_of(item: pytest.Item) -> manifest.Exercise | None:
    module = getattr(item, "module", None)
    eid = getattr(module, "EXERCISE", None)
    if eid is None:
        return None
    try:
        return manifest.lookup(eid)
    except KeyError as e:
        raise pytest.UsageError(f"{item.nodeid}: EXERCISE = {eid!r}: {e.args[0]}") from None


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    kata = _kata(config)
    keep, drop = [], []
    for item in items:
        ex = _exercise_of(item)
        if ex is not None:
            item.stash[_EX] = ex
        if ex is None and (config.option.grade or kata.selected):
            drop.append(item)
        elif ex is not None and kata.selected and ex.id not in kata.selected:
            drop.append(item)
        else:
            keep.append(item)
            if ex is not None:
                kata.outcomes.setdefault(ex.id, Outcome(ex))
    for ex in manifest.load():
        if config.option.grade and (not kata.selected or ex.id in kata.selected):
            kata.outcomes.setdefault(ex.id, Outcome(ex))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


_EX = pytest.StashKey[manifest.Exercise]()


@pytest.fixture(scope="session")
def kata(request: pytest.FixtureRequest) -> Kata:
    return _kata(request.config)  # pytest_sessionfinish closes its worker


@pytest.fixture
def impl(request: pytest.FixtureRequest, kata: Kata) -> Impl:
    ex = request.node.stash.get(_EX, None)
    if ex is None:
        raise pytest.UsageError(f"{request.node.nodeid} uses `impl` but its module sets no EXERCISE")
    refused = kata.refusals.get(ex.id)  # the allow-list's verdict, or a file the grader would not read
    kata.environment_checked()
    return Impl(kata.get_backend(), ex, kata.lost, request.config.option.probe_timeout, refused=refused,
                fallback=kata.fallback.get(ex.id, frozenset()), check=request.node.name)


@pytest.fixture
def seed(request: pytest.FixtureRequest, kata: Kata) -> int:
    """This test's seed: the run's seed mixed with the test's name, so order does not matter."""
    return zlib.crc32(f"{kata.seed}:{request.node.nodeid}".encode()) & 0x7FFFFFFF


@pytest.fixture
def gen(seed: int) -> torch.Generator:
    """A torch.Generator for fresh inputs; the run's ``--seed`` reproduces them."""
    return torch.Generator().manual_seed(seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    rep = yield
    ex = item.stash.get(_EX, None)
    if ex is None:
        return rep
    kata = _kata(item.config)
    outcome = kata.outcomes.setdefault(ex.id, Outcome(ex))
    name = item.name
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        if rep.passed:
            outcome.checks.append(Check(item.nodeid, name, "passed"))
        elif rep.skipped:
            outcome.checks.append(Check(item.nodeid, name, "failing", "skipped: " + str(rep.longrepr[-1] if isinstance(rep.longrepr, tuple) else rep.longrepr)))
        else:
            exc = call.excinfo.value if call.excinfo else None
            if isinstance(exc, GradingFailure):
                impl = getattr(item, "funcargs", {}).get("impl")
                if impl is not None and not exc.output:
                    exc.output = "".join(impl.printed)
                text = exc.explain()
                outcome.checks.append(Check(item.nodeid, name, exc.status, text, named_mistake(exc.message)))
                rep.longrepr = text
            elif isinstance(exc, AssertionError):
                text = str(exc) or "assertion failed"
                outcome.checks.append(Check(item.nodeid, name, "failing", text, named_mistake(text)))
            else:
                what = f"{type(exc).__name__}: {exc}" if exc else "error"
                outcome.checks.append(Check(item.nodeid, name, "error", f"the check itself failed ({what}): please report this"))
    return rep


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    kata = _kata(config)
    outcomes = kata.graded()
    if not outcomes:
        return
    tr = terminalreporter
    width = shutil.get_terminal_size((100, 20)).columns
    if config.option.grade:
        write_failures(tr, outcomes)
    tr.write_sep("=", "scoreboard")
    tr.write_line(scoreboard(kata, width))
    if config.option.grade:
        tr.write_line("\n" + next_step(kata))
    if kata.report_digest:
        tr.write_line(f"\nreport: {config.option.report}, written last; sha256 {kata.report_digest} "
                      "(a copy that differs was not written by this grade)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    kata = _kata(session.config)
    if kata.backend is not None:
        kata.backend.close()
    # Nothing the grade started may outlive it: a process the tree left, even in a session of its
    # own, has come back to this process (a child subreaper) and is killed here.
    kill_descendants(exclude=kata.watchdog.pid if kata.watchdog is not None else None)
    kata.environment_checked()
    kata.sandbox_fell_through()
    outcomes = kata.graded()
    if outcomes:
        if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
            kata.void.append("the grader failed (an internal error): please report this")
        changed = integrity.changes(kata.snapshot, integrity.snapshot())
        if changed:
            kata.void.append(f"the grader's own files changed while it ran: {'; '.join(changed[:5])}")
        # in the sandbox the worker saw the environment read-only: only without one can it have changed
        changed = environment.changes(kata.environment, environment.signature()) if kata.sandbox is None else []
        if changed:
            kata.void.append(f"the environment {sys.prefix} changed while the grade ran ({'; '.join(changed)}): "
                             f"{environment.REBUILD}")
            environment.taint("; ".join(changed))
    if session.config.option.report:
        kata.report_digest = write_report(kata, Path(session.config.option.report))
    kata.stop_watchdog()
    failed = any(o.status != "passed" for o in outcomes) or kata.void
    if outcomes and failed and (session.config.option.grade or kata.void) and session.exitstatus == 0:
        session.exitstatus = 1
