"""The result model and its scoring: what a grade recorded of each check, and the points it gives.

``plugin.pytest_runtest_makereport`` records a ``Check`` per graded test into its exercise's
``Outcome``; the scoreboard (``scoreboard.py``), the report (``report.py``), ``watch`` and
``nox -s class`` read them. Nothing here runs code of the tree: these are plain records, filled in
by the grader's process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import manifest

STATUSES = ("passed", "failing", "not started", "error")  # a check's; an outcome may also have "no checks"


@dataclass
class Check:
    """One graded test's result, as the grader recorded it.

    ``nodeid`` and ``name``: pytest's. ``status``: one of ``STATUSES``. ``message``: why it did not
    pass (empty when it passed): which output, where, by how much, with the learner's output and
    traceback. ``mistake``: the mistake the message names ("This looks like: ..."), if any."""

    nodeid: str
    name: str
    status: str  # passed / failing / not started / error
    message: str = ""
    mistake: str = ""  # the mistake the message names ("This looks like: ..."), if any


@dataclass
class Outcome:
    """An exercise's checks in this grade, in the order they ran; its status, score and first
    reason follow from them alone (``score`` below adds what the whole grade decides)."""

    exercise: manifest.Exercise
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``passed`` when every check passed, ``error`` when one erred, ``not started`` when every
        check met a stub, ``no checks`` when none ran, else ``failing``."""
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
        """The first line of the first check that did not pass, without the exercise's name."""
        for c in self.checks:
            if c.status != "passed":
                first = c.message.strip().splitlines()[0] if c.message.strip() else c.status
                return first.removeprefix(f"exercise {self.exercise.id} ({self.exercise.slug}), ")
        return ""


def score(outcome: Outcome, void: list[str]) -> float:
    """The points ``outcome`` earns in a grade: its own, or none when the grade is ``void`` (the
    reasons it is: the grader's files or its environment changed, the grader failed)."""
    return 0.0 if void else outcome.score


def graded(outcomes: dict[str, Outcome]) -> list[Outcome]:
    """The outcomes of this grade (exercise id -> outcome), in course order."""
    return [outcomes[e.id] for e in manifest.load() if e.id in outcomes]


def blocked_by(outcome: Outcome, outcomes: dict[str, Outcome]) -> list[manifest.Exercise]:
    """Prerequisites graded in this run that do not pass (the exercise's own points still
    come from its isolated checks, which use the harness's reference parts instead)."""
    deps = [outcomes[d] for d in outcome.exercise.depends_on if d in outcomes]
    return [d.exercise for d in deps if d.status != "passed"]
