"""``nox -s classroom -- [DIR]``: GitHub Classroom's autograding workflow, written from the manifest.

GitHub Classroom's command grader scores a command pass/fail, so one command for the whole
course would give all or nothing. This writes ``DIR/.github/workflows/classroom.yml`` (default:
this checkout) with one graded step per exercise of ``tests/manifest.toml``: the step runs
``nox -s grade -- ID`` (exit 0 only when that exercise passes) and is worth the exercise's points,
so a learner's total is the sum of the exercises that pass. The reporter step at the end reads
every step's result and reports the points to Classroom.

GitHub retired Classroom itself on 28 August 2026 (tests/harness/instructors.md says what that leaves); the
workflow runs as any GitHub Actions workflow. What it relies on, read in the actions' own sources
(action.yml, src/main.js and README.md of github.com/classroom-resources/autograding-command-grader
and .../autograding-grading-reporter):

- ``classroom-resources/autograding-command-grader@v1``: inputs ``test-name``, ``setup-command``,
  ``command``, ``timeout`` (minutes) and ``max-score`` (read with ``parseInt``: whole points
  only); a zero exit status earns ``max-score``, anything else 0. Its output ``result`` is the
  result as base64 JSON. Recent versions run the command with only PATH and HOME of the job's
  environment, so nothing the grading steps need may come from ``env:``: the environment is
  built in a step of its own, before them, and ``--require-sandbox`` is passed on the command
  line. Older versions split the command into words without a shell: it holds no shell syntax.
- ``classroom-resources/autograding-grading-reporter@v1``: input ``runners`` (the step ids,
  comma-separated) and, for each id, the environment variable ``<ID in capitals>_RESULTS`` holding
  that step's ``result``. Classroom read the scores of a workflow named "Autograding Tests" whose
  one job is ``run-autograding-tests``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from harness import manifest
else:
    from . import manifest

ROOT = manifest.ROOT
WORKFLOW = Path(".github") / "workflows" / "classroom.yml"

# Every action the workflow uses, pinned to a major version (tests/meta/test_classroom.py holds
# the workflow to this list).
CHECKOUT = "actions/checkout@v4"
SETUP_PYTHON = "actions/setup-python@v5"
COMMAND_GRADER = "classroom-resources/autograding-command-grader@v1"
REPORTER = "classroom-resources/autograding-grading-reporter@v1"
ACTIONS = (CHECKOUT, SETUP_PYTHON, COMMAND_GRADER, REPORTER)

TORCH_INDEX = "https://download.pytorch.org/whl/cpu"  # torch's CPU-only build (noxfile.py: KATA_TORCH_INDEX)
STEP_MINUTES = 10  # the command grader's timeout for one exercise (one takes seconds; a hang is cut at --probe-timeout)
JOB_MINUTES = 60

HEADER = """\
# GitHub Classroom autograding: one graded step per exercise, each worth the exercise's points.
# Written by `nox -s classroom` from tests/manifest.toml (tests/harness/classroom.py): edit those,
# not this file. tests/harness/instructors.md, "GitHub Classroom, step by step", says how to use it.
# - the steps before the grading build the environment once (.nox/kata, torch's CPU-only build,
#   pip's cache); every grading step reuses it;
# - a step passes, and earns its points, when `nox -s grade -- ID` exits 0: that exercise passes;
# - the reporter adds the points up for Classroom; a new push cancels a run still going.
# GitHub retired Classroom on 28 August 2026: the workflow still grades as any other, and
# tests/harness/instructors.md says what that leaves.
"""


class ClassroomError(Exception):
    pass


def step_id(ex: manifest.Exercise) -> str:
    """Letters and digits only: the reporter reads ``<ID in capitals>_RESULTS`` and names those
    characters when it cannot parse its ``runners``."""
    return f"ex{ex.id}"


def points(ex: manifest.Exercise) -> int:
    if not float(ex.points).is_integer() or ex.points <= 0:
        raise ClassroomError(f"exercise {ex.id} {ex.slug} is worth {ex.points} points: the command grader's max-score "
                             f"takes a whole number above 0")
    return int(ex.points)


def grading_step(ex: manifest.Exercise) -> dict:
    return {
        "name": f"{ex.id} {ex.slug} ({points(ex)} points)",
        "id": step_id(ex),
        "uses": COMMAND_GRADER,
        "with": {
            "test-name": f"{ex.id} {ex.slug}: {ex.title}",
            "command": f"nox -s grade -- {ex.id} --require-sandbox",
            "timeout": STEP_MINUTES,
            "max-score": points(ex),
        },
    }


def workflow(exercises: tuple[manifest.Exercise, ...] | None = None) -> dict:
    """The workflow as data: what ``text`` writes and what a YAML parser reads back."""
    exercises = manifest.load() if exercises is None else tuple(exercises)
    if not exercises:
        raise ClassroomError("the manifest lists no exercise")
    graded = [grading_step(ex) for ex in exercises]
    ids = [s["id"] for s in graded]
    setup = [
        {"name": "Check out the repository", "uses": CHECKOUT},
        {"name": "Python 3.11 (with pip's cache)", "uses": SETUP_PYTHON,
         "with": {"python-version": "3.11", "cache": "pip", "cache-dependency-path": "pyproject.toml"}},
        {"name": "Install nox", "run": 'python -m pip install "nox>=2024.10"'},
        # The grader runs the code under test in a bubblewrap sandbox; Ubuntu 24.04 restricts
        # unprivileged user namespaces through AppArmor (this runner is thrown away afterwards).
        {"name": "Sandbox (bubblewrap)",
         "run": "sudo apt-get install -y --no-install-recommends bubblewrap\n"
                "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 || true\n"},
        {"name": "Build the grading environment once (.nox/kata, CPU-only torch)",
         "env": {"KATA_TORCH_INDEX": TORCH_INDEX}, "run": "nox -s env"},
    ]
    reporter = {
        "name": "Autograding Reporter",
        "uses": REPORTER,
        "env": {f"{i.upper()}_RESULTS": f"${{{{ steps.{i}.outputs.result }}}}" for i in ids},
        "with": {"runners": ",".join(ids)},
    }
    return {
        "name": "Autograding Tests",
        "on": {"push": None, "workflow_dispatch": None, "repository_dispatch": None},
        "permissions": {"checks": "write", "actions": "read", "contents": "read"},
        "concurrency": {"group": "${{ github.workflow }}-${{ github.ref }}", "cancel-in-progress": True},
        "jobs": {
            "run-autograding-tests": {
                "runs-on": "ubuntu-latest",
                "if": "github.actor != 'github-classroom[bot]'",
                "timeout-minutes": JOB_MINUTES,
                "steps": setup + graded + [reporter],
            }
        },
    }


# --- a small YAML writer: block style, every string that could be read as anything else quoted

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_ ./()+=@,'-]*")
_SPECIAL = {"y", "yes", "n", "no", "true", "false", "on", "off", "null"}  # YAML 1.1 reads these as booleans or null


def _scalar(value) -> str:
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {value!r} as YAML")
    if _PLAIN.fullmatch(value) and value == value.strip() and value.lower() not in _SPECIAL:
        return value
    if "'" not in value and value.isprintable():
        return f"'{value}'"  # single quotes: nothing inside is an escape
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def _key(key: str) -> str:
    return _scalar(key)


def _lines(value, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{_key(k)}:")
                out += _lines(v, indent + 2)
            elif isinstance(v, str) and "\n" in v:
                if not v.endswith("\n") or v.endswith("\n\n") or any(line != line.rstrip() for line in v.splitlines()):
                    raise ValueError(f"{k}: a block of lines must end with one newline and no trailing spaces")
                out.append(f"{pad}{_key(k)}: |")
                out += [f"{pad}  {line}" if line else "" for line in v.splitlines()]
            else:
                text = _scalar(v)
                out.append(f"{pad}{_key(k)}:" + (f" {text}" if text else ""))
    elif isinstance(value, list):
        for item in value:
            sub = _lines(item, indent + 2) if isinstance(item, (dict, list)) else [f"{pad}  {_scalar(item)}"]
            out.append(f"{pad}- {sub[0][indent + 2:]}")
            out += sub[1:]
    else:
        raise TypeError(f"cannot write {value!r} as a YAML block")
    return out


def render(data: dict) -> str:
    """``data`` as YAML text: mappings and lists in block style, a blank line between top-level
    keys and between steps."""
    parts = []
    for key, value in data.items():
        block = _lines({key: value}, 0)
        if key == "jobs":  # a blank line before each step, for the eye
            block = [("\n" + line) if line.startswith("      - ") else line for line in block]
        parts.append("\n".join(block))
    return "\n\n".join(parts) + "\n"


def text(exercises: tuple[manifest.Exercise, ...] | None = None) -> str:
    return HEADER + "\n" + render(workflow(exercises))


def write(dest: Path = ROOT, exercises: tuple[manifest.Exercise, ...] | None = None) -> bool:
    """Write ``dest/.github/workflows/classroom.yml``; True if it changed."""
    target = Path(dest) / WORKFLOW
    new = text(exercises)
    if target.exists() and target.read_text(encoding="utf-8") == new:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(new, encoding="utf-8", newline="\n")
    return True


def out_of_date(dest: Path = ROOT) -> bool:
    target = Path(dest) / WORKFLOW
    return not target.exists() or target.read_text(encoding="utf-8") != text()


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: nox -s classroom -- [DIR]   (writes DIR/.github/workflows/classroom.yml; default: this checkout)",
              file=sys.stderr)
        return 2
    dest = Path(argv[0]) if argv else ROOT
    try:
        changed = write(dest)
    except ClassroomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    where = (dest / WORKFLOW).resolve()
    steps = len(manifest.load())
    total = sum(points(ex) for ex in manifest.load())
    print(f"{'wrote' if changed else 'up to date:'} {where}: {steps} graded steps, {total} points")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
