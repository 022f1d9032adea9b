"""Exercise 04's speed check under load: it must not depend on how busy the machine is.

Grades the check (``test_04_bpe_train.test_training_is_fast``, through a worker process, timed by
the grader against a calibration measured in the same run) ten times on the solutions while two
other processes keep both cores busy, then on the naive trainer (recounting every pair after every
merge), which must fail. Prints each verdict and the ratio the check compared.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness import manifest
from harness.failures import Mismatch
from harness.impl import Impl, WorkerBackend

ROOT = manifest.ROOT
RUNS = 10


def naive_tree(tmp: Path) -> Path:
    tree = tmp / "naive"
    shutil.copytree(ROOT / "solutions", tree, ignore=shutil.ignore_patterns("__pycache__"))
    naive = (ROOT / "reference" / "naive_bpe.py").read_text().replace("from __future__ import annotations\n", "")
    bpe = tree / "bpe.py"
    bpe.write_text(bpe.read_text() + "\n" + naive + "\n\ndef train_bpe(text, vocab_size, special_tokens):\n"
                   "    return train(text, vocab_size, special_tokens)\n")
    return tree


def verdict(tests, tree: Path, seed: int) -> str:
    backend = WorkerBackend(tree)
    impl = Impl(backend, manifest.lookup("04"), {})
    seen = {"calibrations": [], "calls": []}
    calibrate, call = tests.calibration, impl.call

    def calibration(gen):
        seen["calibrations"].append(calibrate(gen))
        return seen["calibrations"][-1]

    def timed_call(*args, **kwargs):
        res = call(*args, **kwargs)
        seen["calls"].append(res.seconds)
        return res

    tests.calibration, impl.call = calibration, timed_call
    try:
        start = time.perf_counter()
        tests.test_training_is_fast(impl, torch.Generator().manual_seed(seed))
        unit = max(seen["calibrations"])
        return (f"passed: {seen['calls'][-1]:.2f} s, {seen['calls'][-1] / unit:.1f} calibrations of {unit:.2f} s "
                f"({time.perf_counter() - start:.1f} s for the whole check)")
    except Mismatch as e:
        ratio = re.search(r"took ([\d.]+) s, ([\d.]+) times the calibration", str(e))
        return f"FAILED: {ratio.group(0) if ratio else str(e)[:200]}"
    finally:
        tests.calibration = calibrate
        backend.close()


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    tests = importlib.import_module("test_04_bpe_train")
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        print(f"two busy processes running; the check allows {tests.SPEED_LIMIT:g} calibrations")
        results = [verdict(tests, ROOT / "solutions", seed) for seed in range(RUNS)]
        for seed, r in enumerate(results):
            print(f"  solutions, seed {seed}: {r}")
        with tempfile.TemporaryDirectory() as tmp:
            naive = verdict(tests, naive_tree(Path(tmp)), 0)
        print(f"  the naive trainer (recounts every pair after every merge): {naive}")
        passed = sum(r.startswith("passed") for r in results)
        print(f"solutions passed {passed} of {RUNS} under load; the naive trainer "
              f"{'failed, as it must' if naive.startswith('FAILED') else 'PASSED, which it must not'}")
    finally:
        for p in load:
            p.kill()


if __name__ == "__main__":
    main()
