"""The grade's options, one table, and the one function that says which tree is under test.

Everything that reads a grade's command line reads this table: pytest's options are built from it
(``plugin.pytest_addoption``), the worker hosts started before torch is imported read the same
words from ``sys.argv`` with ``scan`` (``start.py``), ``nox -s grade`` tells an exercise's id from
an option's value with ``TAKES_VALUE`` (``noxfile._exercise_args``), and ``watch.py`` finds the
tree it watches with ``tree_path``. Only the standard library is imported, so that the noxfile can
read this file from its source (``runpy``) in nox's own interpreter.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]  # the checkout: manifest.ROOT, found the same way
NAMED_TREES = ("exercises", "solutions")  # trees named by a word, found in the checkout
DEFAULT_GRADE_TIMEOUT = 1800.0


class Option(NamedTuple):
    """One option of the grade. ``kind`` None: a switch, off unless given; ``str``, ``int`` or
    ``float``: it takes a value of that type. ``repeat``: each use adds a value to a list."""

    name: str
    help: str
    kind: type | None = None
    default: object = None
    metavar: str | None = None
    repeat: bool = False

    @property
    def dest(self) -> str:
        return self.name.removeprefix("--").replace("-", "_")


OPTIONS = (
    Option("--impl", "tree under test: exercises (default), solutions, or a PATH", str, "exercises"),
    Option("--grade", "graded checks only, a quiet run ending in the scoreboard"),
    Option("--exercise", "grade only this exercise (id or slug); repeatable", str, [], "ID", repeat=True),
    Option("--report", "write a Gradescope results.json here", str, metavar="FILE"),
    Option("--seed", "seed for the random inputs (printed with every scoreboard)", int),
    Option("--in-process", "run the tree in this process (pdb works); not a valid grade"),
    Option("--probe-timeout", "seconds one probe may run (default: the manifest's, 20)", float),
    Option("--worker-memory", "GiB of address space for the worker (default 16; 0: no limit)", float),
    Option("--no-sandbox", "run the worker without bubblewrap (for debugging; says so)"),
    Option("--require-sandbox", "refuse to grade where no sandbox can run (also KATA_REQUIRE_SANDBOX=1)"),
    Option("--grade-timeout", f"seconds the whole grade may take (default {DEFAULT_GRADE_TIMEOUT:g})", float),
    Option("--show-tree-as",
           "name the tree NAME in the scoreboard and the report (NAME/attention.py) and show no path of this "
           "machine: for a grade read elsewhere (run_autograder: exercises)", str, metavar="NAME"),
)

TAKES_VALUE = frozenset(o.name for o in OPTIONS if o.kind is not None)


def add_to(group) -> None:
    """Add every option of the table to pytest's option ``group`` (``parser.getgroup``)."""
    for o in OPTIONS:
        kwargs: dict = {"help": o.help}
        if o.kind is None:
            kwargs["action"] = "store_true"
        elif o.repeat:
            kwargs.update(action="append", default=o.default)
        else:
            if o.kind is not str:
                kwargs["type"] = o.kind
            if o.default is not None:
                kwargs["default"] = o.default
        if o.metavar is not None:
            kwargs["metavar"] = o.metavar
        group.addoption(o.name, **kwargs)


class Scanned(NamedTuple):
    """What ``scan`` read: each option's values as written (strings, unconverted), in order."""

    values: dict[str, list[str]]
    switches: frozenset[str]

    def last(self, name: str, default: str | None = None) -> str | None:
        found = self.values.get(name) or []
        return found[-1] if found else default


def scan(argv: list[str]) -> Scanned:
    """The grade's options in a command line, read before pytest parses it (and without its
    checks): ``--name VALUE`` and ``--name=VALUE`` for an option that takes a value, the bare
    word for a switch."""
    def values(name: str) -> list[str]:
        out = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]
        return out + [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]

    return Scanned({o.name: values(o.name) for o in OPTIONS if o.kind is not None},
                   frozenset(o.name for o in OPTIONS if o.kind is None and o.name in argv))


class TreeError(ValueError):
    """``--impl`` names no tree that can be graded (the message says why)."""


def tree_path(value: str) -> Path:
    """The folder ``--impl value`` names, as written: a named tree in the checkout, else a path
    (``~`` expanded), not yet resolved."""
    return ROOT / value if value in NAMED_TREES else Path(value).expanduser()


def resolve_tree(value: str) -> Path:
    """The tree under test for ``--impl value``, resolved; ``TreeError`` when it is no directory
    or holds no Python file."""
    path = tree_path(value).resolve()
    if not path.is_dir():
        raise TreeError(
            f"--impl {value}: {path} is not a directory; expected `exercises`, `solutions` or the path to a copy of the package"
        )
    if not any(path.glob("*.py")):
        raise TreeError(f"--impl {value}: {path} holds no .py files; expected a copy of the exercises package")
    return path
