"""Ungraded: the jobs on a busy machine (issue #25). How many threads `train`, `finetune`, `sample`
and `chat` use (the tree's `threads.py`: one per core that is at least half idle, unless the user
chose), that they say so and how to change it, and that a short run (`--steps 20`) trains with a
warmup scaled to it. The thread choice is a pure function of the cores and their load, checked on
a table worked out by hand from its rule; nothing here measures time or asserts on the machine's
own load. Each run is a subprocess (this process never imports the tree). About 15 seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_train_cli import TINY, Runner, ok, read_checkpoint, skip_if_unfinished

pytest.importorskip("tqdm", reason="train.py needs tqdm (`nox -s tests` installs the train extra)")
pytest.importorskip("matplotlib", reason="train.py needs matplotlib (`nox -s tests` installs the train extra)")

# Loads the tree's threads.py on its own (it imports only the standard library and torch) and
# prints, as JSON, what the test asks of it: {"calls": [[name, args, kwargs], ...]} on stdin.
PROBE = """\
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("tree_threads", sys.argv[1] + "/threads.py")
threads = importlib.util.module_from_spec(spec)
spec.loader.exec_module(threads)
calls = json.load(sys.stdin)["calls"]
print(json.dumps([getattr(threads, name)(*args, **kwargs) for name, args, kwargs in calls]))
"""

# (cores, busy cores, torch's limit) -> threads, by the rule "one per core at least half idle,
# at least 1, at most the limit": free = cores - busy, and a half-idle core counts.
TABLE = [
    ((2, 0.0, None), 2),  # idle
    ((2, 0.4, None), 2),  # a little other work: both cores are still more than half idle
    ((2, 0.5, None), 2),  # free 1.5: one core idle, the other exactly half idle
    ((2, 0.6, None), 1),  # a busy loop's share of a core is more than half: that core is left to it
    ((2, 1.0, None), 1),  # one core held by a busy loop
    ((2, 2.0, None), 1),  # every core busy: still one thread
    ((2, 7.5, None), 1),  # a load average above the core count is capped at the cores
    ((2, -0.3, None), 2),  # a negative reading counts as idle
    ((1, 0.0, None), 1),
    ((16, 3.2, None), 13),  # free 12.8: 12 idle cores, and one 80% idle
    ((16, 0.0, 8), 8),  # torch's own default (physical cores) is the most it takes
]


def probe(kata, calls: list, env: dict | None = None) -> list:
    res = subprocess.run([sys.executable, "-c", PROBE, str(kata.tree)], input=json.dumps({"calls": calls}),
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_the_thread_choice_takes_one_thread_per_core_at_least_half_idle(kata):
    got = probe(kata, [["choose_threads", [cores, busy], {"limit": limit}] for (cores, busy, limit), _ in TABLE])
    assert got == [want for _, want in TABLE], list(zip(TABLE, got))


@pytest.mark.parametrize(
    "flag, omp, want",
    [
        (3, "1", [3, "--threads 3"]),  # the flag first
        (None, "1", [1, "OMP_NUM_THREADS=1"]),
        (None, " 4 ", [4, "OMP_NUM_THREADS=4"]),
        (None, "0", None),  # not a count of threads: chosen as if unset, as torch ignores it
        (None, "two", None),
        (None, "", None),
        (None, None, None),
    ],
    ids=["flag-beats-env", "env", "env-spaces", "env-zero", "env-word", "env-empty", "neither"],
)
def test_a_number_the_user_chose_is_kept(kata, flag, omp, want):
    environ = {} if omp is None else {"OMP_NUM_THREADS": omp}
    assert probe(kata, [["requested_threads", [flag, environ], {}]]) == [want]


def test_the_job_says_how_many_threads_it_uses_and_how_to_change_it(kata):
    """Without a choice, the line names the threads, the cores, the load and the two ways to choose."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    calls = json.dumps({"calls": [["use_threads", [], {}]]})
    res = subprocess.run([sys.executable, "-c", PROBE.replace("print(json.dumps(", "(("), str(kata.tree)],
                         input=calls, capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("threads: ") and " core(s), " in line and "busy with other work" in line, line
    assert "--threads N" in line and "OMP_NUM_THREADS=N" in line, line


@pytest.fixture(scope="module")
def runner(kata, tmp_path_factory) -> Runner:
    return Runner(kata.tree, tmp_path_factory.mktemp("busy_machine"))


def without_warmup(args: list[str]) -> list[str]:
    i = args.index("--warmup")
    return args[:i] + args[i + 2:]


def test_a_short_run_warms_up_for_a_tenth_of_its_steps(runner):
    out = runner.workdir / "short"
    res = runner("train", *without_warmup(TINY), "--steps", "20", "--eval-every", "10", "--save-every", "0",
                 "--out", str(out), "--threads", "1")
    ok(res, "`--steps 20` without --warmup")
    assert res.stderr.lstrip().startswith("threads: 1 (--threads 1)"), res.stderr[:2000]
    extra = read_checkpoint(out / "ckpt.pt")["extra"]
    assert extra["args"]["warmup"] == 2 and len(extra["history"]["lr"]) == 20
    lr = extra["history"]["lr"]
    assert lr[0] < lr[1] == max(lr), "the learning rate should rise for 2 steps, then decay"


def test_a_warmup_longer_than_the_run_is_refused_naming_the_flag(runner):
    out = runner.workdir / "too-long-warmup"
    res = runner("train", *without_warmup(TINY), "--steps", "20", "--warmup", "30", "--out", str(out))
    skip_if_unfinished(res)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert "--warmup 30" in lines[0] and "--steps 20" in lines[0] and "leave it out for 2" in lines[0], lines[0]


@pytest.mark.parametrize("module", ["train", "sample", "chat", "finetune"])
def test_threads_zero_is_a_one_line_error(runner, module):
    res = runner(module, "--threads", "0")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert "--threads" in lines[0] and "1 or more" in lines[0], lines[0]
