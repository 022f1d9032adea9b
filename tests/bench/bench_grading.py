"""What the worker boundary and the sandbox cost.

- one small probe's round trip, through a worker process (sandboxed where bubblewrap runs) and
  in-process;
- the full graded suite on solutions/, whole pytest runs: sandboxed, unsandboxed
  (``--no-sandbox``) and in-process, alternating, median of three each, in one run.

Targets (issue 11): the sandboxed suite at most 15% slower than the unsandboxed one.
"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import time

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


if __name__ == "__main__":
    main()
