"""The grading loop end to end: each test grades a tree in a fresh pytest process, as
`nox -s grade` does, and reads the scoreboard and the Gradescope report."""

import json
import subprocess
import sys

import pytest
from helpers import GRADESCOPE_TOP_LEVEL, grade, make_tree

from harness import manifest
from harness.manifest import ROOT

ALL = [e.id for e in manifest.load()]
FAST = ("--probe-timeout", "5")
ALLOW_LIST = "(allow-list rule: "  # how a refusal by the allow-list ends (tests/allowlist.toml)


def test_solutions_get_full_marks(tmp_path):
    g = grade("solutions", tmp_path, everything=True)
    assert g.code == 0, g.explain()
    assert g.report["score"] == g.report["extra_data"]["max_score"] > 0
    assert [t["number"] for t in g.report["tests"]] == ALL
    assert all(t["status"] == "passed" and t["score"] == t["max_score"] for t in g.report["tests"])
    assert "scoreboard" in g.stdout and "passed" in g.stdout


def test_stub_tree_scores_zero_not_started_without_traceback(tmp_path):
    g = grade("exercises", tmp_path, everything=True)
    assert g.code != 0, g.explain()
    assert g.report["score"] == 0
    for eid in ALL:
        assert g.status(eid) == "not started", g.explain()
        assert g.exercise(eid)["output"].startswith("not started")
    assert "Traceback" not in g.stdout + g.stderr, g.explain()
    assert "not started" in g.stdout


def test_a_broken_function_costs_only_its_exercise(tmp_path):
    tree = make_tree(tmp_path, {"layers.py": [("return 0.5 * x * (1.0 + torch.tanh", "return 0.4 * x * (1.0 + torch.tanh")]})
    g = grade(tree, tmp_path)
    assert g.code != 0
    assert g.status("01") == "passed", g.explain()
    assert g.status("02") == "failing", g.explain()
    assert 0 < g.exercise("02")["score"] < g.exercise("02")["max_score"], "LayerNorm's checks still pass"


def test_exit_at_import_costs_only_that_module(tmp_path):
    tree = make_tree(tmp_path, {"attention.py": [("", "import os\nos._exit(0)\n")]})
    g = grade(tree, tmp_path, *FAST)
    assert g.exercise("01")["score"] == 0
    out = g.exercise("01")["output"]  # refused by the allow-list (os._exit), or contained when it ran
    assert ALLOW_LIST in out or (g.status("01") == "error" and "exited with code 0" in out), g.explain()
    assert g.status("02") == "passed", g.explain()
    assert g.code != 0


def test_an_infinite_loop_costs_only_its_check_and_names_the_function(tmp_path):
    tree = make_tree(tmp_path, {"layers.py": [('    """GELU, tanh approximation', '    while True:\n        pass\n    """GELU, tanh approximation')]})
    g = grade(tree, tmp_path, *FAST, timeout=200)
    out = g.exercise("02")["output"]
    assert g.status("02") == "error", g.explain()  # the checks that met the loop are errors; the others count
    assert "gelu (layers.py) did not return within 5 s: an endless loop?" in out, out
    assert 0 < g.exercise("02")["score"] < g.exercise("02")["max_score"], "LayerNorm's checks must still count"
    assert "probe" not in out.lower(), out
    assert g.status("01") == "passed", g.explain()


def test_sys_exit_segfault_and_syntax_error_are_contained(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "attention.py": [("def causal_mask(", "def causal_mask((")],  # a SyntaxError
            "layers.py": [
                ("    return gelu(x)", "    __import__('c' + 'types').string_at(0)  # a segfault\n        return gelu(x)"),
                ("        self.eps = eps\n", "        self.eps = eps\n        if emb_dim == 7:\n            raise SystemExit(0)\n"),
            ],
        },
    )
    g = grade(tree, tmp_path, *FAST)
    assert g.status("01") == "error", g.explain()
    assert "SyntaxError in attention.py, line" in g.exercise("01")["output"]
    # said in full once, above the scoreboard, and not once per check
    said = g.stdout.split("scoreboard")[0]
    assert said.count("SyntaxError in attention.py") == 1 and "more checks failed the same way" in said, said[-3000:]
    out02 = g.exercise("02")["output"]
    if ALLOW_LIST not in out02:  # the allow-list refuses __import__ before it runs; without it:
        assert g.status("02") == "error", g.explain()  # the segfault kills the worker
        assert "SIGSEGV" in out02 or "killed" in out02 or "exited" in out02, out02
    assert g.exercise("02")["score"] == 0, g.explain()
    assert g.code != 0


def test_forbidden_builtin_through_an_alias_is_refused(tmp_path):
    tree = make_tree(
        tmp_path,
        {"layers.py": [
            ("import torch\n", "import torch\nfrom torch.nn.functional import layer_norm as _normalise\n"),
            ("        xf = x.float()", "        return _normalise(x, x.shape[-1:], self.scale, self.shift, self.eps)\n        xf = x.float()"),
        ]},
    )
    g = grade(tree, tmp_path)
    assert g.status("01") == "passed", g.explain()
    assert g.status("02") == "failing", g.explain()
    assert "asks you to write this yourself, but your code called torch.nn.functional.layer_norm at tree/layers.py" in g.exercise("02")["output"]


def test_calling_the_kernel_directly_is_refused(tmp_path):
    tree = make_tree(tmp_path, {"attention.py": [("    return softmax(scores, dim=-1) @ v", "    return torch.ops.aten._softmax(scores, -1, False) @ v")]})
    g = grade(tree, tmp_path, "--exercise", "01")
    assert g.status("01") == "failing", g.explain()
    out = g.exercise("01")["output"]  # refused by the allow-list (torch.ops), or by the guard when it ran
    assert "torch.ops" in out and ALLOW_LIST in out or "the kernel aten._softmax" in out, g.explain()


def test_failures_name_known_mistakes(tmp_path):
    tree = make_tree(
        tmp_path,
        {
            "attention.py": [("scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))", "scores = q @ k.transpose(-2, -1)")],
            "layers.py": [("var = xf.var(dim=-1, keepdim=True, unbiased=False)", "var = xf.var(dim=-1, keepdim=True)")],
        },
    )
    g = grade(tree, tmp_path)
    assert "This looks like: no 1/sqrt(d_k) scaling" in g.exercise("01")["output"], g.explain()
    assert "This looks like: unbiased variance" in g.exercise("02")["output"], g.explain()
    assert "largest difference is at index" in g.exercise("02")["output"]


def test_learner_prints_reach_the_failure_message(tmp_path):
    tree = make_tree(tmp_path, {"layers.py": [("    return 0.5 * x * (1.0", "    print('debug: gelu sees', tuple(x.shape))\n    return 0.4 * x * (1.0")]})
    g = grade(tree, tmp_path, "--exercise", "02")
    out = g.exercise("02")["output"]
    assert "Your code printed:" in out and "debug: gelu sees" in out, g.explain()
    assert "debug: gelu sees" in g.stdout, "the scoreboard's details show the learner's prints"


def test_grading_some_exercises_and_bad_arguments(tmp_path):
    g = grade("solutions", tmp_path, "--exercise", "layernorm")
    assert g.code == 0 and [t["number"] for t in g.report["tests"]] == ["02"], g.explain()
    bad = grade(tmp_path / "nowhere", tmp_path)
    assert bad.code == 4 and "is not a directory; expected `exercises`, `solutions` or the path" in bad.stderr, bad.explain()
    unknown = grade("solutions", tmp_path, "--exercise", "99")
    assert unknown.code == 4 and "no exercise '99'" in unknown.stderr, unknown.explain()


def test_in_process_debug_mode_grades_and_says_so(tmp_path):
    g = grade("solutions", tmp_path, "--in-process", "--exercise", "01")
    assert g.code == 0, g.explain()
    assert g.report["extra_data"]["in_process"] is True
    assert "not a valid grade" in g.stdout


def test_seed_reproduces_the_inputs(tmp_path):
    tree = make_tree(tmp_path, {"layers.py": [("return 0.5 * x * (1.0 + torch.tanh", "return 0.4 * x * (1.0 + torch.tanh")]})
    a = grade(tree, tmp_path, "--seed", "1234", "--exercise", "02")
    b = grade(tree, tmp_path, "--seed", "1234", "--exercise", "02")
    assert a.report["extra_data"]["seed"] == 1234
    assert a.exercise("02")["output"] == b.exercise("02")["output"]


def test_report_follows_gradescope_schema(tmp_path):
    g = grade("exercises", tmp_path, "--exercise", "01")
    r = g.report
    unknown = sorted(set(r) - GRADESCOPE_TOP_LEVEL)
    assert not unknown, f"keys Gradescope does not document at the top level of results.json: {unknown}"
    assert isinstance(r["score"], (int, float))
    assert r["extra_data"]["max_score"] == sum(t["max_score"] for t in r["tests"]) > 0
    for t in r["tests"]:
        assert set(t) >= {"name", "score", "max_score", "status", "output"}
        assert t["status"] in ("passed", "failed")
    json.dumps(r)


def test_plain_pytest_takes_the_same_switch():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_02_layernorm.py", "--impl", "solutions", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "scoreboard" in proc.stdout


def test_a_broken_attention_costs_attention_but_not_the_exercises_built_on_it(tmp_path):
    """Multi-head attention and the block use the learner's attention and LayerNorm; their graded
    checks substitute the reference parts, so only exercise 01 loses points. The ungraded
    integration check of the learner's own chain is where the breakage shows."""
    tree = make_tree(tmp_path, {"attention.py": [("    e = torch.exp(x - m)", "    e = torch.exp(x - m) ** 2")]})
    g = grade(tree, tmp_path, "--exercise", "01", "--exercise", "07", "--exercise", "08", everything=True)
    assert g.status("01") == "failing" and score_of(g, "01") < 10, g.explain()
    for eid in ("07", "08"):
        assert g.status(eid) == "passed" and score_of(g, eid) == 10, g.explain()
    assert "01" in manifest.lookup("07").depends_on
    assert "passed · builds on 01 attention, not passing yet" in g.stdout, g.explain()  # 07's line on the scoreboard
    assert g.exercise("07")["extra_data"]["blocked_by"] == ["01"]


def score_of(g, eid):
    return g.exercise(eid)["score"]


def test_mistakes_in_07_to_09_cost_the_kv_cache_nothing(tmp_path):
    """Exercise 12 runs its cached forward pass on the reference GPTModel: a feed-forward of 2x
    instead of 4x (08), an untied head (09) and no causal mask (07) cost their own exercises only;
    12's line says it is blocked by them."""
    tree = make_tree(tmp_path, {
        "block.py": [("nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim)", "nn.Linear(cfg.emb_dim, 2 * cfg.emb_dim)"),
                     ("nn.Linear(4 * cfg.emb_dim, cfg.emb_dim)", "nn.Linear(2 * cfg.emb_dim, cfg.emb_dim)")],
        "model.py": [("        if cfg.tie_weights:\n            self.out_head.weight = self.tok_emb.weight\n", "")],
        "multihead.py": [('scores.masked_fill_(~self.mask[:num_tokens, :num_tokens], float("-inf"))', "pass")],
    })
    g = grade(tree, tmp_path, "--exercise", "07", "--exercise", "08", "--exercise", "09", "--exercise", "12", everything=True)
    for eid in ("07", "08", "09"):
        assert score_of(g, eid) < 10, g.explain()
    assert g.status("12") == "passed" and score_of(g, "12") == 10, g.explain()
    assert sorted(g.exercise("12")["extra_data"]["blocked_by"]) == ["07", "08", "09"], g.exercise("12")


def test_after_the_scoreboard_one_line_says_what_to_do_next(tmp_path):
    tree = make_tree(tmp_path, {"layers.py": [("unbiased=False)", "unbiased=True)")]})
    g = grade(tree, tmp_path)
    assert "next: 02 layernorm, " in g.stdout and "layers.py line " in g.stdout and "nox -s hint -- 02" in g.stdout, g.stdout[-2000:]
    (tmp_path / "second").mkdir()
    everything = grade(make_tree(tmp_path, name="clean"), tmp_path / "second")
    assert "next: every exercise graded here passes" in everything.stdout, everything.stdout[-2000:]


def test_a_file_name_grades_the_exercises_in_it(tmp_path):
    from harness import manifest

    assert [e.id for e in manifest.select("bpe.py")] == ["03", "04"]
    assert [e.id for e in manifest.select("exercises/training.py")] == ["15", "16"]
    assert [e.id for e in manifest.select("attention")] == ["01"]
    with pytest.raises(KeyError, match="the exercises' files are"):
        manifest.select("nope.py")
