"""GitHub Classroom's workflow: written from the manifest, one graded step per exercise worth its
points, only the actions whose inputs were checked, and the checked-in file is what the
generator writes (one source)."""

from __future__ import annotations

import re

import pytest

from harness import classroom, manifest, release
from harness.manifest import ROOT

ALLOWED_ACTIONS = {
    "actions/checkout@v4",
    "actions/setup-python@v5",
    "classroom-resources/autograding-command-grader@v1",
    "classroom-resources/autograding-grading-reporter@v1",
}
# the inputs each action takes (read in its action.yml / README), and so the only ones used here
INPUTS = {
    "actions/checkout@v4": set(),
    "actions/setup-python@v5": {"python-version", "cache", "cache-dependency-path"},
    "classroom-resources/autograding-command-grader@v1": {"test-name", "setup-command", "command", "timeout", "max-score"},
    "classroom-resources/autograding-grading-reporter@v1": {"runners"},
}
MANIFEST_TEXT = (ROOT / "tests" / "manifest.toml").read_text(encoding="utf-8")


def steps(wf: dict) -> list[dict]:
    assert list(wf["jobs"]) == ["run-autograding-tests"], "Classroom reads one job named run-autograding-tests"
    return wf["jobs"]["run-autograding-tests"]["steps"]


def graded(wf: dict) -> list[dict]:
    return [s for s in steps(wf) if s.get("uses") == classroom.COMMAND_GRADER]


def parsed(text: str) -> dict:
    yaml = pytest.importorskip("yaml", reason="reading the workflow back needs PyYAML")
    return yaml.safe_load(text)


def test_the_workflow_parses_back_to_what_the_generator_meant():
    text = classroom.text()
    wf = parsed(text)
    assert wf == classroom.workflow()
    assert wf["name"] == "Autograding Tests", "Classroom reads the scores of the workflow of this name"
    assert set(wf["on"]) == {"push", "workflow_dispatch", "repository_dispatch"}
    assert wf["concurrency"]["cancel-in-progress"] is True and "github.ref" in wf["concurrency"]["group"]


def test_only_verified_actions_with_their_inputs_and_pinned_majors():
    wf = classroom.workflow()
    used = [s["uses"] for s in steps(wf) if "uses" in s]
    assert set(used) <= ALLOWED_ACTIONS, set(used) - ALLOWED_ACTIONS
    assert set(classroom.ACTIONS) == ALLOWED_ACTIONS
    for s in steps(wf):
        if "uses" in s:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", s["uses"]), s["uses"]
            assert set(s.get("with", {})) <= INPUTS[s["uses"]], (s["uses"], set(s.get("with", {})) - INPUTS[s["uses"]])
    # and in the text: no `uses:` outside the list (a comment or a hand edit would show here)
    assert set(re.findall(r"uses:\s*'?\"?([^\s'\"]+)", classroom.text())) <= ALLOWED_ACTIONS


def test_one_graded_step_per_exercise_worth_its_points():
    exercises = manifest.load()
    wf = classroom.workflow()
    steps_ = graded(wf)
    assert [s["id"] for s in steps_] == [f"ex{ex.id}" for ex in exercises]
    for s, ex in zip(steps_, exercises):
        assert s["with"]["command"] == f"nox -s grade -- {ex.id} --require-sandbox"
        assert s["with"]["max-score"] == ex.points and isinstance(s["with"]["max-score"], int)
        assert s["with"]["test-name"].startswith(f"{ex.id} {ex.slug}")
        assert 0 < s["with"]["timeout"] <= wf["jobs"]["run-autograding-tests"]["timeout-minutes"]
    total = sum(s["with"]["max-score"] for s in steps_)
    assert total == sum(ex.points for ex in exercises)


def test_the_reporter_reads_every_graded_step():
    wf = classroom.workflow()
    last = steps(wf)[-1]
    assert last["uses"] == classroom.REPORTER
    ids = [s["id"] for s in graded(wf)]
    assert last["with"]["runners"].split(",") == ids
    assert last["env"] == {f"{i.upper()}_RESULTS": f"${{{{ steps.{i}.outputs.result }}}}" for i in ids}
    assert all(re.fullmatch(r"[A-Za-z0-9]+", i) for i in ids), "the reporter's runners are letters and digits"


def test_the_environment_is_built_once_before_the_grading_with_cpu_torch():
    all_steps = steps(classroom.workflow())
    first = next(i for i, s in enumerate(all_steps) if s.get("uses") == classroom.COMMAND_GRADER)
    before, after = all_steps[:first], all_steps[first:]
    build = [s for s in before if "nox -s env" in s.get("run", "")]
    assert len(build) == 1 and build[0]["env"] == {"KATA_TORCH_INDEX": "https://download.pytorch.org/whl/cpu"}
    runs = "\n".join(s.get("run", "") for s in before)
    assert "bubblewrap" in runs and "apparmor_restrict_unprivileged_userns=0" in runs and "nox" in runs
    python = next(s for s in before if s.get("uses") == classroom.SETUP_PYTHON)
    assert python["with"]["python-version"] == "3.11" and python["with"]["cache"] == "pip"
    # the grading steps get no environment of their own (the command grader passes on only PATH
    # and HOME) and build nothing: their command is the grade alone
    assert all("env" not in s and "setup-command" not in s["with"] for s in after[:-1])


def test_a_changed_manifest_changes_the_workflow():
    text = re.sub(r'(slug = "layernorm"\n(?:.*\n)*?)points = 10', r"\1points = 7", MANIFEST_TEXT, count=1)
    assert text != MANIFEST_TEXT and '[[exercise]]\nid = "18"' in text
    fewer = manifest.parse(text.split('[[exercise]]\nid = "18"')[0])  # 01-17, layernorm worth 7
    wf = classroom.workflow(fewer)
    steps_ = graded(wf)
    assert [s["id"] for s in steps_] == [f"ex{i:02d}" for i in range(1, 18)]
    assert next(s for s in steps_ if s["id"] == "ex02")["with"]["max-score"] == 7
    assert sum(s["with"]["max-score"] for s in steps_) == sum(e.points for e in manifest.load() if int(e.id) < 18) - 3
    assert "ex18" not in steps(wf)[-1]["with"]["runners"].split(",")
    assert classroom.text(fewer) != classroom.text()


def test_points_that_the_command_grader_cannot_take_are_refused():
    text = re.sub(r'(slug = "attention"\n(?:.*\n)*?)points = 10', r"\1points = 2.5", MANIFEST_TEXT, count=1)
    with pytest.raises(classroom.ClassroomError, match="whole number"):
        classroom.workflow(manifest.parse(text))


def test_what_the_readme_says_a_run_costs_was_measured_on_this_course():
    """One step per exercise: the cost of a run that the instructors' page gives names as many steps
    as the manifest has exercises (a new exercise means timing the steps again)."""
    page = (ROOT / "tests" / "harness" / "instructors.md").read_text(encoding="utf-8")
    cost = " ".join(page.split("**What a run costs.**", 1)[1].split("\n\n", 1)[0].split())
    n = len(manifest.load())
    assert f"the {n} steps'" in cost and f"of all {n}," in cost, f"tests/harness/instructors.md's cost is not for {n} steps: {cost[:400]}"


def test_the_release_carries_the_workflow(tmp_path, monkeypatch):
    copied = []
    monkeypatch.setattr(release, "_git_init", lambda dest: copied.append(dest) or [])
    dest = tmp_path / "release"
    assert release.write(dest) == []
    assert (dest / classroom.WORKFLOW).read_text(encoding="utf-8") == classroom.text()
    assert (dest / ".github" / "workflows" / "grade.yml").exists()
