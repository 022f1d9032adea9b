"""The trusted reference parts (``tests/harness/parts/*.py``) as the worker sees them.

In a grade the worker has no ``parts/`` directory: the grader sends the source of each part a
check needs with the request that needs it, and never the part that implements the exercise
being graded. ``SOURCES`` holds what this worker process was given; ``load`` compiles a part
from it, once, as the module ``kata_part_<name>``. Parts load each other with ``load("layers")``.
"""

from __future__ import annotations

import sys
import types

SOURCES: dict[str, str] = {}
PREFIX = "kata_part_"


class MissingPart(Exception):
    """A part that this worker was not given (a harness bug, or a part the exercise may not see)."""


def give(sources: dict[str, str]) -> None:
    """Parts sent by the grader; a part already given keeps its first source."""
    for name, source in sources.items():
        SOURCES.setdefault(str(name), str(source))


def module(name: str, as_name: str | None = None) -> types.ModuleType:
    """A fresh module compiled from the part's source, registered as ``as_name``."""
    if name not in SOURCES:
        raise MissingPart(f"the reference part {name!r} was not sent to this worker")
    qualified = as_name or PREFIX + name
    mod = types.ModuleType(qualified)
    mod.__file__ = f"<kata part {name}>"
    sys.modules[qualified] = mod
    try:
        exec(compile(SOURCES[name], mod.__file__, "exec"), mod.__dict__)
    except BaseException:
        sys.modules.pop(qualified, None)
        raise
    return mod


def load(name: str) -> types.ModuleType:
    """The part ``name`` (``parts/<name>.py``), compiled once per process."""
    existing = sys.modules.get(PREFIX + name)
    return existing if existing is not None else module(name)
