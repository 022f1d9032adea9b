"""The report a grade writes (``--report FILE``): Gradescope's results.json.

``write_void`` writes one that scores nothing before any file of the tree is read, so a grade
that crashes or is killed leaves that, never an older file; ``write_report`` replaces it last,
once every process the grade started is gone. Both write atomically and, with ``--show-tree-as``,
name no path of this machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

from . import manifest, options
from .scoreboard import indent, scoreboard


def write_report(kata, path: Path) -> str:
    """Gradescope's results.json: one test per exercise, in course order. Its top level holds only keys that
    Gradescope documents (https://gradescope-autograders.readthedocs.io/en/latest/specs/), so the points possible,
    which it does not list there, are ``extra_data["max_score"]``. Returns the sha256 of what was written."""
    tests = []
    kata.sandbox_fell_through()
    for o in kata.graded():
        blocked = kata.blocked_by(o)
        lines = [f"{o.status}" + (f": {o.reason}" if o.reason else "")]
        if blocked:
            lines.append(f"blocked by {', '.join(e.name for e in blocked)}: it builds on them; its points come from its own checks")
        for c in o.checks:
            lines.append(f"[{c.status}] {c.name}" + (f"\n{indent(c.message)}" if c.status != "passed" and c.message else ""))
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
    return write_json(path, hide_paths(report, kata.shown_as, kata.tree, kata.sandbox))


def write_void(opt, path: Path, why: str) -> None:
    """A report that scores nothing and says why (``opt``: pytest's options): ``finished`` false
    (Gradescope's runner and an instructor read it as a grade that did not happen)."""
    tree = options.tree_path(opt.impl)
    report = {"score": 0, "output": why, "output_format": "text", "tests": [],
              "extra_data": {"seed": opt.seed, "tree": opt.show_tree_as or str(tree), "finished": False,
                             "max_score": 0}}
    write_json(path, hide_paths(report, opt.show_tree_as, tree))


def hide_paths(value, shown_as: str | None, tree: Path | str, sandbox=None):
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


def write_json(path: Path, report: dict) -> str:
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
