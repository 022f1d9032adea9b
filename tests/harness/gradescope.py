"""``nox -s gradescope -- autograder.zip``: the autograder of a Gradescope programming assignment.

The zip holds, at its root, Gradescope's two scripts (``setup.sh`` and ``run_autograder``, kept in
``tests/harness/autograder/``) and the release's grader: the graded tests and their harness,
``reference/``, the manifest, the noxfile and pyproject, the LICENSE, and the stubs of
``exercises/`` (a module missing from a submission is graded as its stub, and said to be). Left
out: ``solutions/``, this repository's own tests (``tests/meta``) and the benchmarks. Like the
release, the bundle is checked for regions of solution code before it is written.

``python gradescope.py run`` is what ``run_autograder`` runs for each submission: it finds the
exercises in the submission (the whole repository, the files of ``exercises/``, or one folder
holding ``exercises/``), copies their ``.py`` files (never a symbolic link) over a fresh copy
of the stubs in ``/autograder/graded/exercises``, grades that tree with the bundle's own grader exactly as ``nox -s grade --
--impl TREE --report results.json --require-sandbox`` does, and makes sure ``results.json`` is
there at the end, scoring 0 with the reason when the grade could not run. What the student reads
names the tree ``exercises``, as their own grade does, and no path of the container
(``--show-tree-as exercises``). The sandbox is always
required: where bubblewrap cannot start in the container, the submission is not graded (score 0,
and a message for the instructor in ``results.json``); Gradescope runs every submission as root,
and without the sandbox a submission could read the grader's files and forge its report.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent  # tests/harness
SOURCE = HERE.parents[1]  # the checkout, or /autograder/source in the bundle
SCRIPTS = HERE / "autograder"
ENTRY_POINTS = ("setup.sh", "run_autograder")  # at the zip's root, executable
COPY = ["exercises", "reference", "tests", "noxfile.py", "pyproject.toml", "LICENSE"]
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the same bundle from the same files, byte for byte
LAYOUTS = ("the whole repository (exercises/ at its top), the .py files of exercises/ themselves, "
           "or one folder that holds exercises/")


def _harness():
    if __package__ in (None, ""):
        sys.path.insert(0, str(HERE.parent))
        from harness import manifest, release, stubs
    else:
        from . import manifest, release, stubs
    return manifest, release, stubs


# --------------------------------------------------------------------------------- the bundle


def write(out: Path) -> Path:
    """Write the autograder zip to ``out``; refuse (writing nothing) if it would hold solution code."""
    manifest, release, _ = _harness()
    out = Path(out).resolve()
    if out.suffix != ".zip":
        raise SystemExit(f"{out.name}: Gradescope takes a .zip; give a name that ends in .zip")
    release.require_stubs("bundled for Gradescope")
    with tempfile.TemporaryDirectory(prefix="kata-gradescope-") as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        for name in COPY:
            src = manifest.ROOT / name
            if src.is_dir():
                shutil.copytree(src, staging / name, ignore=release._ignore)
            elif src.exists():
                shutil.copy2(src, staging / name)
        for name in ENTRY_POINTS:
            shutil.copy2(SCRIPTS / name, staging / name)
            (staging / name).chmod(0o755)
        found = release.leaks(staging)
        if found:
            raise SystemExit("solution code would be in the autograder; nothing was written:\n" + "\n".join(found))
        partial = out.with_name(out.name + ".partial")
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(staging.rglob("*")):
                rel = path.relative_to(staging).as_posix()
                info = zipfile.ZipInfo(rel + "/" if path.is_dir() else rel, ZIP_TIME)
                info.create_system = 3  # Unix: unzip then keeps the modes below
                if path.is_dir():
                    info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10
                    zf.writestr(info, b"")
                else:
                    mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
                    info.external_attr = (stat.S_IFREG | mode) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, path.read_bytes())
        partial.replace(out)
    return out


# ------------------------------------------------------------------------- one submission


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".py")


def find_tree(submission: Path) -> tuple[Path | None, str]:
    """The folder of the submission that holds the exercises' modules and which layout it is; or
    None and what is wrong."""
    if not _real_dir(submission):
        return None, f"there is no submission folder ({submission})"
    top = sorted(p for p in submission.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX")
    exercises = submission / "exercises"
    if exercises.is_symlink():
        return None, "exercises/ is a symbolic link: submit the folder itself"
    if _real_dir(exercises):
        return exercises, "the repository (exercises/)"
    if _modules(submission):
        return submission, "the files of exercises/"
    holders = [p for p in top if _real_dir(p) and _real_dir(p / "exercises")]
    if len(holders) == 1:
        return holders[0] / "exercises", f"one folder holding exercises/ ({holders[0].name}/exercises/)"
    shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in top[:12]) + (", ..." if len(top) > 12 else "")
    what = f"it holds {shown}" if top else "it is empty"
    if len(holders) > 1:
        what = f"more than one folder holds exercises/ ({', '.join(p.name for p in holders)})"
    return None, f"no exercises were found in the submission: {what}. Submit {LAYOUTS}."


def assemble(found: Path, dest: Path) -> tuple[list[str], list[str], list[str]]:
    """The tree to grade, in ``dest``: the stubs, with the submission's modules copied over them.
    Returns (modules taken from the submission, modules left as stubs, files ignored and why)."""
    dest.mkdir(parents=True)
    for stub in _modules(SOURCE / "exercises"):
        shutil.copyfile(stub, dest / stub.name)
    taken, ignored = [], []
    for path in _modules(found):
        if path.is_symlink():
            ignored.append(f"{path.name} (a symbolic link)")
        elif not path.is_file():
            ignored.append(f"{path.name} (not a file)")
        else:
            shutil.copyfile(path, dest / path.name)
            taken.append(path.name)
    left = {name.split(" ")[0] for name in ignored}
    stubs = [p.name for p in _modules(SOURCE / "exercises") if p.name not in taken and p.name not in left and p.name != "__init__.py"]
    return taken, stubs, ignored


def invocation(tree: Path, results: Path, *extra: str, sandboxed: bool = True) -> tuple[list[str], dict, Path]:
    """The command, environment and private bytecode folder (the caller removes it) of a grade of
    ``tree`` as noxfile.py's grade session runs one, writing ``results``; the tree shown as
    ``exercises`` (no path of this machine in what the learner reads). Used by ``grade`` and by
    ``nox -s class`` (classgrade.py)."""
    cmd = [sys.executable, "-m", "pytest", "-c", str(SOURCE / "pyproject.toml"), "--rootdir", str(SOURCE),
           str(SOURCE / "tests"), "--grade", "-q", "--assert=plain", "--impl", str(tree), "--report", str(results),
           "--show-tree-as", "exercises", *extra]
    prefix = _harness_module("environment").fresh_prefix()  # bytecode from the environment's mirror only
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(prefix)}
    if sandboxed:
        cmd.append("--require-sandbox")
        env["KATA_REQUIRE_SANDBOX"] = "1"
    return cmd, env, prefix


def grade(tree: Path, results: Path) -> tuple[int, list[str]]:
    """Grade ``tree`` as noxfile.py's grade session does, its output passed on; returns the exit
    status and the last lines printed."""
    cmd, env, prefix = invocation(tree, results)
    tail: collections.deque[str] = collections.deque(maxlen=30)
    sys.stdout.flush()
    try:
        with subprocess.Popen(cmd, cwd=SOURCE, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
            for line in proc.stdout:
                sys.stdout.write(line)
                tail.append(line.rstrip("\n"))
            code = proc.wait()
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
    sys.stdout.flush()
    return code, list(tail)


def _harness_module(name: str):
    """``harness.NAME``, imported the way ``_harness`` imports the others."""
    import importlib

    _harness()
    return importlib.import_module(f"harness.{name}" if __package__ in (None, "") else f"{__package__}.{name}")


NO_SANDBOX = ("The autograder could not start its sandbox in this container, so this submission was not graded and "
              "scores 0 for now. This is a fault of the autograder, not of your code: tell your instructor.\n\n"
              "For the instructor: the grader runs every submission in a bubblewrap sandbox and refuses to grade "
              "without one ({why}). Rebuild the autograder on a base image where bubblewrap can start (setup.sh "
              "installs it; the container must allow unprivileged user namespaces), then regrade the submissions.")


def sandbox_refused() -> str | None:
    """Why no sandbox can run here (the message for results.json), or None when one can."""
    box, why = _harness_module("sandbox").find()
    return None if box is not None else NO_SANDBOX.format(why=why)


def _failure(message: str, **extra) -> dict:
    return {"score": 0, "output": message, "output_format": "text", "tests": [],
            "extra_data": {"finished": False, "autograder": message, **extra}}


def _write(results: Path, report: dict) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    partial = results.with_name(results.name + ".partial")
    partial.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    partial.replace(results)


def finish(results: Path, code: int, tail: list[str], notes: list[str], submission: dict) -> dict:
    """The grader's report as Gradescope reads it: left as the grader wrote it where nothing is
    missing, else completed (a grade that did not finish scores 0 and says why)."""
    try:
        report = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = None
    said = "\n".join(tail)
    before = copy.deepcopy(report)
    if not isinstance(report, dict):
        report = _failure(f"The grader stopped before it wrote its report (exit status {code}), so this submission "
                          f"scores 0. The last lines it printed:\n\n{said}", exit_status=code)
    extra = report.setdefault("extra_data", {})
    if not extra.get("finished", False) and "autograder" not in extra:
        report["score"] = 0
        report["output"] = (f"{report.get('output', '')}\n\nThe grade did not finish (exit status {code}), so this "
                            f"submission scores 0. The last lines the grader printed:\n\n{said}").lstrip()
        extra["exit_status"] = code
    report.setdefault("output_format", "text")
    for test in report.get("tests", []):
        test.setdefault("visibility", "visible")
    report.pop("leaderboard", None)
    if notes:
        report["output"] = "\n".join(notes) + "\n\n" + report.get("output", "")
    if report != before:
        extra["submission"] = submission
        _write(results, report)
        what = "completed for Gradescope" if isinstance(before, dict) else "written in place of the grader's, which it did not write"
        print(f"run_autograder: results.json {what}{': ' if notes else ''}{' '.join(notes)}")
    return report


def run(root: Path, submission: Path | None = None, results: Path | None = None) -> dict:
    """Grade one submission; ``results`` (results.json) exists when this returns."""
    submission = submission if submission is not None else root / "submission"
    results = results if results is not None else root / "results" / "results.json"
    started = time.monotonic()
    try:
        results.unlink(missing_ok=True)
        found, layout = find_tree(submission)
        if found is None:
            print(f"run_autograder: {layout}")
            report = _failure(f"Not graded: {layout}")
            _write(results, report)
            return report
        graded = root / "graded"  # the tree graded: ROOT/graded/exercises, made afresh
        shutil.rmtree(graded, ignore_errors=True)
        try:
            tree = graded / "exercises"
            taken, stubs, ignored = assemble(found, tree)
            print(f"run_autograder: the submission is {layout}: {len(taken)} modules")
            if not taken:
                report = _failure(f"Not graded: the submission is {layout}, but it holds no .py files. Submit {LAYOUTS}.")
                _write(results, report)
                return report
            notes = []
            if stubs:
                notes.append(f"Not in your submission, so graded as the course's stubs: {', '.join(stubs)}.")
            if ignored:
                notes.append(f"Left out of the grade, and graded as the stubs instead: {', '.join(ignored)}.")
            _record_environment()
            refused = sandbox_refused()
            if refused is not None:
                print(f"run_autograder: not graded: no sandbox can run here\n{refused}")
                report = _failure(refused, sandbox="none")
                _write(results, report)
                return report
            code, tail = grade(tree, results)
            info = {"layout": layout, "modules": taken, "stubs": stubs, "ignored": ignored}
            report = finish(results, code, tail, notes, info)
        finally:  # (a tree that leaves files it cannot remove costs nothing but this folder)
            shutil.rmtree(graded, ignore_errors=True)
    except Exception as e:  # the autograder's own fault: still a results.json that says so
        print(f"run_autograder: {type(e).__name__}: {e}")
        report = _failure(f"The autograder failed ({type(e).__name__}: {e}), so this submission was not graded and scores "
                          "0 for now. This is a fault of the autograder, not of your code: tell your instructor.")
        _write(results, report)
    print(f"run_autograder: {report.get('score', 0):g} points, in {time.monotonic() - started:.0f} s")
    return report


def _record_environment() -> None:
    """Record the grading environment afresh when it is the bundle's own (.nox/kata, built by
    setup.sh). Gradescope builds the image once and grades each submission in a new container of
    it, where every file has a new inode and change time: the record setup.sh made would void every
    grade. Nothing of the submission has run yet in this container, so what is here now is what the
    grade must find unchanged. Another environment (KATA_PYTHON) is left with its own record."""
    own = SOURCE / ".nox" / "kata"
    if own.is_dir() and Path(sys.prefix).resolve() == own.resolve():
        subprocess.run([sys.executable, "-I", "-B", str(HERE / "environment.py"), "--record"], check=False)
    else:
        print(f"run_autograder: grading with {sys.prefix}, an environment this bundle did not build: its record is left as it is")


def check_stubs(report: dict) -> int:
    """setup.sh's check: the stubs score 0, every exercise graded and not started."""
    manifest, _, _ = _harness()
    want = [e.id for e in manifest.load()]
    statuses = {t.get("number"): t.get("extra_data", {}).get("kata_status") for t in report.get("tests", [])}
    finished = report.get("extra_data", {}).get("finished")
    if finished and report.get("score") == 0 and list(statuses) == want and set(statuses.values()) == {"not started"}:
        possible = report.get("extra_data", {}).get("max_score", 0)
        print(f"setup: the stubs score 0/{possible:g}, all {len(want)} exercises reported: the autograder works")
        return 0
    print(f"setup: FAILED: the stubs' grade is not what it should be (score {report.get('score')}, finished {finished}, "
          f"statuses {statuses})")
    if report.get("extra_data", {}).get("sandbox") == "none":
        print(f"setup: {report.get('output', '')}")
    return 1


def main(argv: list[str]) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # in order with the grader's output, in Gradescope's log
    if argv[:1] == ["run"]:
        parser = argparse.ArgumentParser(prog="gradescope.py run", description="grade one Gradescope submission")
        parser.add_argument("--root", type=Path, default=Path(os.environ.get("AUTOGRADER_ROOT", "/autograder")))
        parser.add_argument("--submission", type=Path, help="default: ROOT/submission")
        parser.add_argument("--results", type=Path, help="default: ROOT/results/results.json")
        parser.add_argument("--expect-stubs", action="store_true", help="exit 1 unless the grade is the stubs' (setup.sh)")
        args = parser.parse_args(argv[1:])
        report = run(args.root, args.submission, args.results)
        return check_stubs(report) if args.expect_stubs else 0
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: nox -s gradescope -- autograder.zip   (the file to write)", file=sys.stderr)
        return 2
    out = write(Path(argv[0]))
    total = sum(e.points for e in _harness()[0].load())
    print(f"wrote Gradescope's autograder to {out} ({out.stat().st_size / 1e6:.1f} MB): upload it as the autograder of "
          f"a programming assignment worth {total:g} points (tests/harness/instructors.md: \"Gradescope, step by step\")")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
