"""`nox -s class`: a made-up class graded as an instructor grades one, every output checked against
what grading each submission alone says.

The class (exercises 01 and 03 only, to stay fast; one seed for everyone):

- ``good``: a clone of the course with the solutions in exercises/;
- ``stubs``: the files of exercises/ as a learner starts them;
- ``two-mistakes.zip``: a zip of one folder holding exercises/ (GitHub's "Download ZIP"), with a
  softmax over the wrong axis (01) and each distinct pair counted once (03);
- ``causal``: the causal mask's diagonal masked (01), in a bare git repository;
- ``broken``: a folder with no exercises in it;
- ``hostile``: the solutions, with an attention.py that walks the caller's frames;
- ``not-a-zip.zip``: a file that only says it is a zip;
- ``hang``: a softmax that never returns.

Then the page (``index.html``) is opened in a headless Chromium (Playwright), where one is installed.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from helpers import make_tree

from harness import sandbox
from harness.manifest import ROOT

BOX, WHY = sandbox.find()
REQUIRED = os.environ.get("KATA_REQUIRE_SANDBOX") == "1"
SANDBOXED = pytest.mark.skipif(BOX is None and not REQUIRED, reason=f"no sandbox here: {WHY}")
SEED = "20261207"
EXERCISES = ("01", "03")

WRONG_AXIS = [("return softmax(scores, dim=-1) @ v", "return softmax(scores, dim=-2) @ v")]
DISTINCT = [("counts[pair] = counts.get(pair, 0) + 1", "counts[pair] = 1")]
CAUSAL = "allowed = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()"
DIAGONAL = [(CAUSAL, CAUSAL.replace(".tril()", ".tril(-1)"))]
FRAMES = ("import torch\n", "import inspect\nimport torch\n_CALLER = inspect.currentframe().f_back\n")
HANG = ("    m = x.amax(dim=dim, keepdim=True)  # x's shape with size 1 along dim\n",
        "    while True:\n        pass\n")


def _clone(tmp: Path, name: str, edits=None) -> Path:
    """A folder as `git clone` leaves one: README.md, exercises/ (holding ``edits`` of the solutions)."""
    folder = tmp / name
    folder.mkdir()
    (folder / "README.md").write_text("a learner's copy\n")
    stage = Path(tempfile.mkdtemp())
    make_tree(stage, edits or {}, name)
    shutil.move(stage / name, folder / "exercises")
    shutil.rmtree(stage)
    return folder


def _zip(folder: Path, dest: Path, prefix: str) -> None:
    with zipfile.ZipFile(dest, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                z.write(p, f"{prefix}/{p.relative_to(folder)}")


def _bare_repo(source: Path, dest: Path) -> bool:
    git = shutil.which("git")
    if git is None:
        return False
    env = {**os.environ, "GIT_AUTHOR_NAME": "l", "GIT_AUTHOR_EMAIL": "l@x", "GIT_COMMITTER_NAME": "l",
           "GIT_COMMITTER_EMAIL": "l@x"}
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "done"]):
        subprocess.run([git, *cmd], cwd=source, check=True, env=env, capture_output=True)
    subprocess.run([git, "clone", "-q", "--bare", str(source), str(dest)], check=True, capture_output=True)
    return True


def run_class(submissions: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "tests" / "harness" / "classgrade.py"), str(submissions), "--out", str(out),
           "--seed", SEED, *[a for e in EXERCISES for a in ("-e", e)], *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)


def grade_alone(tree: Path, tmp: Path) -> dict:
    """The report of `nox -s grade -- --impl TREE` on the same exercises and seed."""
    report = tmp / f"alone-{tree.parent.name}-{tree.name}.json"
    chosen = [a for e in EXERCISES for a in ("--exercise", e)]
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests"), *chosen, "--grade", "-q", "--assert=plain", "--impl", str(tree),
           "--report", str(report), "--seed", SEED, "--require-sandbox"]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    return json.loads(report.read_text())


def build_class(tmp: Path) -> tuple[Path, dict[str, Path]]:
    """The made-up class in ``tmp/submissions``, and for each submission that grades, the
    exercises folder that grading it alone grades (``tests/bench/bench_grading.py --class`` times it)."""
    subs = tmp / "submissions"
    subs.mkdir()
    trees = {}
    trees["good"] = _clone(subs, "good") / "exercises"
    shutil.copytree(ROOT / "exercises", subs / "stubs", ignore=shutil.ignore_patterns("__pycache__"))
    trees["stubs"] = subs / "stubs"
    two = _clone(tmp, "two-mistakes", {"attention.py": WRONG_AXIS, "bpe.py": DISTINCT})
    _zip(two, subs / "two-mistakes.zip", "gpt-kata-main")
    trees["two-mistakes"] = two / "exercises"
    causal = _clone(tmp, "causal", {"attention.py": DIAGONAL})
    if _bare_repo(causal, subs / "causal.git"):
        trees["causal.git"] = causal / "exercises"
    (subs / "broken").mkdir()
    (subs / "broken" / "notes.txt").write_text("I will submit next week\n")
    trees["hostile"] = _clone(subs, "hostile", {"attention.py": [FRAMES]}) / "exercises"
    (subs / "not-a-zip.zip").write_text("not a zip\n")
    trees["hang"] = _clone(subs, "hang", {"attention.py": [HANG]}) / "exercises"
    (subs / "a note.txt").write_text("skipped: not a submission\n")
    return subs, trees


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("class")
    subs, trees = build_class(tmp)
    out = tmp / "out"
    first = run_class(subs, out)
    return tmp, subs, out, trees, first


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@SANDBOXED
def test_grades_csv_is_what_each_submission_graded_alone_gives(graded_class):
    tmp, subs, out, trees, proc = graded_class
    explain = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, explain
    rows = {r["submission"]: r for r in _rows(out / "grades.csv")}
    assert list(_rows(out / "grades.csv")[0]) == ["submission", "name", "email", "sid", "total", *EXERCISES, "status",
                                                  "note"]
    expected_ids = {"good", "stubs", "two-mistakes", "broken", "hostile", "not-a-zip", "hang"} | (
        {"causal.git"} if "causal.git" in trees else set())
    assert set(rows) == expected_ids, explain
    assert "skipped a note.txt: not a folder or a .zip" in proc.stdout, explain
    for sid, tree in trees.items():
        alone = grade_alone(tree, tmp)
        row = rows[sid]
        assert row["status"] == "graded", (sid, row, explain)
        for test in alone["tests"]:
            assert float(row[test["number"]]) == test["score"], (sid, test["number"], row, test["output"])
        assert float(row["total"]) == alone["score"], (sid, row)
        report = json.loads((out / "submissions" / sid / "results.json").read_text())
        assert report["extra_data"]["seed"] == int(SEED)
    assert float(rows["good"]["total"]) == 15 and float(rows["stubs"]["total"]) == 0
    assert float(rows["two-mistakes"]["01"]) < 10 and float(rows["two-mistakes"]["03"]) < 5


@SANDBOXED
def test_what_could_not_be_graded_is_marked_never_scored(graded_class):
    _, _, out, _, proc = graded_class
    rows = {r["submission"]: r for r in _rows(out / "grades.csv")}
    for sid, says in (("broken", "no exercises were found"), ("not-a-zip", "is not a zip file")):
        row = rows[sid]
        assert row["status"] == "not graded" and says in row["note"], row
        assert row["total"] == "" and all(row[e] == "" for e in EXERCISES), row
    hostile = rows["hostile"]
    assert float(hostile["01"]) == 0 and "allow-list" in hostile["note"] and "01" in hostile["note"], hostile
    assert float(hostile["03"]) == 5, hostile  # its bpe.py is the solution's: only 01 imports the refused code
    hang = rows["hang"]
    assert 0 < float(hang["01"]) < 10 and float(hang["03"]) == 5, hang


@SANDBOXED
def test_mistakes_csv_lists_each_named_mistake_of_the_graded_trees(graded_class):
    _, _, out, trees, _ = graded_class
    named = {(r["submission"], r["exercise"], r["mistake"]) for r in _rows(out / "mistakes.csv")}
    assert ("two-mistakes", "01", "softmax over the wrong axis") in {(s, e, m.split(" (")[0]) for s, e, m in named}, named
    assert ("two-mistakes", "03", "each distinct pair counted once") in named, named
    if "causal.git" in trees:
        assert any(s == "causal.git" and e == "01" and "diagonal" in m for s, e, m in named), named
    assert not any(s in ("good", "stubs", "broken") for s, _, _ in named), named
    for r in _rows(out / "mistakes.csv"):
        assert f"This looks like: {r['mistake']}" in r["message"], r  # the message the learner read


@SANDBOXED
def test_a_rerun_grades_only_what_changed(graded_class):
    tmp, subs, out, trees, _ = graded_class
    before = (out / "grades.csv").read_text()
    again = run_class(subs, out)
    assert again.returncode == 0, again.stderr
    kept = [line for line in again.stdout.splitlines() if "unchanged, kept" in line]
    assert len(kept) == len(trees), again.stdout  # every graded submission, none of the others
    assert (out / "grades.csv").read_text() == before
    good = subs / "good" / "exercises" / "bpe.py"
    good.write_text(good.read_text().replace(*DISTINCT[0]))
    third = run_class(subs, out)
    lines = {line.split()[0]: line for line in third.stdout.splitlines() if line and line.split()[0] in trees}
    assert "unchanged, kept" not in lines["good"] and "unchanged, kept" in lines["stubs"], third.stdout
    rows = {r["submission"]: r for r in _rows(out / "grades.csv")}
    assert float(rows["good"]["03"]) < 5 and float(rows["good"]["01"]) == 10, rows["good"]


@SANDBOXED
def test_the_page_holds_every_submission_and_mistake(graded_class):
    _, _, out, _, _ = graded_class
    page = (out / "index.html").read_text()
    # nothing is fetched when it opens: no script, style, image or font from elsewhere (an SVG's
    # xmlns="http://www.w3.org/2000/svg" names a namespace, it fetches nothing)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", page)
    assert "<svg" in page and "<script src" not in page and "<link" not in page
    for r in _rows(out / "grades.csv"):
        assert f'data-id="{r["submission"]}"' in page
    for r in _rows(out / "mistakes.csv"):
        assert r["mistake"].replace("'", "&#x27;") in page or r["mistake"] in page


def test_submissions_must_be_a_folder_of_them(tmp_path):
    tree = make_tree(tmp_path, {}, "exercises")
    proc = run_class(tree, tmp_path / "out", "--unsandboxed")
    assert proc.returncode == 2 and "give the folder that holds the submissions" in proc.stderr, proc.stderr
    proc = run_class(tmp_path / "missing", tmp_path / "out", "--unsandboxed")
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------ in a browser


def _browser():
    """Playwright and a Chromium it can start, or the reason there is none."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None, "Playwright is not installed (pip install playwright; it is in the `dev` extra)"
    path = os.environ.get("KATA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return (sync_playwright, path), None


@SANDBOXED
def test_the_page_in_chromium_sorts_and_lists_the_mistakes(graded_class):
    found, why = _browser()
    if found is None:
        pytest.skip(why)
    sync_playwright, path = found
    _, _, out, _, _ = graded_class
    rows = _rows(out / "grades.csv")
    mistakes = _rows(out / "mistakes.csv")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        except Exception as e:
            pytest.skip(f"no Chromium can start here ({str(e).splitlines()[0]}): apt install chromium, or "
                        "`playwright install chromium` where it can be downloaded")
        page = browser.new_page()
        page.goto((out / "index.html").as_uri())
        shown = page.eval_on_selector_all("#grades tbody tr", "rows => rows.map(r => r.dataset.id)")
        assert sorted(shown) == sorted(r["submission"] for r in rows)
        page.click('#grades th[data-col="total"]')
        totals = page.eval_on_selector_all("#grades tbody tr td.total", "cells => cells.map(c => c.dataset.sort)")
        numbers = [float(t) for t in totals]
        assert numbers == sorted(numbers), totals
        page.click('#grades th[data-col="total"]')
        numbers = [float(t) for t in page.eval_on_selector_all("#grades tbody tr td.total",
                                                                "cells => cells.map(c => c.dataset.sort)")]
        assert numbers == sorted(numbers, reverse=True)
        assert page.eval_on_selector("#grades tbody tr", "r => r.dataset.id") == max(
            (r for r in rows if r["total"]), key=lambda r: float(r["total"]))["submission"]
        listed = page.eval_on_selector_all(
            "section.exercise li.mistake",
            "items => items.map(i => [i.closest('section').dataset.ex, i.dataset.mistake, Number(i.dataset.count)])")
        counts: dict = {}
        for m in mistakes:
            counts.setdefault((m["exercise"], m["mistake"]), set()).add(m["submission"])
        assert sorted((e, m, c) for e, m, c in listed) == sorted((e, m, len(s)) for (e, m), s in counts.items())
        colour = page.eval_on_selector('#grades tr[data-id="good"] td[data-ex="01"]',
                                       "c => getComputedStyle(c).backgroundColor")
        assert colour == "rgb(200, 230, 201)", colour  # passed: green
        browser.close()


@SANDBOXED
def test_an_interrupted_class_keeps_what_it_graded_and_the_next_run_grades_the_rest(graded_class):
    _, subs, _, trees, _ = graded_class
    out = subs.parent / "interrupted"
    script = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "  # as a terminal's Ctrl-C
              "os.execv(sys.executable, sys.argv[1:])")
    cmd = [sys.executable, "-c", script, sys.executable, str(ROOT / "tests" / "harness" / "classgrade.py"), str(subs),
           "--out", str(out), "--seed", SEED, *[a for e in EXERCISES for a in ("-e", e)]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    for line in proc.stdout:
        if "  graded  " in line:  # the first graded submission ("not graded" has one space): the next grade is under way
            break
    proc.send_signal(2)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in stderr, (proc.returncode, stderr[-2000:])
    left = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(out) not in left, "a grade of the interrupted class is still running"
    rows = [json.loads(p.read_text()) for p in (out / "submissions").glob("*/row.json")]
    graded = {r["id"] for r in rows if r["status"] == "graded"}
    assert graded and len(graded) < len(trees), rows
    again = run_class(subs, out)
    kept = {line.split()[0] for line in again.stdout.splitlines() if "unchanged, kept" in line}
    assert kept == graded, again.stdout
    assert {r["submission"] for r in _rows(out / "grades.csv") if r["status"] == "graded"} == set(trees)


def test_text_that_looks_like_a_formula_stays_text_in_the_csv():
    from harness.classgrade import text_cell

    for text in ("=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tx"):
        assert text_cell(text) == "'" + text
    for text in ("softmax over the wrong axis", "1.5", ""):
        assert text_cell(text) == text


METADATA = """\
submission_101:
  :submitters:
  - :name: Ada Lovelace
    :sid: '1815'
    :email: ada@example.org
  :created_at: 2026-12-01 10:00:00.000000000 +00:00
  :score: 0.0
submission_102: !ruby/hash:ActiveSupport::HashWithIndifferentAccess
  :submitters:
  - :name: Alan Turing
    :sid: '1912'
    :email: alan@example.org
  - :name: Grace Hopper
    :sid: '1906'
    :email: grace@example.org
"""


@SANDBOXED
def test_a_gradescope_export_is_graded_with_who_made_each_submission(tmp_path):
    """Gradescope's "Export submissions" zip: one folder per submission (here the uploaded files of
    exercises/, and an upload with none), and submission_metadata.yml with Ruby's tags."""
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w") as z:
        z.writestr("assignment_7_export/submission_metadata.yml", METADATA)
        for p in sorted((ROOT / "solutions").glob("*.py")):
            z.write(p, f"assignment_7_export/submission_101/{p.name}")
        z.writestr("assignment_7_export/submission_102/answer.txt", "42\n")
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "tests" / "harness" / "classgrade.py"), str(export), "--out", str(out),
           "--seed", SEED, "-e", "03"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = {r["submission"]: r for r in _rows(out / "grades.csv")}
    assert set(rows) == {"submission_101", "submission_102"}, rows
    ada, group = rows["submission_101"], rows["submission_102"]
    assert (ada["name"], ada["email"], ada["sid"]) == ("Ada Lovelace", "ada@example.org", "1815"), ada
    assert ada["status"] == "graded" and float(ada["03"]) == 5, ada
    assert group["name"] == "Alan Turing; Grace Hopper" and group["sid"] == "1912; 1906", group
    assert group["status"] == "not graded" and group["total"] == "", group
