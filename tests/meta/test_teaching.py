"""Grading that teaches: blocked status, hints, the CI summary, watch mode, the student release."""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import grade, make_tree

from harness import hints, manifest, release, summary
from harness.manifest import Exercise, ROOT
from harness.plugin import Check, Kata, Outcome, scoreboard


def fake_kata(outcomes):
    kata = object.__new__(Kata)
    kata.outcomes = {o.exercise.id: o for o in outcomes}
    kata.void, kata.in_process, kata.tree_label, kata.tree, kata.seed = [], False, "exercises", ROOT / "exercises", 7
    kata.sandbox, kata.sandbox_reason, kata.backend = None, "a test's fake grade", None
    kata.shown_as = None
    return kata


def test_an_exercise_whose_prerequisite_fails_is_shown_blocked():
    real = manifest.load()
    base = Outcome(real[0], [Check("a", "a", "failing", "wrong")])
    dependent_ex = Exercise(id=real[1].id, slug=real[1].slug, title=real[1].title, module=real[1].module,
                            functions=real[1].functions, points=real[1].points, depends_on=(real[0].id,))
    dependent = Outcome(dependent_ex, [Check("b", "b", "passed")])
    kata = fake_kata([base, dependent])
    board = scoreboard(kata)
    line = next(line for line in board.splitlines() if f" {real[1].id}  " in line)
    assert f"passed · builds on {real[0].id} {real[0].slug}, not passing yet" in line
    assert kata.score(dependent) == real[1].points  # its own points still count
    base.checks[0] = Check("a", "a", "passed")
    assert "blocked" not in scoreboard(kata)


def test_hints_come_one_more_each_time_and_remember_progress(tmp_path):
    state = tmp_path / "hints.json"
    ex = manifest.lookup("01")
    first = hints.next_hint("attention", state)
    assert first.startswith(f"Hint 1 of {len(ex.hints)} for 01 (attention): {ex.hints[0]}")
    second = hints.next_hint("1", state)
    assert f"Hint 2 of {len(ex.hints)}" in second and ex.hints[1] in second
    assert json.loads(state.read_text()) == {"01": 2}
    again = hints.next_hint("01", state, again=True)
    assert ex.hints[0] in again and ex.hints[1] in again and ex.hints[2] not in again
    for _ in range(len(ex.hints)):
        last = hints.next_hint("01", state)
    assert "That was the last hint" in last
    assert "start again" in hints.next_hint("01", state, reset=True)
    assert hints.next_hint("01", state).startswith("Hint 1 of")
    with pytest.raises(KeyError, match="the exercises are"):
        hints.next_hint("nope", state)


def test_hint_cli_says_how_to_use_it():
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "harness" / "hints.py")], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: nox -s hint -- ID" in proc.stderr


def test_summary_renders_a_markdown_scoreboard(tmp_path):
    g = grade("exercises", tmp_path, "--exercise", "01")
    md = summary.markdown(g.report)
    assert "| ⬜ | 01 | Softmax, causal mask, scaled dot-product attention | 0/10 | not started |" in md
    assert "**Total: 0/10**" in md
    unfinished = summary.markdown({"extra_data": {"finished": False}})
    assert "did not finish" in unfinished


def test_grade_workflow_is_cheap_and_skips_the_untouched_stubs():
    yaml = pytest.importorskip("yaml")
    text = (ROOT / ".github" / "workflows" / "grade.yml").read_text()
    flow = yaml.safe_load(text)
    steps = flow["jobs"]["grade"]["steps"]
    uses = {s["uses"].split("@")[0] for s in steps if "uses" in s}
    assert uses <= {"actions/checkout", "actions/setup-python", "actions/cache/restore", "actions/cache/save", "actions/upload-artifact"}, uses
    assert flow["concurrency"]["cancel-in-progress"] is True
    assert flow["jobs"]["grade"]["env"]["KATA_TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert any(s.get("with", {}).get("cache") == "pip" for s in steps)
    names = [s.get("name", s.get("uses", "")) for s in steps]
    assert names.index("Save the environment") < names.index("Grade"), "the environment is saved before any learner code runs"
    assert names.index("Record the environment") < names.index("Grade")
    # the sandbox is required, and installed before the environment records which bwrap grades use
    assert names.index("Sandbox (bubblewrap)") < names.index("Build the environment")
    assert names.index("Build the environment") < names.index("Record the environment")
    graded = [s for s in steps if s.get("name") == "Grade"][0]
    assert "steps.started.outputs.grade == 'yes'" in graded["if"] and "--require-sandbox" in graded["run"]


def test_untouched_stubs_are_recognised(tmp_path):
    from harness import stubs

    assert stubs.untouched(ROOT / "exercises") and not stubs.untouched(ROOT / "solutions")
    tree = make_tree(tmp_path)
    for name in ("attention.py", "layers.py"):
        (tree / name).write_text((ROOT / "exercises" / name).read_text())
    assert not stubs.untouched(tree), "a tree with some exercises done is graded"
    started = tmp_path / "started"
    shutil.copytree(ROOT / "exercises", started)
    (started / "attention.py").write_text((ROOT / "solutions" / "attention.py").read_text())
    assert not stubs.untouched(started), "one exercise written is enough to grade"


def test_workflows_run_commands_that_exist():
    grade_yml = (ROOT / ".github" / "workflows" / "grade.yml").read_text()
    assert "nox -s grade -- --report results.json" in grade_yml
    assert "tests/harness/summary.py results.json >> \"$GITHUB_STEP_SUMMARY\"" in grade_yml
    assert "actions/upload-artifact" in grade_yml and "path: results.json" in grade_yml
    for path in re.findall(r"\b(tests/[\w/]+\.py|\.ci/run)\b", grade_yml + (ROOT / ".github" / "workflows" / "ci.yml").read_text()):
        assert (ROOT / path).exists(), path


def test_watch_regrades_the_saved_exercise(tmp_path):
    pytest.importorskip("watchfiles", reason="watch mode needs watchfiles (nox -s watch installs it)")
    tree = make_tree(tmp_path)
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "harness" / "watch.py"), "--impl", str(tree), "--exit-after", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "watching" in proc.stdout.readline()
        time.sleep(1.0)
        layers = tree / "layers.py"
        layers.write_text(layers.read_text().replace("return 0.5 * x * (1.0 + torch.tanh", "return 0.4 * x * (1.0 + torch.tanh"))
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert "layers.py changed: grading 02 layernorm" in out, out
    assert re.search(r"✗ 02  LayerNorm and GELU from first principles  [\d.]+/10  failing", out), out
    assert " 01 " not in out


def test_release_has_no_solutions_grades_stubs_zero_and_solutions_full(tmp_path):
    dest = tmp_path / "release"
    assert release.write(dest) == []
    assert not (dest / "solutions").exists() and not (dest / "tests" / "meta").exists()
    assert (dest / "exercises" / "attention.py").exists() and list((dest / "reference").glob("*.npz"))
    assert release.leaks(dest) == []
    log = subprocess.run(["git", "log", "--oneline"], cwd=dest, capture_output=True, text=True).stdout.splitlines()
    assert len(log) == 1, log
    assert subprocess.run(["git", "status", "--porcelain"], cwd=dest, capture_output=True, text=True).stdout == ""
    graded = sorted(str(p.relative_to(dest)) for p in (dest / "tests").glob("test_[0-9][0-9]_*.py"))
    for tree, full in (("exercises", False), (str(ROOT / "solutions"), True)):
        report = tmp_path / f"{Path(tree).name}.json"
        proc = subprocess.run([sys.executable, "-m", "pytest", *graded, "--grade", "-q", "--impl", tree, "--report", str(report)],
                              cwd=dest, capture_output=True, text=True, timeout=300)
        data = json.loads(report.read_text())
        assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout[-3000:]
        if full:
            assert proc.returncode == 0 and data["score"] == data["extra_data"]["max_score"], proc.stdout[-3000:]
        else:
            assert proc.returncode != 0 and data["score"] == 0, proc.stdout[-3000:]
            assert {t["extra_data"]["kata_status"] for t in data["tests"]} == {"not started"}


def test_release_refuses_to_leak_solution_code(tmp_path):
    dest = tmp_path / "leaky"
    dest.mkdir()
    (dest / "notes.py").write_text((ROOT / "solutions" / "layers.py").read_text())
    assert any("solutions/layers.py" in leak for leak in release.leaks(dest))
    with pytest.raises(SystemExit, match="not empty"):
        release.write(dest)


def test_a_finite_value_where_the_oracle_gives_nan_fails():
    import torch

    from harness.compare import assert_close
    from harness.failures import Mismatch

    with pytest.raises(Mismatch, match="gives NaN"):
        assert_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, float("nan")]), "the loss")
    assert_close(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, float("nan")]), "the loss")  # NaN where NaN is due
