"""The pytest plugin: ``--impl``, fixtures for graded tests, the scoreboard and the report.

A graded test module sets ``EXERCISE = "01"`` and takes the ``impl`` fixture. Its checks run the
tree under test in worker processes, sandboxed where bubblewrap runs (see ``runner`` and
``sandbox``); this process never imports that tree. What the grade's verdict depends on is
decided here: the comparisons, the timing, the score and the report, written last, once every
process the grade started is gone.
"""

from __future__ import annotations

import ast
import atexit
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import environment, manifest, runner, stubs
from . import sandbox as sandboxing

NAMED_TREES = ("exercises", "solutions")
# The bytecode folder this process was started with (PYTHONPYCACHEPREFIX): nox, run_autograder and
# watch give every grade a fresh, private one (environment.fresh_prefix); None for a plain pytest run.
PREFIX_AT_START = sys.pycache_prefix


def _private_bytecode() -> None:
    """From here on, this process and the workers it starts read bytecode only from a private
    folder (``environment.fresh_prefix``), never from ``__pycache__`` beside the checkout's
    sources, and write none. A plain pytest run gets one now; the modules it imported before this
    line were read beside their sources (``integrity.forged_bytecode`` checks them)."""
    sys.dont_write_bytecode = True
    if sys.pycache_prefix is None:
        own = environment.fresh_prefix()
        sys.pycache_prefix = str(own)
        atexit.register(shutil.rmtree, own, True)


_private_bytecode()


def _early_start(argv: list[str]) -> None:
    """A grade's worker hosts, started from the command line before this process imports torch
    (each host imports it too, side by side); the Runner adopts them. Anything unusual on the
    command line leaves them to the Runner, which then starts its own."""
    def values(name: str) -> list[str]:
        out = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]
        return out + [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]

    if "--grade" not in argv or "--in-process" in argv:
        return
    impl = (values("--impl") or ["exercises"])[-1]
    tree = (manifest.ROOT / impl if impl in NAMED_TREES else Path(impl).expanduser()).resolve()
    if not tree.is_dir():
        return
    selected = {e.id for arg in values("--exercise") for x in arg.split(",") if x for e in manifest.select(x)}
    memory = values("--worker-memory")
    if memory:
        os.environ["KATA_WORKER_MEMORY_GB"] = memory[-1]
    box = None if "--no-sandbox" in argv else sandboxing.prefind()  # its self-check runs while torch imports
    required = "--require-sandbox" in argv or os.environ.get("KATA_REQUIRE_SANDBOX") == "1"
    if box is None and "--no-sandbox" not in argv and required:
        return  # the grade will be refused: no worker to start
    exercises = [e for e in manifest.load() if not selected or e.id in selected]
    runner.prestart(tree, box, [(tuple(e.hidden_modules), tuple(e.worker_imports)) for e in exercises])


try:
    _early_start(sys.argv[1:])
except Exception:  # an argument the plugin will refuse with a proper message later
    pass

import torch  # noqa: E402  (after the hosts have started)

from . import allowlist, integrity, reference, treefiles  # noqa: E402
from .failures import GradingFailure, named_mistake  # noqa: E402
from .impl import PART_SOURCES, Impl, InProcessBackend, Trouble, WorkerBackend  # noqa: E402
from .worker import processes  # noqa: E402

DEFAULT_GRADE_TIMEOUT = 1800.0


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("kata", "GPT kata grading")
    g.addoption("--impl", default="exercises", help="tree under test: exercises (default), solutions, or a PATH")
    g.addoption("--grade", action="store_true", help="graded checks only, a quiet run ending in the scoreboard")
    g.addoption("--exercise", action="append", default=[], metavar="ID", help="grade only this exercise (id or slug); repeatable")
    g.addoption("--report", metavar="FILE", help="write a Gradescope results.json here")
    g.addoption("--seed", type=int, help="seed for the random inputs (printed with every scoreboard)")
    g.addoption("--in-process", action="store_true", help="run the tree in this process (pdb works); not a valid grade")
    g.addoption("--probe-timeout", type=float, help="seconds one probe may run (default: the manifest's, 20)")
    g.addoption("--worker-memory", type=float, help="GiB of address space for the worker (default 16; 0: no limit)")
    g.addoption("--no-sandbox", action="store_true", help="run the worker without bubblewrap (for debugging; says so)")
    g.addoption("--require-sandbox", action="store_true",
                help="refuse to grade where no sandbox can run (also KATA_REQUIRE_SANDBOX=1)")
    g.addoption("--grade-timeout", type=float, help=f"seconds the whole grade may take (default {DEFAULT_GRADE_TIMEOUT:g})")
    g.addoption("--show-tree-as", metavar="NAME",
                help="name the tree NAME in the scoreboard and the report (NAME/attention.py) and show no path of this "
                     "machine: for a grade read elsewhere (run_autograder: exercises)")


def resolve_tree(value: str) -> Path:
    path = manifest.ROOT / value if value in NAMED_TREES else Path(value).expanduser()
    path = path.resolve()
    if not path.is_dir():
        raise pytest.UsageError(
            f"--impl {value}: {path} is not a directory; expected `exercises`, `solutions` or the path to a copy of the package"
        )
    if not any(path.glob("*.py")):
        raise pytest.UsageError(f"--impl {value}: {path} holds no .py files; expected a copy of the exercises package")
    return path


@dataclass
class Check:
    nodeid: str
    name: str
    status: str  # passed / failing / not started / error
    message: str = ""
    mistake: str = ""  # the mistake the message names ("This looks like: ..."), if any


@dataclass
class Outcome:
    exercise: manifest.Exercise
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.checks:
            return "no checks"
        statuses = {c.status for c in self.checks}
        if statuses == {"passed"}:
            return "passed"
        if "error" in statuses:
            return "error"
        if statuses == {"not started"}:
            return "not started"
        return "failing"

    @property
    def score(self) -> float:
        """Points in proportion to the checks passed: a check that errs costs itself only."""
        if not self.checks:
            return 0.0
        passed = sum(c.status == "passed" for c in self.checks)
        return round(self.exercise.points * passed / len(self.checks), 2)

    @property
    def reason(self) -> str:
        for c in self.checks:
            if c.status != "passed":
                first = c.message.strip().splitlines()[0] if c.message.strip() else c.status
                return first.removeprefix(f"exercise {self.exercise.id} ({self.exercise.slug}), ")
        return ""


class Kata:
    def __init__(self, config: pytest.Config):
        self.config = config
        opt = config.option
        self.tree = resolve_tree(opt.impl)
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

    def _sandbox_fell_through(self) -> None:
        """The worker could not start in the sandbox (and none was required): say so."""
        runner = getattr(self.backend, "runner", None)
        if self.sandbox is not None and runner is not None and runner.sandbox_failed:
            self.sandbox, self.sandbox_reason = None, runner.sandbox_failed

    @property
    def sandbox_label(self) -> str:
        self._sandbox_fell_through()
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
        return 0.0 if self.void else outcome.score

    def blocked_by(self, outcome: Outcome) -> list[manifest.Exercise]:
        """Prerequisites graded in this run that do not pass (the exercise's own points still
        come from its isolated checks, which use the harness's reference parts instead)."""
        deps = [self.outcomes[d] for d in outcome.exercise.depends_on if d in self.outcomes]
        return [d.exercise for d in deps if d.status != "passed"]

    def graded(self) -> list[Outcome]:
        return [self.outcomes[e.id] for e in manifest.load() if e.id in self.outcomes]


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
        _write_void(config, report, "grading did not finish")
    try:
        if PREFIX_AT_START is None and (config.option.grade or report is not None):
            forged = integrity.forged_bytecode(config=config)
            if forged:
                raise pytest.UsageError(
                    "bytecode beside the grader's sources is not what they compile to, so the grader itself may have "
                    f"been replaced: {'; '.join(forged[:3])}. Delete the __pycache__ folders of tests/ and reference/, "
                    "and grade with `nox -s grade` (which gives every grade a private bytecode folder)")
        if not config.option.in_process:
            _become_subreaper()
        config.stash[_KEY] = Kata(config)
    except BaseException as e:
        if report is not None:
            _write_void(config, report, f"not graded: {e}")
        raise
    if config.option.grade:
        config.option.tbstyle = "no"
        config.option.reportchars = ""


def _write_void(config: pytest.Config, path: Path, why: str) -> None:
    """A report that scores nothing and says why: ``finished`` false (Gradescope's runner and an
    instructor read it as a grade that did not happen)."""
    opt = config.option
    tree = manifest.ROOT / opt.impl if opt.impl in NAMED_TREES else Path(opt.impl).expanduser()
    report = {"score": 0, "output": why, "output_format": "text", "tests": [],
              "extra_data": {"seed": opt.seed, "tree": opt.show_tree_as or str(tree), "finished": False,
                             "max_score": 0}}
    _write_json(path, _hide_paths(report, opt.show_tree_as, tree))


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


STATUS_MARK = {"passed": "✓", "failing": "✗", "not started": "·", "error": "!", "no checks": "?"}


def scoreboard(kata: Kata, width: int = 100) -> str:
    """One line per exercise in course order, the first failure reason indented below it."""
    outcomes = kata.graded()
    total = sum(kata.score(o) for o in outcomes)
    possible = sum(o.exercise.points for o in outcomes)
    tree = kata.tree_name
    mode = "  (in-process debug run: not a valid grade)" if kata.in_process else ""
    lines = [f"GPT from scratch · tree: {tree} · seed {kata.seed} (reproduce with --seed {kata.seed}){mode}",
             f"sandbox: {kata.sandbox_label}", ""]
    if kata.void:
        lines[2:2] = [f"GRADE VOID: {'; '.join(kata.void[:5])}"]
    title_w = max([len(o.exercise.title) for o in outcomes] + [5])
    for o in outcomes:
        pts = f"{_num(kata.score(o))}/{_num(o.exercise.points)}"
        blocked = kata.blocked_by(o)
        names = ", ".join(e.name for e in blocked)
        note = "" if not blocked else f" · builds on {names}, not passing yet" if o.status == "passed" else f" · blocked by {names}"
        lines.append(f" {STATUS_MARK[o.status]} {o.exercise.id}  {o.exercise.title:<{title_w}}  {pts:>7}  {o.status}{note}")
        if o.reason:
            reason = o.reason if len(o.reason) <= max(width - 7, 30) else o.reason[: max(width - 8, 29)] + "…"
            lines.append(f"       {reason}")
    lines.append("")
    lines.append(f"   total  {' ' * title_w}  {_num(total) + '/' + _num(possible):>7}")
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:g}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    kata = _kata(config)
    outcomes = kata.graded()
    if not outcomes:
        return
    tr = terminalreporter
    width = shutil.get_terminal_size((100, 20)).columns
    if config.option.grade:
        for o in outcomes:
            failed = [c for c in o.checks if c.status in ("failing", "error")]
            if not failed:
                continue
            tr.write_sep("-", f"{o.exercise.id} {o.exercise.slug}: {o.status}")
            first = failed[0]
            tr.write_line(f"{first.name}:")
            tr.write_line(_indent(first.message))
            head = _first_line(first)
            same = [c for c in failed[1:] if _first_line(c) == head]
            for c in failed[1:]:
                if _first_line(c) != head:
                    tr.write_line(f"{c.name}: {_first_line(c)}")
            if same:  # one cause (a SyntaxError, a stub) met by every check: said once
                tr.write_line(f"({len(same)} more check{'s' if len(same) > 1 else ''} failed the same way)")
    tr.write_sep("=", "scoreboard")
    tr.write_line(scoreboard(kata, width))
    if config.option.grade:
        tr.write_line("\n" + next_step(kata))
    if kata.report_digest:
        tr.write_line(f"\nreport: {config.option.report}, written last; sha256 {kata.report_digest} "
                      "(a copy that differs was not written by this grade)")


def _first_line(check: Check) -> str:
    return check.message.strip().splitlines()[0] if check.message.strip() else check.status


def next_step(kata: Kata) -> str:
    """One line after the scoreboard: the first exercise not yet passed, and where to write it."""
    outcomes = [o for o in kata.graded() if o.status != "no checks"]  # those this run graded
    todo = next((o for o in outcomes if o.status != "passed"), None)
    if todo is None:
        total = sum(o.exercise.points for o in outcomes)
        if len(outcomes) < len(manifest.load()):
            return "next: every exercise graded here passes; `nox -s grade` grades the whole course"
        return f"next: nothing; every exercise passes ({_num(total)}/{_num(total)})"
    ex = todo.exercise
    path = kata.tree / f"{ex.module}.py"
    if kata.shown_as is not None:
        where = f"{kata.shown_as}/{path.name}"
    else:
        where = f"{path.relative_to(manifest.ROOT) if manifest.ROOT in path.parents else path}"
    trouble = kata.lost.get(ex.id)
    hung = [place for place, _ in (trouble.hangs.values() if trouble is not None else ()) if Path(place.file).name == path.name]
    line = hung[0].line if hung else _line_of(kata.sources.get(f"{ex.module}.py", ""), ex)
    return f"next: {ex.id} {ex.slug}, {where}" + (f" line {line}" if line else "") + f" (`nox -s hint -- {ex.id}` for a hint)"


def _line_of(source: str, ex: manifest.Exercise) -> int | None:
    """Where the learner starts on ``ex`` in its module's ``source`` (as the grader read it, never
    imported): the line of a syntax error (parsed here, never run), else its first stub, else the
    definition of its first function."""
    try:
        ast.parse(source)
    except SyntaxError as e:
        return e.lineno
    except ValueError:
        pass
    lines = source.splitlines()
    stub = stubs.stub_start(ex.id)
    for n, text in enumerate(lines, 1):
        if stub in text:
            return n
    names = [f.split(".")[0] for f in ex.functions]
    for n, text in enumerate(lines, 1):
        if re.match(rf"\s*(def|class)\s+({'|'.join(map(re.escape, names))})\b", text):
            return n
    return None


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    kata = _kata(session.config)
    if kata.backend is not None:
        kata.backend.close()
    # Nothing the grade started may outlive it: a process the tree left, even in a session of its
    # own, has come back to this process (a child subreaper) and is killed here.
    _kill_descendants(exclude=kata.watchdog.pid if kata.watchdog is not None else None)
    kata.environment_checked()
    kata._sandbox_fell_through()
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


def write_report(kata: Kata, path: Path) -> str:
    """Gradescope's results.json: one test per exercise, in course order. Its top level holds only keys that
    Gradescope documents (https://gradescope-autograders.readthedocs.io/en/latest/specs/), so the points possible,
    which it does not list there, are ``extra_data["max_score"]``."""
    tests = []
    kata._sandbox_fell_through()
    for o in kata.graded():
        blocked = kata.blocked_by(o)
        lines = [f"{o.status}" + (f": {o.reason}" if o.reason else "")]
        if blocked:
            lines.append(f"blocked by {', '.join(e.name for e in blocked)}: it builds on them; its points come from its own checks")
        for c in o.checks:
            lines.append(f"[{c.status}] {c.name}" + (f"\n{_indent(c.message)}" if c.status != "passed" and c.message else ""))
        tests.append(
            {
                "name": f"{o.exercise.id} {o.exercise.slug}: {o.exercise.title}",
                "number": o.exercise.id,
                "score": kata.score(o),
                "max_score": o.exercise.points,
                "status": "passed" if o.status == "passed" else "failed",
                "output": "\n".join(lines),
                "visibility": "visible",
                "extra_data": {"kata_status": o.status, "checks": len(o.checks),
                               "blocked_by": [e.id for e in kata.blocked_by(o)],
                               # each check, and the mistake its message names: what `nox -s class` tallies
                               "check_results": [{"name": c.name, "status": c.status, "mistake": c.mistake,
                                                  "message": "" if c.status == "passed" else c.message}
                                                 for c in o.checks]},
            }
        )
    report = {
        "score": round(sum(t["score"] for t in tests), 2),
        "execution_time": round(time.time() - kata.started, 2),
        "output": scoreboard(kata),
        "output_format": "text",  # Gradescope: plain text, the scoreboard's columns kept
        "tests": tests,
        "extra_data": {
            "max_score": sum(t["max_score"] for t in tests),
            "seed": kata.seed,
            "tree": kata.tree_name,
            "in_process": kata.in_process,
            "torch": torch.__version__,
            "finished": True,
            "void": kata.void,
            "sandbox": kata.sandbox.describe(path=kata.shown_as is None) if kata.sandbox is not None else "none",
            "sandbox_reason": kata.sandbox_reason,
            "environment": kata.environment_status,
        },
    }
    return _write_json(path, _hide_paths(report, kata.shown_as, kata.tree, kata.sandbox))


def _hide_paths(value, shown_as: str | None, tree: Path | str, sandbox=None):
    """``value`` (the report) with this machine's paths named instead, where ``--show-tree-as`` asks
    for it: the tree as ``shown_as``, the grader's checkout, its Python environment and the sandbox's
    binary by what they are. Rare messages (a void grade's, the sandbox's reason) name them."""
    if shown_as is None:
        return value
    names = {str(tree): shown_as, str(Path(tree).resolve()): shown_as, sys.prefix: "the grader's environment",
             str(Path(sys.prefix).resolve()): "the grader's environment", str(manifest.ROOT): "the grader"}
    if sandbox is not None and getattr(sandbox, "bwrap", None):
        names[str(sandbox.bwrap)] = "bwrap"
        names[str(Path(sandbox.bwrap).parent)] = "bwrap's folder"
    order = sorted((k for k in names if k and k != "/"), key=len, reverse=True)

    def walk(v):
        if isinstance(v, str):
            for k in order:
                v = v.replace(k, names[k])
            return v
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {walk(k): walk(x) for k, x in v.items()}
        return v

    return walk(value)


def _write_json(path: Path, report: dict) -> str:
    """Write atomically (a new file renamed over the old); returns the sha256 of what was written."""
    data = (json.dumps(report, indent=2) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- processes


PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """On Linux, orphans of the processes this grade starts come back to this process."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _kill_descendants(exclude: int | None = None) -> None:
    """Kill every process below this one but ``exclude`` (Linux: read from /proc)."""
    if sys.platform.startswith("linux"):
        processes.kill_below(os.getpid(), exclude=() if exclude is None else (exclude,), reap=True)
