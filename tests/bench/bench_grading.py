"""What the worker boundary and the sandbox cost, and how fast a learner hears back.

- one small probe's round trip, through a worker process (sandboxed where bubblewrap runs) and
  in-process;
- the full graded suite on solutions/, whole pytest runs: sandboxed, unsandboxed
  (``--no-sandbox``) and in-process, alternating, median of three each, in one run;
- one exercise graded (``--exercise 01``, as ``nox -s grade -- 01``), median of five;
- watch mode: from saving a file of the tree to its exercise's line on the screen, median of five.

Targets: the sandboxed suite at most 15% slower than the unsandboxed one (issue 11); the full grade
within 20 s, one exercise within 3 s, watch within 2 s (issue 12). nox adds about 0.2 s to a grade.

Then the learner's commands as typed (``nox -s grade``, ``-- 01``, ``-- --impl solutions``), wall
time, median of three, and the README's table of times (between its ``<!-- times`` markers) is
checked against them: a figure more than 30% off is reported as out of date.
"""

from __future__ import annotations

import dataclasses
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


def watch_latency(runs: int = 5) -> float | None:
    """Seconds from a saved change of layers.py to exercise 02's line, with watch running."""
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
        try:
            while "watching" not in out.read_text():
                time.sleep(0.1)
            time.sleep(5)  # the hosts for the first save
            times = []
            for k in range(runs):
                seen = len(out.read_text())
                layers = tree / "layers.py"
                start = time.perf_counter()
                layers.write_text(layers.read_text() + f"\n# saved {k}\n")
                while "02  LayerNorm" not in out.read_text()[seen:]:
                    time.sleep(0.01)
                times.append(time.perf_counter() - start)
                time.sleep(5)  # the hosts for the next save
            return statistics.median(times)
        finally:
            proc.kill()


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


def main() -> None:
    tree = ROOT / "solutions"
    box, why = sandbox.find()
    print(f"sandbox: {box.describe() if box else 'none (' + why + ')'}")
    worker = WorkerBackend(tree, sandbox=box)
    try:
        w = probe_latency(worker)
    finally:
        worker.close()
    p = probe_latency(InProcessBackend(tree))
    print(f"one softmax probe, round trip: worker {w * 1e3:.2f} ms, in-process {p * 1e3:.2f} ms "
          f"(the boundary adds {(w - p) * 1e3:.2f} ms per probe)")
    runs: dict[str, list[float]] = {"sandboxed": [], "unsandboxed": [], "in-process": []}
    flags = {"sandboxed": ("--require-sandbox",), "unsandboxed": ("--no-sandbox",), "in-process": ("--in-process",)}
    if box is None:
        del runs["sandboxed"]
    for _ in range(3):  # alternate, so that a slow minute of the machine hits each alike
        for name in runs:
            runs[name].append(suite(*flags[name]))
    medians = {name: statistics.median(times) for name, times in runs.items()}
    print(f"graded suite on solutions/ ({len(GRADED)} files), whole pytest runs, median of 3: "
          + ", ".join(f"{name} {m:.1f} s" for name, m in medians.items()))
    if "sandboxed" in medians:
        ratio = medians["sandboxed"] / medians["unsandboxed"]
        print(f"the sandbox costs {100 * (ratio - 1):+.1f}% (target: at most +15%) -> {'met' if ratio <= 1.15 else 'NOT met'}")
    full = medians.get("sandboxed", medians["unsandboxed"])
    print(f"full grade of the solutions: {full:.1f} s (target: within 20 s) -> {'met' if full <= 20 else 'NOT met'}")
    one = one_exercise()
    print(f"one exercise (--exercise 01), pytest alone, median of 5: {one:.2f} s")
    watched = watch_latency()
    if watched is None:
        print("watch: not measured (watchfiles is not installed: nox -s watch installs it)")
    else:
        print(f"watch, from saving layers.py to 02's line, median of 5: {watched:.2f} s (target: within 2 s) -> "
              f"{'met' if watched <= 2 else 'NOT met'}")
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


if __name__ == "__main__":
    main()
