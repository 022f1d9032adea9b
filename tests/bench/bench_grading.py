"""What isolation costs: the graded suite on solutions/ through the worker process and in-process,
and the round trip of one small probe both ways.

Target (issue 8): the whole graded suite on the solutions, warm environment, under a minute on a
2-core machine.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from harness import manifest
from harness.impl import Impl, InProcessBackend, WorkerBackend

ROOT = manifest.ROOT
GRADED = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_[0-9][0-9]_*.py"))


def suite(*extra: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", *GRADED, "--grade", "-q", "--impl", "solutions", *extra],
                              cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            sys.exit(f"the graded suite failed on solutions/:\n{proc.stdout[-2000:]}")
    return statistics.median(times)


def probe_latency(backend, n: int = 200) -> float:
    impl = Impl(backend, manifest.lookup("01"), {})
    x = torch.randn(4, 16)
    impl.call("attention.softmax", x)  # warm: imports
    start = time.perf_counter()
    for _ in range(n):
        impl.call("attention.softmax", x)
    return (time.perf_counter() - start) / n


def main() -> None:
    tree = ROOT / "solutions"
    worker = WorkerBackend(tree)
    try:
        w = probe_latency(worker)
    finally:
        worker.close()
    p = probe_latency(InProcessBackend(tree))
    print(f"one softmax probe, round trip: worker {w * 1e3:.2f} ms, in-process {p * 1e3:.2f} ms "
          f"(the boundary adds {(w - p) * 1e3:.2f} ms per probe)")
    ws, ps = suite(), suite("--in-process")
    print(f"graded suite on solutions/ ({len(GRADED)} files), median of 3 whole pytest runs: "
          f"worker {ws:.1f} s, in-process {ps:.1f} s, ratio {ws / ps:.2f}x")
    print(f"target: under 60 s with the worker -> {'met' if ws < 60 else 'NOT met'}")


if __name__ == "__main__":
    main()
