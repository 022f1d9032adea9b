"""Writes ``exercises/`` from ``solutions/``: one source for stubs and solutions.

In ``solutions/``, the part a learner writes sits between two marker comments::

    # BEGIN SOLUTION 01: subtract each slice's maximum, exponentiate, divide by the sum
    ...the reference code...
    # END SOLUTION

``stub_source`` replaces each marked region with one line, at the marker's indentation::

    raise NotImplementedError("exercise 01 (attention), softmax: subtract each slice's ...")

Everything outside the markers (signatures, docstrings, imports, glue) is copied as it is.
Run ``python tests/harness/stubs.py`` (``nox -s stubs``) to write the tree, ``--check`` to list
what is out of date without writing.

The course's prose is copied here too: each track's page, ``solutions/tracks/NN-name.md`` (NN the
track's first exercise), goes as it is to ``exercises/tracks/``, beside the modules a learner
edits, and ships with them.

The README's exercise table is made here too, from the manifest: it sits between the markers
``TABLE_BEGIN`` and ``TABLE_END`` below, and ``write`` rewrites it (``--check`` reports it). Each
row links its exercise's track page: the page whose number is the highest at or below its id.
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

SOLUTIONS = manifest.ROOT / "solutions"
EXERCISES = manifest.ROOT / "exercises"
BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION (?P<id>\d\d): (?P<task>\S.*?)\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
DEF = re.compile(r"^(?P<indent>\s*)(?:async\s+)?(?P<kind>def|class)\s+(?P<name>\w+)")
TRACKS = "tracks"  # the tracks' pages: solutions/tracks/NN-name.md, copied as they are
PAGE = re.compile(r"(?P<first>\d\d)-(?P<name>[a-z0-9-]+)\.md")


README = manifest.ROOT / "README.md"
TABLE_BEGIN = "<!-- the exercise table: written by `nox -s stubs` from tests/manifest.toml; edit the manifest -->"
TABLE_END = "<!-- end of the exercise table -->"


class MarkerError(Exception):
    pass


def track_pages(solutions: Path = SOLUTIONS) -> list[tuple[str, str]]:
    """(first exercise id, file name) of each track's page, in course order."""
    pages = [(m["first"], p.name) for p in (solutions / TRACKS).glob("*.md") if (m := PAGE.fullmatch(p.name))]
    return sorted(pages)


def track_link(eid: str, pages: list[tuple[str, str]]) -> str:
    """A markdown link to the page of the track that exercise ``eid`` belongs to, or "" if none."""
    names = [name for first, name in pages if first <= eid]
    if not names:
        return ""
    name = names[-1]
    return f"[{PAGE.fullmatch(name)['name']}](exercises/{TRACKS}/{name})"


def exercise_table(exercises=None) -> str:
    """The README's table of exercises, one row per manifest entry, in course order, each linked to
    its track's page."""
    pages = track_pages()
    rows = ["| id | slug | exercise | file | points | track |", "|----|------|----------|------|--------|-------|"]
    for e in exercises if exercises is not None else manifest.load():
        rows.append(f"| {e.id} | `{e.slug}` | {e.title} | `{e.module}.py` | {e.points:g} | {track_link(e.id, pages)} |")
    return "\n".join(rows) + "\n"


NEW_COMMAND = re.compile(r"(nox -s new -- )\d+(?= )")


def next_id(exercises=None) -> str:
    """The id ``nox -s new`` takes next: the one after the last exercise's."""
    ids = [int(e.id) for e in (exercises if exercises is not None else manifest.load())]
    return f"{max(ids, default=0) + 1:02d}"


def readme_with_table(text: str, exercises=None) -> str:
    """``text`` (a README) with the region between the table markers replaced by ``exercise_table``,
    and each ``nox -s new -- ID`` example given the id the scaffold takes next (so that a new
    exercise changes no prose)."""
    exercises = exercises if exercises is not None else manifest.load()
    start, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if start < 0 or end < start:
        raise MarkerError(f"README.md needs the lines {TABLE_BEGIN!r} and {TABLE_END!r} around the exercise table")
    head = text[: start + len(TABLE_BEGIN)]
    text = head + "\n" + exercise_table(exercises) + text[end:]
    return NEW_COMMAND.sub(lambda m: m.group(1) + next_id(exercises), text)


def _enclosing(lines: list[str], index: int, indent: int) -> str:
    """The dotted name of the def (and class) that line ``index`` sits in."""
    names, limit = [], indent
    for line in reversed(lines[:index]):
        m = DEF.match(line)
        if m and len(m["indent"]) < limit:
            names.append(m["name"])
            limit = len(m["indent"])
            if limit == 0:
                break
    return ".".join(reversed(names)) or "module level"


def stub_start(eid: str) -> str:
    """How every stub line of exercise ``eid`` starts, as ``stub_source`` writes it: what tells a
    stub from a learner's code when a tree is read as text."""
    return f'raise NotImplementedError("exercise {eid} '


def stub_source(source: str, filename: str = "<source>") -> str:
    exercises = manifest.by_id()
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        if END.match(lines[i]):
            raise MarkerError(f"{filename}:{i + 1}: END SOLUTION without a BEGIN SOLUTION")
        if "BEGIN SOLUTION" in lines[i] and not m:
            raise MarkerError(f"{filename}:{i + 1}: write markers as `# BEGIN SOLUTION 01: the task in a few words`")
        if not m:
            out.append(lines[i])
            i += 1
            continue
        if m["id"] not in exercises:
            raise MarkerError(f"{filename}:{i + 1}: exercise {m['id']} is not in the manifest")
        start = i
        i += 1
        while i < len(lines) and not END.match(lines[i]):
            if BEGIN.match(lines[i]):
                raise MarkerError(f"{filename}:{i + 1}: BEGIN SOLUTION inside the region opened at line {start + 1}")
            i += 1
        if i == len(lines):
            raise MarkerError(f"{filename}:{start + 1}: BEGIN SOLUTION is never closed by END SOLUTION")
        ex = exercises[m["id"]]
        where = _enclosing(lines, start, len(m["indent"]))
        message = f"exercise {ex.id} ({ex.slug}), {where}: {m['task']}"
        out.append(f"{m['indent']}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})\n")
        i += 1  # past END SOLUTION
    return "".join(out)


def _generated(tree: Path) -> list[Path]:
    """The files of a tree that ``write`` makes: its modules, and its tracks' pages."""
    return sorted([p for p in tree.rglob("*.py") if "__pycache__" not in p.parts] + list((tree / TRACKS).glob("*.md")))


def expected_tree(solutions: Path = SOLUTIONS) -> dict[str, str]:
    """Relative path -> the text ``exercises/`` should hold: each module stubbed, each page as it is."""
    tree = {}
    for path in _generated(solutions):
        rel = path.relative_to(solutions).as_posix()
        text = path.read_text(encoding="utf-8")
        tree[rel] = stub_source(text, f"solutions/{rel}") if path.suffix == ".py" else text
    return tree


def out_of_sync(solutions: Path = SOLUTIONS, exercises: Path = EXERCISES) -> list[str]:
    """What differs between ``exercises/`` and what ``write`` would produce."""
    want = expected_tree(solutions)
    have = {p.relative_to(exercises).as_posix() for p in _generated(exercises)}
    problems = [f"{rel}: missing" for rel in sorted(set(want) - have)]
    problems += [f"{rel}: not in solutions/" for rel in sorted(have - set(want))]
    problems += [
        f"{rel}: differs" for rel in sorted(set(want) & have) if (exercises / rel).read_text(encoding="utf-8") != want[rel]
    ]
    return problems


def readme_out_of_date(readme: Path = README) -> bool:
    text = readme.read_text(encoding="utf-8")
    return readme_with_table(text) != text


def write(solutions: Path = SOLUTIONS, exercises: Path = EXERCISES) -> list[str]:
    want = expected_tree(solutions)
    changed = []
    for rel, text in want.items():
        target = exercises / rel
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", newline="\n")
            changed.append(rel)
    for path in _generated(exercises):
        rel = path.relative_to(exercises).as_posix()
        if rel not in want:
            path.unlink()
            changed.append(f"{rel} (removed)")
    return changed


def write_readme(readme: Path = README) -> bool:
    """Rewrite the README's exercise table from the manifest; True if it changed."""
    text = readme.read_text(encoding="utf-8")
    new = readme_with_table(text)
    if new != text:
        readme.write_text(new, encoding="utf-8", newline="\n")
    return new != text


def untouched(tree: Path = EXERCISES) -> bool:
    """Whether ``tree`` still holds a stub of every exercise of the manifest: nothing started (a
    CI workflow has nothing to grade then). Read as text; nothing is imported."""
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in Path(tree).glob("*.py"))
    return all(stub_start(e.id) in text for e in manifest.load())


def main(argv: list[str]) -> int:
    if "--untouched" in argv:  # exit 0 when the tree is the untouched stubs (grade.yml skips it)
        rest = [a for a in argv if a != "--untouched"]
        return 0 if untouched(Path(rest[0]) if rest else EXERCISES) else 1
    if "--check" in argv:
        problems = [f"exercises/{p}" for p in out_of_sync()]
        if readme_out_of_date():
            problems.append("README.md: the exercise table differs from tests/manifest.toml")
        for p in problems:
            print(p)
        if problems:
            print("exercises/ or the README's table is out of date: run `nox -s stubs`")
        return 1 if problems else 0
    changed = [f"exercises/{c}" for c in write()]
    if write_readme():
        changed.append("README.md (the exercise table)")
    print("\n".join(f"wrote {c}" for c in changed) or "exercises/ and the README's table are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
