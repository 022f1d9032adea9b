"""Grader integrity: hostile trees. Each test builds a tree that misbehaves or cheats and checks
that the grade completes, that only the exercise it touches is affected, and that no score is
raised by the trick (compared with the same tree without it)."""

import shutil
import sys
import time

import pytest
from helpers import FIND_GRADER, checkout_copy, grade, grade_in, make_tree

FAST = ("--probe-timeout", "5")
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the grader's command line from /proc")
WRONG_GELU = ("return 0.5 * x * (1.0 + torch.tanh", "return 0.4 * x * (1.0 + torch.tanh")
STUB_ATTENTION = ("    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))", "    raise NotImplementedError('exercise 01: not yet')\n    scores = q")


def score(g, eid):
    return g.exercise(eid)["score"]


def refused(g, eid) -> bool:
    """The allow-list refused the exercise's code before any of it ran (tests/allowlist.toml)."""
    return "(allow-list rule: " in g.exercise(eid)["output"]


# ------------------------------------------------------------------------------------------ faults


def test_import_error_costs_only_its_exercise(tmp_path):
    g = grade(make_tree(tmp_path, {"layers.py": [("", "import a_module_that_does_not_exist\n")]}), tmp_path)
    assert score(g, "02") == 0, g.explain()
    out = g.exercise("02")["output"]  # refused by the allow-list (a module it does not list), or not found when run
    assert "a_module_that_does_not_exist" in out and (refused(g, "02") or "No module named" in out), g.explain()
    assert g.status("01") == "passed", g.explain()


def test_recursion_error_is_a_failing_check(tmp_path):
    tree = make_tree(tmp_path, {"layers.py": [("    return 0.5 * x * (1.0 + torch.tanh", "    return gelu(x)\n    return 0.5 * x * (1.0 + torch.tanh")]})
    g = grade(tree, tmp_path, "--exercise", "02")
    assert g.status("02") == "failing", g.explain()
    assert "RecursionError" in g.exercise("02")["output"]
    assert 0 < score(g, "02") < 10  # LayerNorm's checks still pass


def test_an_allocation_of_tens_of_gigabytes_fails_cleanly(tmp_path):
    tree = make_tree(tmp_path, {"layers.py": [("        xf = x.float()", "        torch.ones(10**10)  # 40 GB\n        xf = x.float()")]})
    g = grade(tree, tmp_path, "--worker-memory", "8")
    assert g.status("02") in ("failing", "error"), g.explain()
    assert "allocate" in g.exercise("02")["output"] or "memory" in g.exercise("02")["output"]
    assert g.status("01") == "passed", g.explain()


def test_a_hundred_megabytes_printed_are_cut(tmp_path):
    tree = make_tree(tmp_path, {"layers.py": [(WRONG_GELU[0], "print('y' * 100_000_000)\n    " + WRONG_GELU[1])]})
    g = grade(tree, tmp_path, "--exercise", "02")
    assert g.status("02") == "failing", g.explain()
    assert "more bytes not shown" in g.exercise("02")["output"]
    assert len(g.stdout) < 500_000 and len(str(g.report)) < 2_000_000


def test_nan_wrong_type_shape_and_dtype_are_named(tmp_path):
    tree = make_tree(tmp_path, {
        "attention.py": [
            ("    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()", "    return [[True]]"),
            ("    e = torch.exp(x - m)", "    e = torch.exp(x - m) * float('nan')"),
        ],
        "layers.py": [
            ("        return (y * self.scale.float() + self.shift.float()).to(x.dtype)", "        return (y * self.scale.float() + self.shift.float()).to(x.dtype)[..., 1:]"),
            (WRONG_GELU[0], "return 0.5 * x.double() * (1.0 + torch.tanh"),
        ],
    })
    g = grade(tree, tmp_path)
    out01, out02 = g.exercise("01")["output"], g.exercise("02")["output"]
    assert "should be a torch.Tensor, got builtins.list" in out01, g.explain()
    assert "NaN value(s) where torch.softmax is finite" in out01
    assert "has shape" in out02 and "expected" in out02
    assert "has dtype torch.float64, expected torch.float32" in out02


# ------------------------------------------------------------------------------------------ tampering

PATCHES = """
import builtins, math
import numpy, numpy.testing
import torch, torch.testing
import _pytest.outcomes, _pytest.runner
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
torch.Tensor.__eq__ = lambda *a, **k: True
numpy.testing.assert_allclose = lambda *a, **k: None
numpy.allclose = lambda *a, **k: True
math.isclose = lambda *a, **k: True
builtins.all = lambda *a, **k: True
builtins.any = lambda *a, **k: False
_pytest.outcomes.fail = lambda *a, **k: None
_pytest.runner.call_and_report = lambda *a, **k: None
"""


def test_monkeypatching_comparisons_and_pytest_changes_nothing(tmp_path):
    plain = grade(make_tree(tmp_path / "a", {"layers.py": [WRONG_GELU]}), tmp_path / "a")
    hostile = grade(make_tree(tmp_path / "b", {"layers.py": [("", PATCHES), WRONG_GELU]}), tmp_path / "b", "--seed", str(plain.report["extra_data"]["seed"]))
    assert score(hostile, "02") <= score(plain, "02") < 10, hostile.explain()  # patches break only the patcher
    assert hostile.report["score"] <= plain.report["score"]


@LINUX
def test_a_fake_report_is_overwritten_and_a_late_writer_is_killed(tmp_path):
    fake = """
import json, os, subprocess, sys
_args = open(f"/proc/{os.getppid()}/cmdline").read().split("\\0")
_report = _args[_args.index("--report") + 1]
_fake = json.dumps({"score": 20, "max_score": 20, "tests": []})
open(_report, "w").write(_fake)
subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(4); open({_report!r}, 'w').write({_fake!r})"])
"""
    g = grade(make_tree(tmp_path, {"attention.py": [("", fake), STUB_ATTENTION]}), tmp_path)
    time.sleep(6)
    report = (tmp_path / "report.json").read_text()
    assert '"score": 20,' not in report and g.report["score"] < g.report["extra_data"]["max_score"], report[:500]


@LINUX
@pytest.mark.parametrize("mode", ["sandbox", "no-sandbox"])
def test_killing_the_grader_leaves_a_zero_report_and_a_failing_exit(tmp_path, mode):
    kill = FIND_GRADER + "import signal\n_pid = _grader()\nif _pid:\n    os.kill(_pid, signal.SIGTERM)\n"
    sandbox = () if mode == "sandbox" else ("--no-sandbox",)
    g = grade(make_tree(tmp_path, {"attention.py": [("", kill)]}), tmp_path, *sandbox)
    if g.report.get("tests") and refused(g, "01"):  # the allow-list refused it: it never ran
        assert g.report["extra_data"]["finished"] and score(g, "01") == 0 and g.status("02") == "passed", g.explain()
        return
    if mode == "sandbox" and "none" not in g.report.get("extra_data", {}).get("sandbox", "none"):
        # the grader is out of the worker's sight: the grade runs to its end
        assert g.report["extra_data"]["finished"] and g.status("01") == "passed", g.explain()
        return
    assert g.code != 0
    assert g.report.get("score") == 0 and g.report.get("output") == "grading did not finish", g.report


@LINUX
@pytest.mark.parametrize("mode", ["sandbox", "no-sandbox"])
def test_changing_the_graders_files_voids_the_grade(tmp_path, mode):
    checkout = checkout_copy(tmp_path)
    tamper = FIND_GRADER + """
_pid = _grader()
if _pid:
    _root = pathlib.Path(os.readlink(f"/proc/{_pid}/cwd"))
    _t = _root / "tests" / "test_02_layernorm.py"
    _t.write_text(_t.read_text() + "\\n# tampered\\n")
    (_root / "reference" / "02_layernorm.npz").write_bytes(b"not the reference")
"""
    tree = make_tree(tmp_path, {"layers.py": [("", tamper), WRONG_GELU]})
    sandbox = () if mode == "sandbox" else ("--no-sandbox",)
    before = (checkout / "tests" / "test_02_layernorm.py").read_bytes()
    g = grade_in(checkout, tree, tmp_path, *sandbox)
    if refused(g, "02"):  # the allow-list refused it: it never ran, and nothing changed
        assert (checkout / "tests" / "test_02_layernorm.py").read_bytes() == before
        assert score(g, "02") == 0 and g.status("01") == "passed", g.explain()
        return
    if mode == "sandbox" and g.report["extra_data"]["sandbox"] != "none":
        # the grader's files are not in the worker's sight: nothing changes, nothing is void
        assert (checkout / "tests" / "test_02_layernorm.py").read_bytes() == before
        assert not g.report["extra_data"]["void"] and g.status("01") == "passed", g.explain()
        return
    assert g.code != 0
    assert g.report["score"] == 0, g.explain()
    assert any("test_02_layernorm.py was changed" in v for v in g.report["extra_data"]["void"])
    assert "GRADE VOID" in g.stdout


def test_tensor_subclasses_and_lying_objects_are_refused(tmp_path):
    liar = """
class _Liar(torch.Tensor):
    def __eq__(self, other):
        return True
class _Anything:
    def __eq__(self, other):
        return True
    shape = property(lambda self: (1,))
"""
    tree = make_tree(tmp_path, {
        "attention.py": [("def softmax(", liar + "\n\ndef softmax("), ("    return softmax(scores, dim=-1) @ v", "    return (softmax(scores, dim=-1) @ v).as_subclass(_Liar)")],
        "layers.py": [("        return (y * self.scale.float() + self.shift.float()).to(x.dtype)", "        return __import__('tree.attention', fromlist=['_Anything'])._Anything()")],
    })
    g = grade(tree, tmp_path)
    assert "should be a torch.Tensor" in g.exercise("01")["output"], g.explain()
    assert "should be a torch.Tensor" in g.exercise("02")["output"] or refused(g, "02"), g.explain()
    assert score(g, "01") < 10 and score(g, "02") < 10


@pytest.mark.parametrize("mode", ["sandbox", "no-sandbox"])
def test_hard_coded_and_read_back_outputs_score_no_more_than_the_stub(tmp_path, mode):
    lookup = """
import numpy as _np
from pathlib import Path as _Path
_REF = _np.load(str(_Path(__file__).resolve().parents[{up}] / "reference" / "{name}.npz"))
"""
    attention_cheat = [
        ("import torch\n", "import torch\n" + lookup.format(up=1, name="01_attention")),
        ("    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))",
         "    for case in ('causal', 'bool_mask', 'fully_masked'):\n"
         "        if tuple(q.shape) == _REF[case + '/q'].shape:\n"
         "            return torch.from_numpy(_REF[case + '/out'])\n"
         "    raise NotImplementedError('exercise 01: not yet')\n"
         "    scores = q"),
    ]
    # the tree lives next to a copy of the reference outputs, as a learner's would
    checkout = checkout_copy(tmp_path)
    cheat = make_tree(checkout, {"attention.py": attention_cheat}, name="cheat")
    honest = make_tree(checkout, {"attention.py": [STUB_ATTENTION]}, name="honest")
    sandbox = () if mode == "sandbox" else ("--no-sandbox",)
    a = grade_in(checkout, honest, tmp_path, "--exercise", "01", *sandbox)
    b = grade_in(checkout, cheat, tmp_path, "--exercise", "01", "--seed", str(a.report["extra_data"]["seed"]), *sandbox)
    if b.report["extra_data"]["sandbox"] != "none":
        assert "No such file" in b.exercise("01")["output"], b.explain()  # the sandbox holds no reference outputs
    else:
        assert "importing" not in b.exercise("01")["output"], b.explain()  # the cheat itself works
    assert score(b, "01") <= score(a, "01"), b.explain()


def test_a_pickle_never_reaches_the_grader(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"""
import os, pickle
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
_payload = pickle.dumps(_Evil())
"""
    tree = make_tree(tmp_path, {"layers.py": [("", evil), (WRONG_GELU[0], "return _Evil()\n    " + WRONG_GELU[1])],
                                "attention.py": [("", "import os\nfor _fd in range(3, 12):\n    try:\n        os.write(_fd, len(b'x').to_bytes(4, 'little') + b'x')\n    except OSError:\n        pass\n")]})
    g = grade(tree, tmp_path, *FAST)
    assert not marker.exists()
    out02 = g.exercise("02")["output"]
    assert "the grader can check only" in out02 or "should be a torch.Tensor" in out02 or refused(g, "02"), g.explain()
    assert score(g, "01") == 0 and (g.status("01") == "error" or refused(g, "01")), g.explain()  # it broke its own channel


def test_conftest_and_plugins_in_the_tree_are_never_loaded(tmp_path):
    hook = """
import pytest
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    rep.outcome = "passed"
    return rep
pytest_plugins = []
"""
    checkout = checkout_copy(tmp_path)
    (checkout / "exercises" / "conftest.py").write_text(hook)
    outside = tmp_path / "outside"
    shutil.copytree(checkout / "exercises", outside)
    for tree in (checkout / "exercises", outside):
        g = grade_in(checkout, tree, tmp_path, "--exercise", "01")
        assert score(g, "01") < 10 and g.code != 0, g.explain()


def test_switching_off_the_guard_is_refused(tmp_path):
    tree = make_tree(tmp_path, {"layers.py": [("        xf = x.float()", "        with torch._C.DisableTorchFunction():\n            return torch.nn.functional.layer_norm(x, x.shape[-1:], self.scale, self.shift, self.eps)\n        xf = x.float()")]})
    g = grade(tree, tmp_path)
    out = g.exercise("02")["output"]
    assert "DisableTorchFunction" in out and "layers.py line" in out and refused(g, "02"), g.explain()
    assert score(g, "02") == 0
    assert g.status("01") == "passed", g.explain()  # attention.py imports nothing of layers.py: 01 never runs it
