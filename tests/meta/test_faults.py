"""Faults cost only the checks that meet them: a module that does not import costs the exercises
that merely import from it nothing (a reference part stands in for it), a hang costs the checks
that call the function that hung (each an "error"), a loop at import is named as one, and the
exercise's other checks keep their verdicts. Each test grades a tree in a fresh pytest process,
as `nox -s grade` does."""

import re

import pytest

from helpers import grade_in, make_tree

from harness.manifest import ROOT

T = 5  # --probe-timeout: the time limit of one check, in seconds
FAST = ("--probe-timeout", str(T))
FILES = ["tests/test_01_attention.py", "tests/test_02_layernorm.py", "tests/test_12_kv_cache.py"]
SOFTMAX_BODY = "    # BEGIN SOLUTION 01: subtract"
LOOP = "    while True:\n        pass\n"


def body(g, eid: str) -> str:
    """What the report says of each check (without its first line, the exercise's reason)."""
    return g.exercise(eid)["output"].split("\n", 1)[1]


def checks(g, eid: str) -> dict[str, str]:
    """Each check of the exercise -> its status, as the report lists them."""
    return dict((name, status) for status, name in re.findall(r"^\[([a-z ]+)\] (\S+)", g.exercise(eid)["output"], re.M))


def test_a_syntax_error_costs_only_its_own_exercise(tmp_path):
    """kv_cache.py imports softmax from attention.py: a typo in attention.py costs 01 and not 12."""
    tree = make_tree(tmp_path, {"attention.py": [("def causal_mask(", "def causal_mask((")]})
    g = grade_in(ROOT, tree, tmp_path, *FAST, files=FILES)
    assert g.status("01") == "error" and g.exercise("01")["score"] == 0, g.explain()
    assert "SyntaxError in attention.py, line" in g.exercise("01")["output"], g.explain()
    assert g.status("12") == "passed" and g.exercise("12")["score"] == g.exercise("12")["max_score"], g.explain()
    assert g.status("02") == "passed", g.explain()
    line = 1 + (tmp_path / "tree" / "attention.py").read_text().splitlines().index(
        next(s for s in (tmp_path / "tree" / "attention.py").read_text().splitlines() if "def causal_mask((" in s))
    assert re.search(rf"next: 01 attention, .*attention\.py line {line} ", g.stdout), g.stdout[-1500:]


def test_a_hang_costs_only_the_checks_that_call_it(tmp_path):
    """An endless loop in softmax: the first check that calls it runs into the time limit and is an
    error naming softmax; the later ones that call it are stopped at once, errors too; the checks that
    never call it (the causal mask) still pass and count, so the grade of 01 ends within twice its limit."""
    tree = make_tree(tmp_path, {"attention.py": [(SOFTMAX_BODY, LOOP + SOFTMAX_BODY)]})
    g = grade_in(ROOT, tree, tmp_path, *FAST, "--exercise", "01", files=FILES[:1], timeout=200)
    out, status = body(g, "01"), checks(g, "01")
    assert status["test_causal_mask"] == "passed", g.explain()
    assert {s for n, s in status.items() if n != "test_causal_mask"} == {"error"}, status
    assert g.status("01") == "error" and 0 < g.exercise("01")["score"] < 10, g.explain()
    assert out.count(f"did not return within {T} s") == 1, out  # the time limit is waited on once
    assert f"softmax (attention.py) did not return within {T} s: an endless loop?" in out, out
    assert out.count("not run: it calls softmax (attention.py), which did not end within") == len(status) - 2, out


def test_a_second_hang_elsewhere_ends_the_exercise_within_twice_its_limit(tmp_path):
    """Loops in two functions: each is waited on, then the exercise has lost twice its limit and its
    remaining checks are not run (errors); another exercise is untouched."""
    mask = "    # BEGIN SOLUTION 01: ones above the diagonal"
    tree = make_tree(tmp_path, {"attention.py": [(SOFTMAX_BODY, LOOP + SOFTMAX_BODY)]})
    text = (tree / "attention.py").read_text()
    if mask not in text:  # the causal mask's body, wherever its marker says it starts
        mask = next(line for line in text.splitlines() if line.strip().startswith("# BEGIN SOLUTION 01") and
                    text.index(line) > text.index("def causal_mask"))
    (tree / "attention.py").write_text(text.replace(mask, LOOP + mask, 1))
    g = grade_in(ROOT, tree, tmp_path, *FAST, files=FILES[:2], timeout=300)
    out = body(g, "01")
    assert out.count(f"did not return within {T} s") <= 2, out
    assert "twice its time limit" in out or out.count(f"did not return within {T} s") == 2, out
    assert set(checks(g, "01").values()) == {"error"}, out
    assert g.status("02") == "passed", g.explain()


def test_a_loop_at_import_is_named_and_costs_the_importers_nothing(tmp_path):
    tree = make_tree(tmp_path, {"attention.py": [("import torch\n", "import torch\n\nwhile True:\n    pass\n")]})
    g = grade_in(ROOT, tree, tmp_path, *FAST, files=FILES, timeout=300)
    out = body(g, "01")
    assert f"importing attention.py did not end within {T} s: an endless loop at import?" in out, out
    assert "softmax (attention.py) did not return" not in out, "a loop at import is not blamed on a function"
    assert out.count(f"within {T} s in ") == len(checks(g, "01")) - 1, out  # the others are stopped at once
    assert g.status("12") == "passed", g.explain()
    assert g.status("02") == "passed", g.explain()


def test_a_loop_at_import_in_a_module_graded_later_costs_its_importer_nothing(tmp_path):
    """Grading 12 alone: attention.py is first met looping by one of 12's checks, which is run again
    with the reference part in its place."""
    tree = make_tree(tmp_path, {"attention.py": [("import torch\n", "import torch\n\nwhile True:\n    pass\n")]})
    g = grade_in(ROOT, tree, tmp_path, *FAST, "--exercise", "12", files=FILES[2:], timeout=300)
    assert g.status("12") == "passed", g.explain()


class _Backend:
    """A worker whose replies are scripted: each probe takes the next of ``events``."""

    def __init__(self, *events):
        self.events, self.timeouts = list(events), []

    def probe(self, exercise, rules, header, arrays, timeout, fresh=False, measure=False):
        self.timeouts.append(timeout)
        event = self.events.pop(0)
        if isinstance(event, Exception):
            raise event
        return event, [], ""


OK = {"status": "ok", "result": {"out": 1}}


def _impl(backend, lost):
    from harness.impl import Impl
    from harness.manifest import lookup

    return Impl(backend, lookup("02"), lost, timeout=T)


def test_a_crash_costs_only_its_check():
    """A process that ends (a crash, an exit) costs the check it ran; the next check runs."""
    from harness.failures import Lost
    from harness.runner import WorkerLost

    lost = {}
    backend = _Backend(WorkerLost("the worker process was killed by SIGSEGV", crashed=True), OK)
    with pytest.raises(Lost) as failure:
        _impl(backend, lost).call("layers.gelu", 1.0, returns="data")
    assert failure.value.status == "error" and "SIGSEGV" in failure.value.message
    assert _impl(backend, lost).call("layers.gelu", 1.0, returns="data").out == 1


def test_a_broken_channel_ends_the_exercise():
    """A reply the grader did not sign (not a crash nor a time-out): nothing more of the exercise runs."""
    from harness.failures import GradingFailure
    from harness.runner import WorkerLost

    lost = {}
    backend = _Backend(WorkerLost("a reply came back that the grader's probe did not sign"), OK)
    for _ in range(2):
        with pytest.raises(GradingFailure) as failure:
            _impl(backend, lost).call("layers.gelu", 1.0, returns="data")
    assert "not run:" in failure.value.message and len(backend.timeouts) == 1


def test_faults_spend_at_most_twice_the_time_limit():
    """Each later check may run only what is left of twice the limit; then the rest are not run."""
    from harness.failures import TimedOut
    from harness.runner import WorkerLost

    lost = {}
    hang = WorkerLost("gelu (layers.py) did not return within 5 s", timed_out=True)
    backend = _Backend(hang, OK, hang)
    with pytest.raises(TimedOut):
        _impl(backend, lost).call("layers.gelu", 1.0, returns="data")
    _impl(backend, lost).call("layers.gelu", 1.0, returns="data")
    with pytest.raises(TimedOut):
        _impl(backend, lost).call("layers.gelu", 1.0, returns="data")
    with pytest.raises(TimedOut) as failure:
        _impl(backend, lost).call("layers.gelu", 1.0, returns="data")
    assert backend.timeouts[0] == T and 0 < backend.timeouts[2] <= T, backend.timeouts
    assert len(backend.timeouts) == 3 and "not run:" in failure.value.message and "twice its time limit" in failure.value.message
