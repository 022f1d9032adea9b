"""What a grade prints at its end: the failures in short, the scoreboard, and the next step.

Read from the grade's session (``session.Kata``): its outcomes (``results.py``), its seed, tree and
sandbox. The line that points at the next exercise finds its place in the source the grader read,
never by importing it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from . import manifest, stubs
from .results import Check

STATUS_MARK = {"passed": "✓", "failing": "✗", "not started": "·", "error": "!", "no checks": "?"}


def scoreboard(kata, width: int = 100) -> str:
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


def write_failures(tr, outcomes) -> None:
    """For each exercise that did not pass, through pytest's terminal reporter ``tr``: its first
    failing check's whole message, then one line for each other check (a cause met by every check,
    a SyntaxError or a stub, said once)."""
    for o in outcomes:
        failed = [c for c in o.checks if c.status in ("failing", "error")]
        if not failed:
            continue
        tr.write_sep("-", f"{o.exercise.id} {o.exercise.slug}: {o.status}")
        first = failed[0]
        tr.write_line(f"{first.name}:")
        tr.write_line(indent(first.message))
        head = _first_line(first)
        same = [c for c in failed[1:] if _first_line(c) == head]
        for c in failed[1:]:
            if _first_line(c) != head:
                tr.write_line(f"{c.name}: {_first_line(c)}")
        if same:  # one cause (a SyntaxError, a stub) met by every check: said once
            tr.write_line(f"({len(same)} more check{'s' if len(same) > 1 else ''} failed the same way)")


def next_step(kata) -> str:
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


def _num(x: float) -> str:
    return f"{x:g}"


def _first_line(check: Check) -> str:
    return check.message.strip().splitlines()[0] if check.message.strip() else check.status


def indent(text: str) -> str:
    """``text`` indented by four spaces, as the summary and the report show a check's message."""
    return "\n".join("    " + line for line in text.rstrip().splitlines())
