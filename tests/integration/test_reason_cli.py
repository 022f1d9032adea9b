"""Ungraded: the reasoning track's entry point end to end, as `nox -s reason` runs it, shortened
(a one-layer model, a few steps of each stage), then `nox -s chat` on what it wrote.

`reason.py` must write its checkpoint, `reward.png`, `metrics.json` and `answers.md`; the
held-out problems must all come from the held-out range of first numbers; and every accuracy it
reports must be what this test's own oracle finds in the answers it wrote (the problem's value
computed here from its text, the completion's final `Answer:` line read here). A tiny model
answers almost nothing right, so the oracle is also tried on the worked examples that the tree
itself writes (every one right, and its columns the right arithmetic) and on wrong ones. Each
run is a subprocess of the tree's own scripts (this process never imports the tree). Skipped
while an exercise the chain needs is a stub. About 30 seconds on a 2-core machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_cli import LAUNCHER, Runner, ok, read_checkpoint, skip_if_unfinished

pytest.importorskip("tqdm", reason="reason.py needs tqdm (`nox -s tests` installs the train extra)")
pytest.importorskip("matplotlib", reason="reason.py needs matplotlib (`nox -s tests` installs the train extra)")

QUICK = ["--base-steps", "6", "--sft-steps", "6", "--sft-examples", "16", "--grpo-steps", "4", "--prompts", "3",
         "--group-size", "3", "--held-out", "24", "--eval-every", "2", "--emb-dim", "32", "--n-layers", "1", "--n-heads", "2",
         "--batch-size", "8"]
STAGES = ("base", "sft", "grpo")


@pytest.fixture(scope="module")
def runner(kata, tmp_path_factory) -> Runner:
    return Runner(kata.tree, tmp_path_factory.mktemp("reason_cli"))


@pytest.fixture(scope="module")
def run(runner) -> tuple[Path, str]:
    out = runner.workdir / "reason"
    stdout = ok(runner("reason", *QUICK, "--out", str(out)), "reason.py, shortened")
    return out, stdout


def true_value(problem: str) -> int:
    """The oracle's value of a problem such as ``632-285``, from its text."""
    match = re.fullmatch(r"(\d+)([+-])(\d+)", problem)
    assert match, f"a held-out problem that is not a sum or a difference of two numbers: {problem!r}"
    a, op, b = int(match[1]), match[2], int(match[3])
    return a + b if op == "+" else a - b


def right(completion: str, value: int) -> bool:
    """The oracle's exact match: the last line that starts with ``Answer:`` holds the value as an
    integer (spaces around it allowed, nothing else)."""
    answers = [line[len("Answer:"):].strip() for line in completion.split("\n") if line.startswith("Answer:")]
    return bool(answers) and re.fullmatch(r"-?\d+", answers[-1]) is not None and int(answers[-1]) == value


def test_reason_writes_its_checkpoint_plot_metrics_and_answers(run):
    out, stdout = run
    for name in ("ckpt.pt", "reward.png", "metrics.json", "answers.md"):
        assert (out / name).is_file(), f"reason.py did not write {name}; it printed:\n{stdout[-2000:]}"
    assert (out / "reward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "reward.png is not a PNG"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(STAGES) <= set(metrics["stages"]), f"metrics.json has stages {sorted(metrics['stages'])}; expected {STAGES}"
    for stage in STAGES:
        s = metrics["stages"][stage]
        assert s["seconds"] >= 0 and s["mean_completion_tokens"] >= 0, s
    assert metrics["grpo_log"]["step"] == [1, 2, 3, 4], "four GRPO steps were asked for"
    assert metrics["held_out_curve"]["step"] == [0, 2, 4], "the held-out split scored after SFT and every 2 steps"
    checkpoint = read_checkpoint(out / "ckpt.pt")
    assert checkpoint["extra"]["assistant"]["template"] == "reason"
    table = (out / "answers.md").read_text(encoding="utf-8").splitlines()
    assert len(table) == 2 + len(metrics["answers"]), "answers.md: a header, a rule and one row per held-out problem"
    assert "held-out accuracy" in stdout


def test_the_reported_accuracies_are_the_oracles(run):
    out, _ = run
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    answers = metrics["answers"]
    assert len(answers) == 24 == metrics["task"]["held_out_problems"]
    low, high = metrics["task"]["held_out_first_operand"]
    assert len({a["problem"] for a in answers}) == len(answers), "a held-out problem scored twice"
    for a in answers:
        first = int(re.match(r"\d+", a["problem"])[0])
        assert low <= first <= high, f"{a['problem']}: its first number is outside the held-out range {low}-{high}"
        assert int(a["reference"]) == true_value(a["problem"]), f"{a['problem']}: the reference {a['reference']} is wrong"
    for stage in STAGES:
        expected = sum(right(a[stage], true_value(a["problem"])) for a in answers) / len(answers)
        assert metrics["stages"][stage]["accuracy"] == pytest.approx(expected), (
            f"{stage}: metrics.json reports {metrics['stages'][stage]['accuracy']}, the answers it wrote give {expected}")
    curve = metrics["held_out_curve"]
    assert curve["accuracy"][0] == pytest.approx(metrics["stages"]["sft"]["accuracy"]), "the curve starts at SFT's accuracy"


# the launcher's import of the tree as the package kata_tree, then the probe
PROBE = LAUNCHER.split("runpy.run_module")[0] + """
import json, random
from kata_tree.reason import Problem, accuracy, worked
rng = random.Random(7)
cases = []
for _ in range(300):
    p = Problem(rng.randint(100, 999), rng.choice("+-"), rng.randint(100, 999))
    text = worked(p)
    wrong = text.rsplit("Answer: ", 1)[0] + "Answer: " + str(p.answer + rng.choice([-10, -1, 1, 100]))
    cases.append({"problem": f"{p.a}{p.op}{p.b}", "worked": text, "wrong": wrong,
                  "accuracy_right": accuracy([text], [p]), "accuracy_wrong": accuracy([wrong], [p])})
print(json.dumps(cases))
"""


def test_the_worked_examples_and_the_scorer_agree_with_the_oracle(runner, kata):
    res = subprocess.run([sys.executable, "-c", PROBE, str(kata.tree), "reason"], capture_output=True, text=True, timeout=120,
                         env=runner.env)
    skip_if_unfinished(res)
    assert res.returncode == 0, res.stderr[-2000:]
    for case in json.loads(res.stdout):
        value = true_value(case["problem"])
        assert right(case["worked"], value) and case["accuracy_right"] == 1.0, case
        assert not right(case["wrong"], value) and case["accuracy_wrong"] == 0.0, case
        top, bottom = case["problem"].split(case["problem"][3])
        for line in case["worked"].split("\n")[:-1]:  # each column's arithmetic is right
            if line.startswith("-("):
                assert line == f"-({bottom}-{top})", case
                continue
            terms = re.fullmatch(r"(\d+)([+-])(\d)(?:[+-](1))?=(\d+)", line)
            assert terms, f"a column line of an unexpected form: {line!r}"
            x, op, y, carry, result = int(terms[1]), terms[2], int(terms[3]), int(terms[4] or 0), int(terms[5])
            assert result == (x + y + carry if op == "+" else x - y - carry) and result >= 0, case


def test_chat_loads_the_reasoning_model(runner, run):
    out, _ = run
    res = runner("chat", "--checkpoint", str(out / "ckpt.pt"), "--max-new-tokens", "20", "347+285")
    skip_if_unfinished(res)
    assert res.returncode == 0, res.stderr[-2000:]
    bad = runner("chat", "--checkpoint", str(out / "ckpt.pt"), "what is 2+2?")
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "347+285" in lines[0], f"expected a one-line error, got:\n{bad.stderr}"


@pytest.mark.parametrize("args, message", [(["--group-size", "1"], "--group-size"), (["--sft-examples", "0"], "--sft-examples"),
                                           (["--max-new-tokens", "10"], "--max-new-tokens"),
                                           (["--max-new-tokens", "47"], "--max-new-tokens")],  # 601-900: 47 characters, then end-of-text
                         ids=["group-of-one", "no-worked-examples", "too-short", "one-short-of-the-longest"])
def test_bad_input_is_a_one_line_error(runner, args, message):
    res = runner("reason", *args)
    skip_if_unfinished(res)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and message in lines[0], f"expected one line naming {message!r}, got:\n{res.stderr}"
