"""What a graded check can end in, besides passing. The plugin turns these into statuses."""

from __future__ import annotations

import re

LOOKS_LIKE = "This looks like: "  # how every check names a mistake: "This looks like: NAME. FIX"
_NAMED = re.compile(r"(?:^|\n)" + re.escape(LOOKS_LIKE) + r"(.+?)(?:\.(?:\s|$)|$)", re.S)  # the name, to its first ". "


def named_mistake(message: str) -> str:
    """The name of the mistake a check's message names ("This looks like: NAME. FIX"), or "".

    Read from the check's own message, never from what the learner's code printed (that is kept
    apart, in ``GradingFailure.output``); the last such line wins. A message can quote text of the
    learner's (an exception's message), so a tree could plant a name here: it is a diagnosis for
    the instructor's page, never part of the score."""
    found = _NAMED.findall(message or "")
    return found[-1].strip() if found else ""


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
    """The worker crashed or exited during this check: the check is an error, the next one runs
    in a fresh process (``impl.Trouble``)."""

    status = "error"


class TimedOut(GradingFailure):
    """A call into the learner's code did not return in time, or called code that did not return
    in an earlier check: that check is an error, the others count (``impl.Trouble``)."""

    status = "error"
