"""Watch mode shows what the learner just changed (issue 25): on a save, the failing check of the
function changed in the saved file comes first, with its whole message, before the exercise's line;
the exercise's line is the one ``nox -s grade -- ID`` gives."""

import json
import re
import shutil
import subprocess
import sys
import time

import pytest
from helpers import make_tree

from harness import watch
from harness.manifest import ROOT

GELU_STUB = '    raise NotImplementedError("exercise 02 (layernorm), gelu: the tanh approximation, elementwise")\n'
# the cubic term left out: a mistake the checks of 02 name ("This looks like")
GELU_WRONG = "    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * x))\n"


def test_changed_functions_are_those_whose_code_differs():
    before = (ROOT / "exercises" / "layers.py").read_text()
    assert GELU_STUB in before
    after = before.replace(GELU_STUB, GELU_WRONG)
    assert watch.changed_functions(before, after) == ["gelu"]
    assert watch.changed_functions(before, "\n\n# moved down\n" + before) == [], "code that only moved is unchanged"
    method = before.replace("class LayerNorm(nn.Module):", "class LayerNorm(nn.Module):\n    x = 1", 1)
    assert watch.changed_functions(before, method) == ["LayerNorm"]
    init = re.sub(r"(def __init__\(self, emb_dim[^\n]*\n)", r"\1        self.extra = 0\n", before, count=1)
    assert init != before and watch.changed_functions(before, init) == ["LayerNorm.__init__", "LayerNorm"]
    assert watch.changed_functions(before, "def gelu(:\n") is None, "a file that does not parse: every check counts"
    assert watch.changed_functions(None, before) is None


def test_a_check_meets_what_it_called_or_what_its_message_names():
    assert watch.met(["gelu"], ["layers.gelu"], "the output differs") == "gelu"
    assert watch.met(["LayerNorm.forward", "LayerNorm"], ["layers.LayerNorm"], "") == "LayerNorm.forward"
    assert watch.met(["gelu"], ["scenarios.train"], "gelu(x) for x of shape (3,) differs") == "gelu"
    assert watch.met(["gelu"], ["layers.LayerNorm"], 'LayerNorm on x differs from F.gelu(approximate="tanh")') is None
    assert watch.met(["GELU"], [], "gelu(x) for x of shape (3,) differs") is None, "names are matched with their case"
    assert watch.met(None, [], "anything") == "", "no list of names (the file did not parse): any check counts"


def test_report_checks_reads_each_failing_check_back(tmp_path):
    output = ("failing: gelu(x) differs\n[passed] test_a\n[failing] test_b\n    gelu(x) differs\n"
              "    This looks like: the cubic term is missing. Fix it.\n"
              "[not started] test_c\n    LayerNorm.__init__: store eps")
    with_report = {"tests": [{"number": "02", "output": output}]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(with_report))
    checks = watch.report_checks(path)
    assert [(c["check"], c["status"]) for c in checks] == [("test_b", "failing"), ("test_c", "not started")]
    assert checks[0]["message"] == "gelu(x) differs\nThis looks like: the cubic term is missing. Fix it."


def test_watch_shows_the_saved_gelu_failure_before_the_line(tmp_path):
    """The issue's case: LayerNorm not written yet, gelu saved wrong. Watch names gelu's failing
    check first, with its message and its "This looks like", then 02's line; that line is the one a
    grade of the same tree gives."""
    pytest.importorskip("watchfiles", reason="watch mode needs watchfiles (nox -s watch installs it)")
    tree = make_tree(tmp_path)
    shutil.copy(ROOT / "exercises" / "layers.py", tree / "layers.py")
    command = [sys.executable, str(ROOT / "tests" / "harness" / "watch.py"), "--impl", str(tree), "--exit-after", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "watching" in proc.stdout.readline()
        time.sleep(1.0)
        layers = tree / "layers.py"
        layers.write_text(layers.read_text().replace(GELU_STUB, GELU_WRONG))
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert "layers.py changed: grading 02 layernorm" in out, out
    check = re.search(r"✗ gelu: (test_gelu\w+) failing\n((?:       .*\n)+)", out)
    assert check is not None, out
    assert "gelu" in check.group(2) and "This looks like: the cubic term is missing" in check.group(2), out
    line = re.search(r"✗ 02  LayerNorm and GELU from first principles  ([\d.]+)/10  failing\n       (.*)", out)
    assert line is not None and check.start() < line.start(), out
    assert line.group(2).startswith("LayerNorm.__init__"), "the exercise's line keeps its first failure"

    report = tmp_path / "grade.json"
    subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
                    str(ROOT / "tests"), "--grade", "-q", "--assert=plain", "--impl", str(tree), "--exercise", "02",
                    "--report", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    graded = json.loads(report.read_text())["tests"][0]
    assert (graded["extra_data"]["kata_status"], f"{graded['score']:g}") == ("failing", line.group(1)), out
