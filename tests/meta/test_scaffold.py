"""`nox -s new` scaffolds an exercise that fails, and the README's recipe alone makes it pass.

In a copy of the checkout: scaffold the exercise after the last, grade it (it fails: its solution still raises),
follow the recipe (the solution region, the oracle, the docstring, the task, the hints), grade
again: the solutions pass with the exercise's points, a wrong solution fails, the stubs are not
started, and the repository's own checks on the manifest and the stub tree pass in the copy.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

from helpers import checkout_copy, grade_in

from harness import manifest
from harness.manifest import ROOT
from harness.scaffold import PLACEHOLDER, plan

X = f"{max(int(e.id) for e in manifest.load()) + 1:02d}"  # the id after the course's last exercise
NEW = [X, "double", "doubling", "Double a tensor", "--function", "double", "--points", "5", "--depends-on", "01"]
FILES = ["tests/test_01_attention.py", f"tests/test_{X}_double.py"]


def scaffold(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tests/harness/scaffold.py", *args], cwd=checkout, capture_output=True, text=True, timeout=120)


def digest(checkout: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(checkout.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(checkout)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def follow_the_recipe(checkout: Path, solution: str) -> None:
    """The README's steps for the scaffolded files, with ``solution`` as the reference code."""
    edit(checkout / "solutions" / "doubling.py", f'raise NotImplementedError("{PLACEHOLDER}: write the reference solution of exercise {X} here")', solution)
    edit(checkout / "solutions" / "doubling.py", f"{PLACEHOLDER}: the task in a few words (the stub's message)", "twice x")
    edit(checkout / "solutions" / "doubling.py", f"{PLACEHOLDER}: the contract a learner codes against: what it takes (shapes, dtypes), what it\n    returns, what it raises.",
         "``2 * x``, elementwise, with x's shape and dtype.")
    test = checkout / "tests" / f"test_{X}_double.py"
    edit(test, f'raise NotImplementedError("{PLACEHOLDER}: write the oracle of exercise {X} in tests/test_{X}_double.py")', "return x + x")
    edit(test, f"{PLACEHOLDER}: say what is checked", "Checked")
    manifest = checkout / "tests" / "manifest.toml"
    for which in ("a first hint: the idea, in one sentence.", "a second hint: the step most learners miss.", "a last hint: nearly the line itself."):
        edit(manifest, f"{PLACEHOLDER}: {which}", f"Hint: {which}")
    stubs = subprocess.run([sys.executable, "tests/harness/stubs.py"], cwd=checkout, capture_output=True, text=True, timeout=120)
    assert stubs.returncode == 0, stubs.stdout + stubs.stderr


def test_a_scaffolded_exercise_fails_then_passes_with_the_recipe(tmp_path):
    checkout = checkout_copy(tmp_path)
    made = scaffold(checkout, *NEW)
    assert made.returncode == 0, made.stdout + made.stderr
    for rel in ("solutions/doubling.py", "exercises/doubling.py", f"tests/test_{X}_double.py"):
        assert (checkout / rel).is_file(), f"{rel} was not written:\n{made.stdout}"
    assert f"| {X} | `double` | Double a tensor | `doubling.py` | 5 |" in (checkout / "README.md").read_text(encoding="utf-8")

    first = grade_in(checkout, "solutions", tmp_path / "r1", files=FILES)
    assert first.status(X) == "not started" and first.exercise(X)["score"] == 0, first.explain()
    assert first.status("01") == "passed", first.explain()

    follow_the_recipe(checkout, "return 3 * x")  # a wrong solution: the check must be able to fail
    wrong = grade_in(checkout, "solutions", tmp_path / "r2", files=FILES)
    assert wrong.status(X) == "failing" and wrong.exercise(X)["score"] == 0, wrong.explain()

    edit(checkout / "solutions" / "doubling.py", "return 3 * x", "return 2 * x")
    subprocess.run([sys.executable, "tests/harness/stubs.py"], cwd=checkout, check=True, capture_output=True, timeout=120)
    right = grade_in(checkout, "solutions", tmp_path / "r3", files=FILES)
    assert right.status(X) == "passed" and right.exercise(X)["score"] == 5, right.explain()
    stubs = grade_in(checkout, "exercises", tmp_path / "r4", files=FILES)
    assert stubs.status(X) == "not started", stubs.explain()

    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/meta/test_manifest.py", "tests/meta/test_one_source.py"],
                         cwd=checkout, capture_output=True, text=True, timeout=300)
    assert own.returncode == 0, own.stdout[-4000:] + own.stderr[-2000:]


def test_a_scaffolded_class_is_not_started_then_passes_once_written(tmp_path):
    """`--class NAME`: an nn.Module whose __init__ and forward are the learner's, graded through impl.module."""
    checkout = checkout_copy(tmp_path)
    made = scaffold(checkout, X, "scale", "scaling", "Scale by a learned weight", "--class", "Scale")
    assert made.returncode == 0, made.stdout + made.stderr
    files = ["tests/test_01_attention.py", f"tests/test_{X}_scale.py"]
    first = grade_in(checkout, "solutions", tmp_path / "c1", files=files)
    assert first.status(X) == "not started" and first.status("01") == "passed", first.explain()
    solution = checkout / "solutions" / "scaling.py"
    edit(solution, f'raise NotImplementedError("{PLACEHOLDER}: write the reference __init__ of exercise {X} here")',
         "self.weight = nn.Parameter(torch.full((dim,), 2.0))  # (dim,)")
    edit(solution, f'raise NotImplementedError("{PLACEHOLDER}: write the reference forward of exercise {X} here")',
         "return x * self.weight  # (..., dim)")
    edit(solution, f"{PLACEHOLDER}: what __init__ builds, in a few words (the stub's message)", "a weight of twos")
    edit(solution, f"{PLACEHOLDER}: the task in a few words (the stub's message)", "x times the weight")
    edit(solution, f"{PLACEHOLDER}: the contract a learner codes against", "``weight`` of shape (dim,), twos; x * weight")
    test = checkout / "tests" / f"test_{X}_scale.py"
    edit(test, f'raise NotImplementedError("{PLACEHOLDER}: write the oracle of exercise {X} in tests/test_{X}_scale.py")',
         "return 2 * x")
    subprocess.run([sys.executable, "tests/harness/stubs.py"], cwd=checkout, check=True, capture_output=True, timeout=120)
    right = grade_in(checkout, "solutions", tmp_path / "c2", files=files)
    assert right.status(X) == "passed" and right.exercise(X)["score"] == 10, right.explain()
    stub = (checkout / "exercises" / "scaling.py").read_text(encoding="utf-8")
    assert "class Scale(nn.Module):" in stub and "torch.full" not in stub and "a weight of twos" in stub
    stubs = grade_in(checkout, "exercises", tmp_path / "c3", files=files)
    assert stubs.status(X) == "not started", stubs.explain()


def test_bad_arguments_say_what_was_expected_and_write_nothing(tmp_path):
    checkout = checkout_copy(tmp_path)
    before = digest(checkout)
    for args, words in [
        (["18", "again", "again", "Again"], "exists already"),
        (["7", "seven", "seven", "Seven"], "two digits"),
        ([X, "Bad-Slug", "bad", "Bad"], "lower_snake_case"),
        ([X, "ok", "ok", "Ok", "--depends-on", "42"], "not an exercise of the manifest"),
        ([X, "ok", "ok", 'A "quoted" title'], "without double quotes"),
        ([X, "ok", "model", "Ok", "--function", "GPTModel"], "lower_snake_case"),
        ([X, "ok", "ok", "Ok", "--class", "lower_case"], "CapWords"),
        ([X, "ok", "ok", "Ok", "--class", "Ok", "--function", "ok"], "not both"),
        ([X, "ok", "attention", "Ok", "--class", "Ok"], "does not import nn"),
    ]:
        done = scaffold(checkout, *args)
        assert done.returncode == 2 and words in done.stderr, (args, done.stdout, done.stderr)
        assert digest(checkout) == before, f"{args} changed the checkout although it was refused"
    done = scaffold(checkout, X, "again_ok", "attention", "Again", "--function", "softmax")
    assert done.returncode == 2 and "already defines softmax" in done.stderr, done.stderr
    assert digest(checkout) == before


def test_the_readme_shows_a_new_command_the_scaffold_takes():
    """Each `nox -s new -- ID ...` the README shows (`nox -s stubs` writes the next id into them; the
    noxfile says ID) names the id after the last exercise, and its arguments (the optional ones in
    brackets left out) pass every check of the scaffold, which writes nothing here."""
    shown = []
    for name in ("README.md",):
        text = (ROOT / name).read_text(encoding="utf-8")
        shown += [(name, m.group(1)) for m in re.finditer(r"nox -s new -- (\d\d [^`#\n]*)", text)]
    assert len(shown) >= 2, shown
    for name, args in shown:
        argv = shlex.split(re.sub(r"\[[^\]]*\]", "", args))
        assert argv[0] == X, f"{name} shows `nox -s new -- {args.strip()}`, which the scaffold refuses: the next id is {X}"
        assert plan(ROOT, *argv[:4]), f"{name}: `nox -s new -- {args.strip()}`"
