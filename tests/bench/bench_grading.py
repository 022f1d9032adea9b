"""What the worker boundary and the sandbox cost, and how fast a learner hears back.

- one small probe's round trip, through a worker process (sandboxed where bubblewrap runs) and
  in-process;
- the full graded suite on solutions/, whole pytest runs: sandboxed, unsandboxed
  (``--no-sandbox``) and in-process, alternating, median of three each, in one run, with the
  machine's load average before and after (other work on the machine moves every figure);
- one exercise graded (``--exercise 01``, as ``nox -s grade -- 01``), median of five;
- watch mode: from saving a wrong function to its failing check's message on the screen, and from
  saving it right to its exercise's line, median of five each.

Targets: the sandboxed suite at most 10% slower than the unsandboxed one (issue 24); the full grade
within 20 s, one exercise within 3 s (issue 12), watch's message within 1 s of the save (issue 25).
nox adds about 0.2 s to a grade.

Then the learner's commands as typed (``nox -s grade``, ``-- 01``, ``-- --impl solutions``), wall
time, median of three, and the README's table of times (between its ``<!-- times`` markers) is
checked against them: a figure more than 30% off is reported as out of date.

``bench_grading.py --suite [--runs N]`` measures the graded suite only (sandboxed and unsandboxed,
interleaved, median of N, 3 by default); ``--watch`` measures watch mode only; ``--class`` times
``nox -s class`` on the made-up class of ``tests/meta/test_class.py`` (8 submissions, the whole
course), one and two at a time, against one grade of the solutions; ``--classroom`` runs the grading
steps of GitHub Classroom's workflow (``nox -s classroom``) one after another, as the runner does, on
the stubs and on the solutions, against one grade of each (the figures of the instructors' page).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness import manifest, sandbox
from harness.impl import Impl, InProcessBackend, WorkerBackend

ROOT = manifest.ROOT
GRADED = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_[0-9][0-9]_*.py"))


def suite(*extra: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", *GRADED, "--grade", "-q", "--impl", "solutions", *extra],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"the graded suite failed on solutions/ ({' '.join(extra)}):\n{proc.stdout[-2000:]}")
    return seconds


def one_exercise(runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
                        str(ROOT / "tests"), "--grade", "-q", "--assert=plain", "--exercise", "01", "--impl", "solutions"],
                       cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


GELU = "return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))"
GELU_WRONG = "return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * x))"  # the cubic term left out


def watch_latency(runs: int = 5, pause: float = 15.0) -> tuple[float, float] | None:
    """With watch running on a copy of solutions/: seconds from saving a wrong ``gelu`` in layers.py
    to its failing check's message (``✗ gelu: ...``), and from saving the right one back to 02's
    line; median of ``runs`` each. Between saves, ``pause`` seconds, as a learner edits: the worker
    host for the next save imports torch meanwhile (about 10-20 s on a busy 2-core machine)."""
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(ROOT / "solutions", tree, ignore=shutil.ignore_patterns("__pycache__"))
        out = Path(tmp) / "watch.log"
        with open(out, "w") as log:
            proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "harness" / "watch.py"), "--impl", str(tree)],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        layers = tree / "layers.py"
        right = layers.read_text()
        assert GELU in right, "solutions/layers.py's gelu is not the one this bench breaks"

        def save(text: str, wait_for: str) -> float:
            seen = len(out.read_text())
            start = time.perf_counter()
            layers.write_text(text)
            while wait_for not in out.read_text()[seen:]:
                if proc.poll() is not None:
                    sys.exit(f"watch ended:\n{out.read_text()[-2000:]}")
                time.sleep(0.01)
            seconds = time.perf_counter() - start
            time.sleep(pause)
            return seconds

        try:
            while "watching" not in out.read_text():
                time.sleep(0.1)
            time.sleep(pause)
            message, line = [], []
            for _ in range(runs):
                message.append(save(right.replace(GELU, GELU_WRONG), "✗ gelu: "))
                line.append(save(right, "02  LayerNorm"))
            return statistics.median(message), statistics.median(line)
        finally:
            proc.kill()


def report_watch(latency: tuple[float, float] | None) -> None:
    if latency is None:
        print("watch: not measured (watchfiles is not installed: nox -s watch installs it)")
        return
    print(f"watch, from saving a wrong gelu to its failing check's message, median of 5: {latency[0]:.2f} s "
          f"(target: within 1 s) -> {'met' if latency[0] <= 1 else 'NOT met'}; {load()}")
    print(f"watch, from saving the right gelu back to 02's line, median of 5: {latency[1]:.2f} s")


def nox_wall(*args: str, runs: int = 3) -> float | None:
    """Wall seconds of ``nox -s grade -- ARGS`` as a learner types it, median of ``runs``."""
    nox = shutil.which("nox")
    if nox is None:
        return None
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([nox, "-s", "grade", "--", *args], cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def readme_times() -> dict[str, float]:
    """The README's table of times: the command in backticks -> seconds."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("<!-- times -->", 1)[-1].split("<!-- end of times -->", 1)[0]
    out = {}
    for row in table.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        m = re.search(r"`([^`]+)`", cells[1]) if len(cells) >= 3 else None
        t = re.fullmatch(r"(?:about )?([\d.]+) s", cells[-1]) if len(cells) >= 3 else None
        if m and t:
            out[m.group(1)] = float(t.group(1))
    return out


def probe_latency(backend, n: int = 200) -> float:
    # Without 01's refusals: a worker installs them once per exercise, a debug run around each
    # probe, and the point here is the round trip.
    plain = dataclasses.replace(manifest.lookup("01"), forbidden=(), forbidden_kernels=())
    impl = Impl(backend, plain, {})
    x = torch.randn(4, 16)
    impl.call("attention.softmax", x)  # warm: the worker starts, the module is imported
    start = time.perf_counter()
    for _ in range(n):
        impl.call("attention.softmax", x)
    return (time.perf_counter() - start) / n


def load() -> str:
    """The machine's load average over 1, 5 and 15 minutes, and its CPUs, in one phrase."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} CPUs"


def compare_suites(box, runs: int, in_process: bool = True) -> dict[str, float]:
    """The graded suite sandboxed, unsandboxed (and in-process), alternating, median of ``runs``
    each; prints the medians, the load and what the sandbox costs."""
    names = (["sandboxed"] if box is not None else []) + ["unsandboxed"] + (["in-process"] if in_process else [])
    flags = {"sandboxed": ("--require-sandbox",), "unsandboxed": ("--no-sandbox",), "in-process": ("--in-process",)}
    times: dict[str, list[float]] = {name: [] for name in names}
    print(f"before the suites: {load()}")
    for _ in range(runs):  # alternate, so that a slow minute of the machine hits each alike
        for name in names:
            times[name].append(suite(*flags[name]))
    print(f"after the suites: {load()}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    each = {name: f"{m:.1f} s (" + ", ".join(f"{x:.1f}" for x in times[name]) + ")" for name, m in medians.items()}
    print(f"graded suite on solutions/ ({len(GRADED)} files), whole pytest runs, median of {runs}: "
          + ", ".join(f"{name} {text}" for name, text in each.items()))
    if "sandboxed" in medians:
        ratio = medians["sandboxed"] / medians["unsandboxed"]
        verdict = "met" if ratio <= 1.10 else "NOT met"
        print(f"the sandbox costs {100 * (ratio - 1):+.1f}% (target: at most +10%) -> {verdict}")
    return medians


def class_times() -> None:
    """``nox -s class`` on the made-up class (the whole course), ``--jobs 1`` and ``2``, each once,
    and one ``nox -s grade -- --impl solutions`` (median of 3) for the per-submission cost."""
    sys.path.insert(0, str(ROOT / "tests" / "meta"))
    from test_class import build_class

    single = nox_wall("--impl", "solutions")
    with tempfile.TemporaryDirectory() as tmp:
        subs, _ = build_class(Path(tmp))
        count = sum(1 for p in subs.iterdir() if p.is_dir() or p.suffix == ".zip")
        for jobs in (1, 2):
            out = Path(tmp) / f"out-{jobs}"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, str(ROOT / "tests" / "harness" / "classgrade.py"), str(subs),
                                   "--out", str(out), "--jobs", str(jobs), "--seed", "1"],
                                  cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"nox -s class failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            print(f"nox -s class, {count} submissions (the whole course), --jobs {jobs}: {seconds:.0f} s, "
                  f"{seconds / count:.1f} s per submission" + (f" ({seconds / count / single:.2f}x one "
                  f"`nox -s grade -- --impl solutions`, {single:.1f} s)" if single else "") + f"; {load()}")


def classroom_times() -> None:
    """Each grading step of the Classroom workflow, its command timed whole (nox's start included), on
    the stubs and with ``--impl solutions``; then one ``nox -s grade`` of each for comparison."""
    import yaml

    nox = shutil.which("nox")
    if nox is None:
        sys.exit("nox is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([nox, "-s", "classroom", "--", tmp], cwd=ROOT, check=True, capture_output=True)
        workflow = yaml.safe_load((Path(tmp) / ".github" / "workflows" / "classroom.yml").read_text(encoding="utf-8"))
    steps = [s for s in workflow["jobs"]["run-autograding-tests"]["steps"] if "command" in s.get("with", {})]
    print(f"{len(steps)} grading steps; {load()}")
    for label, extra in (("stubs", []), ("solutions", ["--impl", "solutions"])):
        times = {}
        for step in steps:
            argv = step["with"]["command"].split() + extra
            start = time.perf_counter()
            subprocess.run([nox, *argv[1:]], cwd=ROOT, capture_output=True, text=True)
            times[step["with"]["test-name"].split()[0]] = time.perf_counter() - start
        slowest = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(times.items(), key=lambda kv: -kv[1])[:3])
        whole = nox_wall(*extra)
        print(f"the {len(steps)} steps on the {label}: {sum(times.values()):.0f} s "
              f"({min(times.values()):.1f}-{max(times.values()):.1f} s each; slowest {slowest}), against "
              f"{whole:.1f} s for one `nox -s grade{' -- ' + ' '.join(extra) if extra else ''}`; {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", action="store_true", help="the graded suite only, sandboxed and unsandboxed")
    parser.add_argument("--runs", type=int, default=3, help="runs of each suite (median)")
    parser.add_argument("--watch", action="store_true", help="watch mode only: from a save to the message and to the line")
    parser.add_argument("--class", dest="klass", action="store_true", help="nox -s class on a made-up class only")
    parser.add_argument("--classroom", action="store_true", help="the Classroom workflow's grading steps only")
    args = parser.parse_args()
    if args.classroom:
        classroom_times()
        return
    if args.klass:
        class_times()
        return
    if args.watch:
        report_watch(watch_latency())
        return
    tree = ROOT / "solutions"
    box, why = sandbox.find()
    print(f"sandbox: {box.describe() if box else 'none (' + why + ')'}")
    if args.suite:
        compare_suites(box, args.runs, in_process=False)
        return
    worker = WorkerBackend(tree, sandbox=box)
    try:
        w = probe_latency(worker)
    finally:
        worker.close()
    p = probe_latency(InProcessBackend(tree))
    print(f"one softmax probe, round trip: worker {w * 1e3:.2f} ms, in-process {p * 1e3:.2f} ms "
          f"(the boundary adds {(w - p) * 1e3:.2f} ms per probe)")
    medians = compare_suites(box, args.runs)
    full = medians.get("sandboxed", medians["unsandboxed"])
    print(f"full grade of the solutions: {full:.1f} s (target: within 20 s) -> {'met' if full <= 20 else 'NOT met'}")
    one = one_exercise()
    print(f"one exercise (--exercise 01), pytest alone, median of 5: {one:.2f} s")
    latency = watch_latency()
    report_watch(latency)
    watched = None if latency is None else latency[0]
    measured = {"nox -s grade": nox_wall(), "nox -s grade -- 01": nox_wall("01"),
                "nox -s grade -- --impl solutions": nox_wall("--impl", "solutions")}
    if watched is not None:
        measured["nox -s watch"] = watched
    readme = readme_times()
    for command, seconds in measured.items():
        if seconds is None:
            print(f"{command}: not measured (nox is not on PATH)")
            continue
        said = readme.get(command)
        verdict = "not in the README's table" if said is None else (
            f"README says {said:g} s: " + ("true" if abs(seconds - said) <= 0.3 * said else "OUT OF DATE"))
        print(f"`{command}`, wall, median of 3: {seconds:.1f} s ({verdict})")
    one_typed = measured["nox -s grade -- 01"]
    if one_typed is not None:
        print(f"one exercise as typed (`nox -s grade -- 01`): {one_typed:.1f} s (target: within 3 s) -> {'met' if one_typed <= 3 else 'NOT met'}")
    class_times()


if __name__ == "__main__":
    main()
