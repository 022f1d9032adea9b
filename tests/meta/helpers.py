"""Shared by the harness's own tests: copies of solutions/ with edits, and graded subprocess runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.manifest import ROOT

SOLUTIONS = ROOT / "solutions"
GRADED = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_[0-9][0-9]_*.py"))
# Hostile-tree tests grade the first two exercises only: two are enough to show that a fault in
# one leaves the other untouched, and the suite stays fast as the course grows.
CORE = [f for f in GRADED if Path(f).name.startswith(("test_01_", "test_02_"))]
# The top level of results.json as Gradescope documents it (gradescope-autograders.readthedocs.io/en/latest/specs):
# a report holds no other key there (the points possible are in extra_data).
GRADESCOPE_TOP_LEVEL = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
                        "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}


def make_tree(tmp: Path, edits: dict[str, list[tuple[str, str]]] | None = None, name: str = "tree") -> Path:
    """A copy of solutions/ where, in each file, ``old`` is replaced by ``new`` (which must exist)."""
    tree = tmp / name
    shutil.copytree(SOLUTIONS, tree, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, pairs in (edits or {}).items():
        path = tree / rel
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        for old, new in pairs:
            if old:
                assert old in text, f"{old!r} is not in {rel}"
                text = text.replace(old, new, 1)
            else:
                text = new + text
        path.write_text(text, encoding="utf-8")
    return tree


@dataclass
class Graded:
    code: int
    stdout: str
    stderr: str
    report: dict

    def exercise(self, eid: str) -> dict:
        return next(t for t in self.report["tests"] if t["number"] == eid)

    def status(self, eid: str) -> str:
        return self.exercise(eid)["extra_data"]["kata_status"]

    def explain(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout[-6000:]}\n--- stderr\n{self.stderr[-3000:]}"


def grade(tree: Path | str, tmp: Path, *args: str, timeout: float = 300, everything: bool = False) -> Graded:
    """Run the graded checks on ``tree`` in a fresh pytest process, as ``nox -s grade`` does:
    those of exercises 01 and 02, or with ``everything`` the whole course."""
    report = tmp / "report.json"
    files = GRADED if everything else CORE
    cmd = [sys.executable, "-m", "pytest", *files, "--grade", "-q", "--impl", str(tree), "--report", str(report), *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    data = json.loads(report.read_text()) if report.exists() else {}
    return Graded(proc.returncode, proc.stdout, proc.stderr, data)


def checkout_copy(tmp: Path) -> Path:
    """A copy of this checkout's grader (tests/, reference/, config) and trees, for tests whose
    hostile tree writes to the grader's files."""
    dest = tmp / "checkout"
    for name in ("tests", "reference", "solutions", "exercises"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("noxfile.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


def grade_in(checkout: Path, tree: Path | str, tmp: Path, *args: str, timeout: float = 300, files=None) -> Graded:
    """Like ``grade``, from another checkout (a copy made by ``checkout_copy``): the checks of
    exercises 01 and 02, or of ``files`` (paths relative to the checkout)."""
    report = tmp / "report.json"
    cmd = [sys.executable, "-m", "pytest", *(files or CORE), "--grade", "-q", "--impl", str(tree), "--report", str(report), *args]
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, timeout=timeout)
    data = json.loads(report.read_text()) if report.exists() else {}
    return Graded(proc.returncode, proc.stdout, proc.stderr, data)


# The grader, found the way a hostile tree would: the nearest process above that runs pytest.
FIND_GRADER = """
import os, pathlib
def _grader():
    pid = os.getpid()
    while pid > 1:
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().decode()
            parent = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            return None
        if "pytest" in args.split("\\0") and pid != os.getpid():
            return pid
        pid = parent
    return None
"""


# ------------------------------------------------------------------ named mistakes (fingerprints)
# A case is (the mistake's words, file, [(old, new)], graded test module, check): the check, run on
# a copy of solutions/ with the edits, must fail and its failure must carry the words.

SEEDS = (1, 2, 3)
# Words of the grader's own machinery, which a learner's failure message must not use.
HARNESS_WORDS = ("probe", "plain data", "harness", "scenario", "tree.", "tree_with", "substitute", "Impl", "wire")


def run_check(check, impl, seed: int):
    """A graded check, called as the grader calls it (with a fresh generator when it takes one)."""
    import torch

    return check(impl, torch.Generator().manual_seed(seed)) if check.__code__.co_argcount == 2 else check(impl)


def impl_for(tree: Path, module: str, worker: bool = False):
    """The graded test module and an in-process ``Impl`` of its exercise on ``tree``; with
    ``worker``, one whose probes run in a worker process (forked, unsandboxed), where what the
    kernel measures from outside the worker is there (``measure=True``). Its worker ends with it."""
    import importlib
    import weakref

    from harness.impl import Impl, InProcessBackend, WorkerBackend
    from harness.manifest import lookup

    tests = importlib.import_module(module)
    backend = WorkerBackend(tree) if worker else InProcessBackend(tree)
    impl = Impl(backend, lookup(tests.EXERCISE), {})
    if worker:
        weakref.finalize(impl, backend.close)
    return tests, impl


def assert_mistake_named(tmp: Path, mistake: str, file: str, edits, module: str, check: str, *,
                         exact: bool = False, named: bool = False, seeds=SEEDS, worker: bool = False) -> None:
    """The check fails on the mistake for every seed and says ``mistake``: right after "This looks
    like: " with ``exact`` (a Mismatch), somewhere after it with ``named``, else anywhere in what
    the learner reads. ``worker``: graded in a worker process, as ``impl_for``."""
    import pytest

    from harness.failures import GradingFailure, Mismatch

    tests, impl = impl_for(make_tree(tmp, {file: edits}), module, worker=worker)
    for seed in seeds:
        with pytest.raises(Mismatch if exact else GradingFailure) as failure:
            run_check(getattr(tests, check), impl, seed)
        said = str(failure.value) if exact else failure.value.explain()
        assert (f"This looks like: {mistake}" if exact else mistake) in said, f"seed {seed}: {said[:3000]}"
        leaked = [w for w in HARNESS_WORDS if w in failure.value.explain()]
        assert not leaked, f"seed {seed}: the message uses the grader's word(s) {leaked}: {failure.value.explain()[:3000]}"
        if named:
            assert "This looks like: " in said and mistake in said.split("This looks like: ", 1)[1], f"seed {seed}: {said[:3000]}"


def assert_checks_pass(tmp: Path, cases, seeds=SEEDS) -> None:
    """Every check the cases name passes on solutions/: the fingerprints do not fire on the reference."""
    tree = make_tree(tmp)
    for module, check in sorted({(c[3], c[4]) for c in cases}):
        tests, impl = impl_for(tree, module)
        for seed in seeds:
            run_check(getattr(tests, check), impl, seed)


def assert_not_named(tmp: Path, name: str, file: str, edits, module: str, check: str, *, seeds=SEEDS) -> None:
    """A near miss: on the edited copy of solutions/ the check may pass or fail, but for no seed
    does its failure say "This looks like: " followed by ``name`` (a name is given only when the
    evidence fits that mistake alone)."""
    from harness.failures import GradingFailure

    tests, impl = impl_for(make_tree(tmp, {file: edits}), module)
    for seed in seeds:
        try:
            run_check(getattr(tests, check), impl, seed)
        except GradingFailure as failure:
            said = failure.explain()
            named = said.split("This looks like: ", 1)[1] if "This looks like: " in said else ""
            assert name not in named, f"seed {seed}: a near miss was given the name {name!r}: {said[:3000]}"


# 09, 10 and 12 broken at once: a cache without the position offset that never advances, a GPTModel
# without position embeddings, a generate that always picks token 0 (35 and 37 must not notice).
BROKEN_09_10_12 = {
    "kv_cache.py": [("positions = torch.arange(start, start + num_tokens, device=in_idx.device)",
                     "positions = torch.arange(num_tokens, device=in_idx.device)"),
                    ("    cache.advance(num_tokens)  # once", "    pass  # once")],
    "model.py": [("x = self.tok_emb(in_idx) + self.pos_emb(positions)", "x = self.tok_emb(in_idx)")],
    "generate.py": [("            idx_next = logits.argmax(dim=-1, keepdim=True)  # (batch, 1)",
                     "            idx_next = torch.zeros_like(logits[:, :1], dtype=torch.long)")],
}


def assert_every_check_passes(tmp: Path, edits, module: str, seeds=SEEDS) -> None:
    """Every check of the graded test ``module`` passes, for each seed, on a copy of solutions/ with ``edits``."""
    tests, impl = impl_for(make_tree(tmp, edits), module)
    for name in [k for k in vars(tests) if k.startswith("test_")]:
        for seed in seeds:
            run_check(getattr(tests, name), impl, seed)
