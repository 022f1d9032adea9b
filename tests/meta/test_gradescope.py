"""`nox -s gradescope`: the autograder zip holds the grader and no solution code, and its
run_autograder, run where a scratch folder stands in for /autograder (with this checkout's
environment as KATA_PYTHON, so no environment is built), grades each layout of submission and
always leaves a results.json that Gradescope reads.

run_autograder always requires the sandbox: where none can run, a submission scores 0 with a message
for the instructor. The tests that grade skip where no sandbox runs here, unless
``KATA_REQUIRE_SANDBOX=1`` (set by ``.ci/run``) makes that a failure, as in the rest of the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import GRADESCOPE_TOP_LEVEL

from harness import gradescope, manifest, release, sandbox
from harness.manifest import ROOT

BOX, WHY = sandbox.find()
REQUIRED = os.environ.get("KATA_REQUIRE_SANDBOX") == "1"
SANDBOXED = pytest.mark.skipif(BOX is None and not REQUIRED,
                               reason=f"no sandbox here, and run_autograder requires one: {WHY}")
ALL = [e.id for e in manifest.load()]
FULL = sum(e.points for e in manifest.load())
# A submission's own grader, which must never run: it would write a perfect score.
FORGED = (
    "import json, os, pathlib\n"
    "root = pathlib.Path(os.environ.get('AUTOGRADER_ROOT', '/autograder'))\n"
    "(root / 'results').mkdir(parents=True, exist_ok=True)\n"
    "(root / 'results' / 'results.json').write_text(json.dumps({'score': 1000, 'tests': []}))\n"
    "os._exit(0)\n"
)


def unpack(bundle: Path, dest: Path) -> None:
    """Unzip as unzip(1) does: the modes kept."""
    with zipfile.ZipFile(bundle) as zf:
        for info in zf.infolist():
            zf.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                (dest / info.filename).chmod(mode)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return gradescope.write(tmp_path_factory.mktemp("bundle") / "autograder.zip")


@pytest.fixture(scope="module")
def autograder(bundle, tmp_path_factory) -> Path:
    """/autograder as Gradescope lays it out: the zip in source/, run_autograder copied beside it."""
    root = tmp_path_factory.mktemp("autograder")
    unpack(bundle, root / "source")
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    return root


def submit(root: Path, files: dict[str, Path | str]) -> None:
    """A fresh /autograder/submission: relative path -> a file to copy, or the text to write."""
    sub = root / "submission"
    shutil.rmtree(sub, ignore_errors=True)
    sub.mkdir()
    for rel, what in files.items():
        (sub / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, Path):
            shutil.copyfile(what, sub / rel)
        else:
            (sub / rel).write_text(what, encoding="utf-8")


def tree(src: Path, under: str = "", leave_out: tuple[str, ...] = ()) -> dict[str, Path]:
    return {f"{under}{p.name}": p for p in sorted(src.glob("*.py")) if p.name not in leave_out}


def run_autograder(root: Path, python: str = sys.executable) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "KATA_PYTHON": python}
    proc = subprocess.run([str(root / "run_autograder")], cwd=root, env=env, capture_output=True, text=True, timeout=400)
    results = root / "results" / "results.json"
    assert proc.returncode == 0 and results.is_file(), f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(results.read_text(encoding="utf-8"))


def assert_gradescope_schema(report: dict) -> None:
    assert report["output_format"] == "text" and isinstance(report["output"], str) and report["output"]
    assert "leaderboard" not in report
    unknown = sorted(set(report) - GRADESCOPE_TOP_LEVEL)
    assert not unknown, f"keys Gradescope does not document at the top level of results.json: {unknown}"
    assert all(t["visibility"] == "visible" and {"name", "score", "max_score", "output"} <= t.keys() for t in report["tests"])


def assert_sandboxed_where_required(report: dict, explain: str) -> None:
    assert report["extra_data"]["sandbox"].startswith("bubblewrap"), explain  # run_autograder always requires it


def assert_no_path_of_the_grader(report: dict, root: Path) -> None:
    """What the student reads names the tree and its files as in their own grade (exercises/attention.py),
    never a path of the container: not the autograder's folder, nor the bubblewrap binary."""
    def strings(value):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from strings(k)
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif isinstance(value, str):
            yield value

    hidden = ["/autograder", str(root), str(root.resolve())] + ([BOX.bwrap, str(Path(BOX.bwrap).parent)] if BOX else [])
    shown = [(h, s) for s in strings(report) for h in hidden if h in s]
    assert not shown, "\n".join(f"{h!r} in {s[:300]!r}" for h, s in shown[:5])
    assert report["extra_data"]["tree"] == "exercises", report["extra_data"]["tree"]


# ------------------------------------------------------------------------------------ the bundle


def test_the_bundle_holds_the_grader_and_no_solutions(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    for script in ("setup.sh", "run_autograder"):
        assert script in infos, sorted(infos)
        assert (infos[script].external_attr >> 16) & 0o111, f"{script} is not executable in the zip"
        assert infos[script].create_system == 3
    names = [n for n in infos if not n.endswith("/")]
    assert not [n for n in names if n.startswith(("solutions/", "tests/meta/", "tests/bench/", ".git"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    expected = ["noxfile.py", "pyproject.toml", "tests/manifest.toml", "tests/harness/plugin.py", "tests/harness/options.py",
                "tests/harness/session.py", "tests/harness/sandbox.py",
                "tests/harness/gradescope.py", "exercises/attention.py", "reference/01_attention.npz"]
    expected += [f"tests/{e.test_file}" for e in manifest.load()]
    assert set(expected) <= set(names), sorted(set(expected) - set(names))
    dest = tmp_path / "unpacked"
    unpack(bundle, dest)
    assert release.leaks(dest) == []
    for script in ("setup.sh", "run_autograder"):
        if shutil.which("bash"):
            check = subprocess.run(["bash", "-n", str(dest / script)], capture_output=True, text=True)
            assert check.returncode == 0, check.stderr
    again = gradescope.write(tmp_path / "again.zip")
    assert again.read_bytes() == bundle.read_bytes(), "the same files must give the same bundle"
    page = ROOT / "tests" / "harness" / "instructors.md"  # Gradescope, step by step
    said = re.search(r"the stubs of `exercises/`:\s+about ([\d.]+) MB", page.read_text(encoding="utf-8"))
    size = bundle.stat().st_size / 1e6
    assert said and abs(float(said.group(1)) - size) <= 0.2 * size, f"tests/harness/instructors.md's size of the zip is not {size:.2f} MB"


def test_the_bundle_refuses_solution_code(tmp_path, monkeypatch):
    monkeypatch.setattr(gradescope, "COPY", [*gradescope.COPY, "solutions"])
    out = tmp_path / "leaky.zip"
    with pytest.raises(SystemExit, match="solution code would be in the autograder"):
        gradescope.write(out)
    assert not out.exists() and not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------ run_autograder


@SANDBOXED
def test_the_stubs_score_zero_every_exercise_reported_and_the_submissions_own_grader_unused(autograder, capsys):
    files = tree(ROOT / "exercises", "exercises/", leave_out=("block.py",))
    files |= {"tests/conftest.py": FORGED, "tests/test_01_attention.py": FORGED, "noxfile.py": FORGED,
              "exercises/conftest.py": FORGED, "pyproject.toml": "[tool.pytest.ini_options]\naddopts = ['-p', 'no:harness']\n"}
    submit(autograder, files)
    proc, report = run_autograder(autograder)
    explain = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["score"] == 0 and report["extra_data"]["max_score"] == FULL, explain
    assert [t["number"] for t in report["tests"]] == ALL, explain
    assert {t["extra_data"]["kata_status"] for t in report["tests"]} == {"not started"}, explain
    assert_gradescope_schema(report)
    assert report["output"].startswith("Not in your submission, so graded as the course's stubs: block.py."), report["output"][:300]
    assert report["extra_data"]["submission"]["layout"] == "the repository (exercises/)"
    assert_sandboxed_where_required(report, explain)
    assert_no_path_of_the_grader(report, autograder)
    assert "tree: exercises · seed" in report["output"], report["output"][:500]
    assert re.search(r"^next: 01 attention, exercises/attention\.py line \d+ ", proc.stdout, re.M), explain
    assert gradescope.check_stubs(report) == 0  # setup.sh's check of the image
    assert f"the stubs score 0/{FULL:g}, all {len(ALL)} exercises reported" in capsys.readouterr().out


@SANDBOXED
@pytest.mark.parametrize("layout", ["repository", "files", "folder"])
def test_the_solutions_score_full_marks_in_every_layout(autograder, layout):
    under, says = {"repository": ("exercises/", "the repository (exercises/)"),
                   "files": ("", "the files of exercises/"),
                   "folder": ("gpt-kata-main/exercises/", "one folder holding exercises/ (gpt-kata-main/exercises/)")}[layout]
    files = tree(ROOT / "solutions", under)
    if layout == "folder":
        files["gpt-kata-main/README.md"] = "a learner's repository, downloaded as a zip\n"
    submit(autograder, files)
    proc, report = run_autograder(autograder)
    explain = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["score"] == report["extra_data"]["max_score"] == FULL, explain
    assert [t["number"] for t in report["tests"]] == ALL and all(t["status"] == "passed" for t in report["tests"]), explain
    assert f"the submission is {says}:" in proc.stdout, explain
    assert_gradescope_schema(report)
    assert_sandboxed_where_required(report, explain)
    assert_no_path_of_the_grader(report, autograder)
    # nothing was missing: results.json is the grader's report, byte for byte, as its digest says
    digest = re.search(r"written last; sha256 ([0-9a-f]{64})", proc.stdout)
    data = (autograder / "results" / "results.json").read_bytes()
    assert digest and hashlib.sha256(data).hexdigest() == digest.group(1), explain


def test_a_submission_without_exercises_scores_zero_and_says_what_to_submit(autograder):
    submit(autograder, {"notes.txt": "my answers are in my head\n", "data/x.csv": "1,2\n"})
    proc, report = run_autograder(autograder)
    assert report["score"] == 0 and report["tests"] == [], proc.stdout
    assert "no exercises were found in the submission: it holds data/, notes.txt" in report["output"]
    assert "the .py files of exercises/ themselves" in report["output"]
    assert_gradescope_schema(report)


def test_a_module_that_is_a_symbolic_link_is_never_followed(tmp_path):
    sub = tmp_path / "submission"
    sub.mkdir()
    shutil.copyfile(ROOT / "exercises" / "layers.py", sub / "layers.py")
    (sub / "attention.py").symlink_to(ROOT / "solutions" / "attention.py")
    found, _ = gradescope.find_tree(sub)
    taken, stubs, ignored = gradescope.assemble(found, tmp_path / "graded")
    assert taken == ["layers.py"] and ignored == ["attention.py (a symbolic link)"] and "attention.py" not in stubs
    assert (tmp_path / "graded" / "attention.py").read_bytes() == (ROOT / "exercises" / "attention.py").read_bytes()
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "exercises").symlink_to(ROOT / "solutions")
    assert gradescope.find_tree(linked)[0] is None


def test_results_exist_even_when_the_grade_cannot_run(autograder, tmp_path):
    submit(autograder, tree(ROOT / "exercises"))
    for python in (str(tmp_path / "no-such-python"), shutil.which("false") or "/bin/false"):
        proc, report = run_autograder(autograder, python=python)
        assert report["score"] == 0 and "The autograder could not run" in report["output"], proc.stderr
        assert report["output_format"] == "text"
    # a grader that crashes before it writes its report: a copy of the bundle with a broken manifest
    broken = tmp_path / "broken"
    shutil.copytree(autograder / "source", broken / "source")
    shutil.copy2(autograder / "run_autograder", broken / "run_autograder")
    (broken / "source" / "tests" / "manifest.toml").write_text("[[exercise]]\nid = 1\n", encoding="utf-8")
    submit(broken, tree(ROOT / "solutions"))
    proc, report = run_autograder(broken)
    assert report["score"] == 0 and not report["extra_data"].get("finished"), proc.stdout[-3000:]
    assert "so this submission scores 0" in report["output"] and "manifest" in report["output"], report["output"]
    assert_gradescope_schema(report)


def test_where_no_sandbox_can_run_the_submission_is_not_graded_and_the_instructor_is_told(autograder, tmp_path):
    """A grading environment with no bubblewrap recorded (as where none could start when it was
    made): the solutions score 0, and results.json says why, for the instructor."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    said = subprocess.run([str(python), "-c", purelib], capture_output=True, text=True, check=True)
    site_packages = Path(said.stdout.strip())
    (site_packages / "kata_borrow.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
    submit(autograder, tree(ROOT / "solutions"))
    proc, report = run_autograder(autograder, python=str(python))
    explain = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert report["score"] == 0 and report["tests"] == [] and not report["extra_data"]["finished"], explain
    assert report["extra_data"]["sandbox"] == "none", explain
    said = report["output"]
    assert "could not start its sandbox" in said and "For the instructor" in said, said
    assert "no bubblewrap is recorded" in report["output"] and "nox -s env" in report["output"], report["output"]
    assert "not graded: no sandbox can run here" in proc.stdout, explain
    assert_gradescope_schema(report)


def test_a_void_grades_message_names_no_path_of_the_machine(tmp_path):
    """The rare messages (the environment changed, no sandbox) name the grader's environment and
    checkout; under --show-tree-as they are named by what they are."""
    import sys as _sys

    from harness.manifest import ROOT as CHECKOUT
    from harness.report import hide_paths

    tree = tmp_path / "graded" / "exercises"
    report = {"output": f"GRADE VOID: the environment {_sys.prefix} changed: {_sys.prefix}/bin/x was added",
              "tests": [{"output": f"{tree}/attention.py line 3; {CHECKOUT}/tests/harness/plugin.py"}],
              "extra_data": {"tree": str(tree), "void": [f"{CHECKOUT}/reference changed"]}}
    hidden = hide_paths(report, "exercises", tree)
    text = json.dumps(hidden)
    for path in (_sys.prefix, str(tree), str(CHECKOUT)):
        assert path not in text, (path, text)
    assert "exercises/attention.py line 3" in text and "the grader's environment changed" in text
    assert hide_paths(report, None, tree) == report  # a grade that shows its paths keeps them
