"""``nox -s watch``: re-grade the exercise whose file you save, and print its scoreboard line.

Watches the tree under test (``exercises/`` by default, ``--impl PATH`` for another) with
watchfiles; on each save, the exercises of the changed module are graded with the same checks as
``nox -s grade`` and their lines printed. Ctrl-C stops it.

To answer within a second or two, this process stays warm: it has imported torch, pytest and the
grader once, and keeps worker hosts started (each with torch imported) for the next grade. A save
forks a child of it that runs the grade (``pytest.main``) and adopts those hosts, so each grade is
still a fresh grader process with fresh workers; then new hosts start for the next save. Where
fork is not available (Windows) each grade is a fresh pytest process.
"""

from __future__ import annotations

import json
import os
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


WARM = hasattr(os, "fork") and sys.platform.startswith("linux")


def warm_up(tree: str, extra: list[str]) -> None:
    """Import the grader (and torch) once, and start worker hosts for the next grade."""
    if not WARM:
        return
    import importlib

    import pytest  # noqa: F401

    from harness import plugin, runner

    # what every grade imports, imported once here: each forked grade starts with it
    for module in ["torch._dynamo", "gpt_oracle", *(Path(e.test_file).stem for e in manifest.load())]:
        try:
            importlib.import_module(module)
        except Exception:  # a test module that does not import is reported by the grade itself
            pass

    box = None if "--no-sandbox" in extra else plugin.sandboxing.find()[0]
    path = manifest.ROOT / tree if tree in plugin.NAMED_TREES else Path(tree).resolve()
    runner.prestart(path, box, [(tuple(e.hidden_modules), tuple(e.worker_imports)) for e in manifest.load()])


def run_grade(args: list[str]) -> None:
    """One grade with ``args`` for pytest: in a forked child of this warm process, or a new one."""
    if not WARM:
        subprocess.run([sys.executable, "-m", "pytest", *args], cwd=manifest.ROOT, capture_output=True, text=True)
        return
    pid = os.fork()
    if pid == 0:  # the child: a grader of its own, adopting the hosts this process started
        code = 1
        try:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            import pytest

            os.chdir(manifest.ROOT)
            code = int(pytest.main(args))
        finally:
            os._exit(code)
    os.waitpid(pid, 0)
    while True:  # the hosts the child used and killed are this process's children: collect them
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def grade(tree: str, exercises: list[manifest.Exercise], extra: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        selection = [arg for e in exercises for arg in ("--exercise", e.id)]
        args = ["-c", str(manifest.ROOT / "pyproject.toml"), "--rootdir", str(manifest.ROOT), str(manifest.ROOT / "tests"),
                "--grade", "-q", "--assert=plain", "--impl", tree, "--report", str(report), *selection, *extra]
        run_grade(args)
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
    warm_up(str(path), args)
    print(f"watching {path} for saved changes (Ctrl-C to stop)", flush=True)
    regrades = 0
    try:
        for changes in watch(path, watch_filter=PythonFilter(), debounce=100, step=20, rust_timeout=0):
            exercises = exercises_for([p for _, p in changes])
            if not exercises:
                continue
            names = ", ".join(e.name for e in exercises)
            print(f"\n{Path(next(iter(changes))[1]).name} changed: grading {names}", flush=True)
            print("\n".join(grade(str(path), exercises, args)), flush=True)
            warm_up(str(path), args)  # hosts for the next save, starting now
            regrades += 1
            if exit_after is not None and regrades >= exit_after:
                return 0
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
