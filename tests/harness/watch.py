"""``nox -s watch``: re-grade the exercise whose file you save, and print its scoreboard line.

Watches the tree under test (``exercises/`` by default, ``--impl PATH`` for another) with
watchfiles; on each save, the exercises of the changed module are graded in a fresh pytest
process (the same checks as ``nox -s grade``) and their lines printed. Ctrl-C stops it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from harness import manifest
else:
    from . import manifest

MARK = {"passed": "✓", "failing": "✗", "not started": "·", "error": "!", "no checks": "?"}


def exercises_for(paths: list[Path | str]) -> list[manifest.Exercise]:
    """The exercises whose module is one of the changed files, in course order."""
    stems = {Path(p).stem for p in paths if str(p).endswith(".py")}
    return [e for e in manifest.load() if e.module in stems]


def grade(tree: str, exercises: list[manifest.Exercise], extra: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        selection = [arg for e in exercises for arg in ("--exercise", e.id)]
        cmd = [sys.executable, "-m", "pytest", "-c", str(manifest.ROOT / "pyproject.toml"), "--rootdir", str(manifest.ROOT),
               str(manifest.ROOT / "tests"), "--grade", "-q", "--assert=plain", "--impl", tree, "--report", str(report), *selection, *extra]
        subprocess.run(cmd, cwd=manifest.ROOT, capture_output=True, text=True)
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ["the grader did not finish: run `nox -s grade` to see why"]
    lines = []
    for t in data.get("tests", []):
        status = t["extra_data"]["kata_status"]
        first = t["output"].splitlines()[0] if t.get("output") else ""
        reason = first.split(": ", 1)[1] if ": " in first and status != "passed" else ""
        lines.append(f" {MARK.get(status, ' ')} {t['number']}  {t['name'].split(': ', 1)[-1]}  {t['score']:g}/{t['max_score']:g}  {status}")
        if reason:
            lines.append(f"       {reason}")
    return lines


def main(argv: list[str]) -> int:
    try:
        from watchfiles import PythonFilter, watch
    except ImportError:
        print("watch needs watchfiles: run it as `nox -s watch`, which installs it", file=sys.stderr)
        return 2
    args = list(argv)
    tree, exit_after = "exercises", None
    if "--impl" in args:
        i = args.index("--impl")
        tree = args[i + 1]
        del args[i : i + 2]
    if "--exit-after" in args:
        i = args.index("--exit-after")
        exit_after = int(args[i + 1])
        del args[i : i + 2]
    path = manifest.ROOT / tree if tree in ("exercises", "solutions") else Path(tree).resolve()
    if not path.is_dir():
        print(f"--impl {tree}: {path} is not a directory", file=sys.stderr)
        return 2
    print(f"watching {path} for saved changes (Ctrl-C to stop)", flush=True)
    regrades = 0
    try:
        for changes in watch(path, watch_filter=PythonFilter(), debounce=300, rust_timeout=0):
            exercises = exercises_for([p for _, p in changes])
            if not exercises:
                continue
            names = ", ".join(e.name for e in exercises)
            print(f"\n{Path(next(iter(changes))[1]).name} changed: grading {names}", flush=True)
            print("\n".join(grade(str(path), exercises, args)), flush=True)
            regrades += 1
            if exit_after is not None and regrades >= exit_after:
                return 0
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
