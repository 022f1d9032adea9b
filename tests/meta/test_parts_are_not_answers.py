"""No trusted reference part is an answer (issue 24): the parts under ``tests/harness/parts/`` ship
with the release, so each part that stands in for an exercise, copied into the learner's tree as
that exercise's module, must score 0 on it.

A part stands in for the exercise whose module has its name (``parts/layers.py`` for exercise 02's
``layers.py``): the grader never sends it while that exercise is graded (``impl.py``). One copy of
``solutions/`` gets every such part's source as its exercise's module, imports adapted the way a
learner would (``load_part("layers")`` becomes the tree's own ``layers`` module), and those
exercises are graded in the sandbox, in one run: each must score 0, every check failing on its own
module (the grader substitutes the parts for the modules an exercise builds on, so another
exercise's copy never runs in its checks).

Every part computes through ``torch.ops``, which the allow-list for the tree's code refuses
(``tests/allowlist.toml``, rule ``internals``), so a copied part is refused whole before it runs. Parts
whose exercise forbids built-ins that no exercise using the part forbids also call one of them at
import, so the worker's refusals would zero them too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import allowlist, impl, sandbox
from harness.manifest import ROOT, load

BOX, WHY = sandbox.find()
REQUIRED = os.environ.get("KATA_REQUIRE_SANDBOX") == "1"
SANDBOXED = pytest.mark.skipif(BOX is None and not REQUIRED, reason=f"no sandbox here: {WHY}")

# Exercise -> the part standing in for it: every part named after an exercise's module.
STANDS_FOR = {e.id: e.module for e in load() if e.module in impl.PART_SOURCES}
IMPORT = re.compile(r"^from harness\.worker\.parts import load as load_part\n", re.M)
LOAD = re.compile(r"""\bload_part\(["'](\w+)["']\)""")


def as_learner_module(source: str) -> str:
    """The part's source as a learner would paste it into the tree: ``load_part("x")`` (the grader's
    loader of parts) becomes the tree's own module ``x``, imported relatively."""
    names = sorted(set(LOAD.findall(source)))
    source = IMPORT.sub("".join(f"from . import {n} as part_{n}\n" for n in names), source)
    assert "harness" not in source.replace("harness/", ""), "a part imports the grader in a way this test cannot adapt"
    return LOAD.sub(lambda m: f"part_{m.group(1)}", source)


def graded_file(eid: str) -> str:
    found = sorted((ROOT / "tests").glob(f"test_{eid}_*.py"))
    assert len(found) == 1, f"exercise {eid}: {found}"
    return str(found[0].relative_to(ROOT))


def test_every_exercise_module_part_is_covered():
    """The map is derived, not listed: it must hold the parts known to stand in for exercises."""
    assert {"01", "02", "07", "08", "09", "12", "19", "20", "21", "22", "23", "28"} <= set(STANDS_FOR)


def test_a_part_adapted_as_a_learner_would_imports_only_the_tree():
    for module in STANDS_FOR.values():
        source = as_learner_module(impl.PART_SOURCES[module])
        compile(source, f"{module}.py", "exec")
        assert "load_part" not in source, module


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> tuple[dict, str]:
    """The report and output of one sandboxed grade of a tree holding every part as its exercise."""
    tmp = tmp_path_factory.mktemp("parts")
    tree = tmp / "tree"
    shutil.copytree(ROOT / "solutions", tree, ignore=shutil.ignore_patterns("__pycache__"))
    for module in STANDS_FOR.values():
        (tree / f"{module}.py").write_text(as_learner_module(impl.PART_SOURCES[module]), encoding="utf-8")
    report = tmp / "report.json"
    files = [graded_file(e) for e in sorted(STANDS_FOR)]
    cmd = [sys.executable, "-m", "pytest", *files, "--grade", "-q", "--impl", str(tree), "--report", str(report), "--require-sandbox"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    explain = f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert report.exists(), explain
    data = json.loads(report.read_text())
    assert data["extra_data"]["finished"] and not data["extra_data"].get("void"), f"not a valid grade\n{explain}"
    return data, explain


@SANDBOXED
@pytest.mark.parametrize("eid", sorted(STANDS_FOR))
def test_a_part_copied_into_the_tree_scores_zero(eid, graded):
    data, explain = graded
    module = STANDS_FOR[eid]
    (result,) = [t for t in data["tests"] if t["number"] == eid]
    said = result.get("output", "")
    assert result["max_score"] > 0 and result["extra_data"]["checks"] > 0, f"exercise {eid}: no checks ran\n{said}\n{explain}"
    assert result["score"] == 0, f"parts/{module}.py scores {result['score']}/{result['max_score']} as exercise {eid}:\n{said}"
    assert "[passed]" not in said, said
    # Its own module, or a copied part its module imports (the model's block.py, say): each is refused
    # on its own too (``test_every_part_alone_breaks_the_allow_list``).
    copied = {f"{m}.py" for m in STANDS_FOR.values()}
    assert any(name in said for name in copied), f"exercise {eid} scored 0, but not for what the copied parts do:\n{said}"


@pytest.mark.parametrize("eid", sorted(STANDS_FOR))
def test_every_part_alone_breaks_the_allow_list(eid):
    """Each part, pasted as its exercise's module, is refused by the allow-list by itself (it
    computes through ``torch.ops``), whatever the rest of the tree holds."""
    ex = next(e for e in load() if e.id == eid)
    module = STANDS_FOR[eid]
    sources = {"__init__.py": "", f"{module}.py": as_learner_module(impl.PART_SOURCES[module])}
    found = [v for v in allowlist.check(sources, ex) if v.file == f"{module}.py"]
    assert found, f"parts/{module}.py passes the allow-list as exercise {eid}'s module"
    assert any(v.rule == "internals" for v in found), [v.message for v in found]
