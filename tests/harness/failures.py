"""What a graded check can end in, besides passing. The plugin turns these into statuses."""

from __future__ import annotations


class GradingFailure(AssertionError):
    """A check failed for a reason the learner should read; no test-code traceback is shown."""

    status = "failing"

    def __init__(self, message: str, details: str = "", output: str = ""):
        super().__init__(message)
        self.message, self.details, self.output = message, details, output

    def explain(self) -> str:
        parts = [self.message]
        if self.details:
            parts.append(self.details)
        if self.output.strip():
            parts.append("Your code printed:\n" + self.output.rstrip())
        return "\n\n".join(parts)


class Mismatch(GradingFailure):
    """The learner's output differs from the oracle's."""


class NotStarted(GradingFailure):
    """The stub still raises NotImplementedError."""

    status = "not started"


class LearnerError(GradingFailure):
    """The learner's code raised, returned something ungradable, or used a forbidden shortcut;
    ``kind`` says which: "raised", "bad_output" or "forbidden"."""

    kind = "raised"


class ImportFailure(GradingFailure):
    """The learner's module cannot be imported (SyntaxError, ImportError, missing name)."""

    status = "error"


class Lost(GradingFailure):
    """The worker crashed or exited while running this exercise: the exercise scores 0."""

    status = "error"


class TimedOut(GradingFailure):
    """A call into the learner's code did not return in time: that check fails, the others count
    (after a second timeout the exercise's remaining checks are not run, and fail)."""
