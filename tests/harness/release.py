"""``nox -s release -- DIR``: the learners' repository, without solutions.

Writes DIR with ``exercises/`` (the stubs and the tracks' pages), the graded tests and their
harness, ``reference/``, the manifest, the noxfile and pyproject, the README, the LICENSE and the
autograding workflows (``grade.yml``, and GitHub Classroom's ``classroom.yml``, written from the
manifest being released),
then starts a fresh git history there. Left out: ``solutions/``, this repository's own tests
(``tests/meta``, which grade the solutions), the benchmarks, CI for the solutions, and any git
history. Every page it ships (the README, ``exercises/tracks/*.md``, ``tests/harness/*.md``) is
written without the maintainers' parts (``release_readme``). Before committing, it checks that no
region of solution code appears in any file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from harness import classroom, manifest, stubs
else:
    from . import classroom, manifest, stubs

ROOT = manifest.ROOT
COPY = ["exercises", "reference", "tests", "noxfile.py", "pyproject.toml", "README.md", "LICENSE", ".gitignore",
        ".gitattributes", ".github/workflows/grade.yml"]
LEAVE_OUT = {"tests/meta", "tests/bench"}
NOTE = (
    "> **Learners' release.** This repository holds the exercises, their graded tests and the grader; "
    "the reference solutions are not part of it. Start with `nox -s grade`.\n\n"
)


LEAVE_OUT_BEGIN, LEAVE_OUT_END = "<!-- release: leave out -->", "<!-- release: end -->"
MARKER = re.compile(r"<!--.*-->")  # a line that is only this: a marker for the maintainers' tools


def release_readme(text: str) -> str:
    """The README without what only the maintainers' repository can run: what lies between
    ``LEAVE_OUT_BEGIN`` and ``LEAVE_OUT_END``, whole paragraphs and tables where the markers stand
    on lines of their own (the maintainers' section, the release itself, the benchmarks, grading
    ``solutions/``), else the words between them (a command named in a sentence or a table's cell);
    and the lines that are only a marker (the exercise table's, the times': the maintainers' tools
    read them). Where a part was cut, one blank line is left."""
    out, rest = "", text
    while LEAVE_OUT_BEGIN in rest:
        head, _, tail = rest.partition(LEAVE_OUT_BEGIN)
        if LEAVE_OUT_END not in tail:
            raise SystemExit(f"README.md: {LEAVE_OUT_BEGIN} is never closed by {LEAVE_OUT_END}")
        out += head
        rest = tail.partition(LEAVE_OUT_END)[2]
    lines, fenced = [], False
    for line in (out + rest).splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and MARKER.fullmatch(line.strip()):
            continue
        elif not fenced and not line.strip() and (not lines or not lines[-1].strip()):
            continue  # one blank line where a part was cut
        lines.append(line)
    return "\n".join(lines).strip("\n") + "\n"


def pages(dest: Path) -> list[Path]:
    """The markdown pages of a tree the release ships: the README first, then the others (the
    tracks' pages beside the exercises, the instructors' pages beside the grader) by path."""
    readme = dest / "README.md"
    found = sorted(p for p in dest.rglob("*.md") if ".git" not in p.relative_to(dest).parts and p != readme)
    return [readme, *found]


def solution_regions(solutions: Path = ROOT / "solutions") -> list[tuple[str, list[str]]]:
    """(where, distinctive lines) of each marked region of solution code."""
    regions = []
    for path in sorted(solutions.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        inside, start, body = False, 0, []
        for n, line in enumerate(lines, 1):
            if stubs.BEGIN.match(line):
                inside, start, body = True, n, []
            elif stubs.END.match(line):
                inside = False
                distinct = [b.strip() for b in body if len(b.strip()) >= 16 and not b.strip().startswith("#")]
                if distinct:
                    regions.append((f"solutions/{path.name}:{start}", distinct))
            elif inside:
                body.append(line)
    return regions


def leaks(dest: Path, solutions: Path = ROOT / "solutions") -> list[str]:
    """Files of ``dest`` holding most of a region of solution code (half its distinctive lines,
    and at least two of them, or its only one)."""
    found = []
    texts = {}
    for p in dest.rglob("*"):
        if p.is_file() and ".git" not in p.relative_to(dest).parts:
            try:
                texts[p] = {line.strip() for line in p.read_text(encoding="utf-8").splitlines()}
            except (UnicodeDecodeError, OSError):
                continue
    for where, distinct in solution_regions(solutions):
        for p, lines in texts.items():
            hits = sum(d in lines for d in distinct)
            if hits and hits * 2 >= len(distinct) and (hits >= 2 or len(distinct) == 1):
                found.append(f"{p.relative_to(dest)} holds the solution region at {where}")
    return found


def require_stubs(what: str) -> None:
    """Stop, naming the files, unless ``exercises/`` is exactly what ``nox -s stubs`` writes: what
    ships to learners (the release, the Gradescope bundle) starts from the untouched stubs."""
    problems = stubs.out_of_sync()
    if problems:
        raise SystemExit(
            f"exercises/ is not what `nox -s stubs` writes from solutions/, so it cannot be {what}:\n  "
            + "\n  ".join(f"exercises/{p}" for p in problems)
            + "\n`nox -s stubs` rewrites those files from solutions/, and any work in them is lost: to keep it, copy "
            "exercises/ elsewhere first (cp -r exercises ../my-exercises). Then run `nox -s stubs` and try again."
        )


def write(dest: Path) -> list[str]:
    dest = dest.resolve()
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"{dest} exists and is not empty: give a new directory")
    if dest == ROOT or ROOT in dest.parents:
        raise SystemExit(f"{dest} is inside this repository: give a directory outside it")
    require_stubs("released")
    try:
        classroom.text()
    except classroom.ClassroomError as e:
        raise SystemExit(f"GitHub Classroom's workflow cannot be written: {e}") from None
    for name in COPY:
        src = ROOT / name
        if not src.exists():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=_ignore)
        else:
            shutil.copy2(src, target)
    classroom.write(dest)  # one graded step per exercise of the manifest released
    readme, *others = pages(dest)
    readme.write_text(NOTE + release_readme(readme.read_text(encoding="utf-8")), encoding="utf-8")
    for page in others:
        page.write_text(release_readme(page.read_text(encoding="utf-8")), encoding="utf-8")
    found = leaks(dest)
    if found:
        shutil.rmtree(dest)
        raise SystemExit("solution code would be released; nothing was written:\n" + "\n".join(found))
    return _git_init(dest)


def _ignore(directory: str, names: list[str]) -> set[str]:
    rel = Path(directory).resolve().relative_to(ROOT).as_posix()
    skip = {n for n in names if n == "__pycache__" or n.endswith(".pyc")}
    skip |= {n for n in names if f"{rel}/{n}" in LEAVE_OUT}
    return skip


def _git_init(dest: Path) -> list[str]:
    if shutil.which("git") is None:
        return ["git is not installed: the release has no history yet (run `git init` there)"]
    who = ["-c", "user.name=GPT kata", "-c", "user.email=kata@example.invalid", "-c", "commit.gpgsign=false"]
    for cmd in (["init", "-q"], ["add", "-A"], [*who, "commit", "-q", "-m", "GPT from scratch: the learners' release"]):
        subprocess.run(["git", *cmd], cwd=dest, check=True, capture_output=True)
    return []


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: nox -s release -- DIR   (a new directory outside this repository)", file=sys.stderr)
        return 2
    notes = write(Path(argv[0]))
    for n in notes:
        print(n)
    print(f"wrote the learners' release to {Path(argv[0]).resolve()}: `cd` there and run `nox -s grade`")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
