"""The worker process: runs probes against the tree under test and sends back arrays.

Started by ``runner.Worker`` as ``python worker.py TREE_DIR``. The protocol travels on private
copies of the original stdin/stdout; file descriptors 0 and 1 are then pointed at the null device
and at stderr, so whatever the learner's code reads or prints cannot disturb it. Everything the
learner prints goes to stderr, which the grader reads, bounds, and attaches to failure messages.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

END_OF_PROBE = b"\n\x1ekata-end-of-probe\x1e\n"


def _limit_memory() -> None:
    gib = float(os.environ.get("KATA_WORKER_MEMORY_GB", "16"))
    if gib <= 0:
        return
    try:
        import resource

        limit = int(gib * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):  # Windows; macOS refuses RLIMIT_AS
        pass


def _breakpoint(*args, **kwargs) -> None:
    sys.stderr.write(
        "breakpoint() is skipped while grading in a worker process: "
        "rerun with --in-process to stop in the debugger.\n"
    )


def _watch_parent() -> None:
    """Exit when the grader is gone, even if the code under test is stuck in a loop."""
    parent = os.getppid()
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def main() -> None:
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)
    sys.breakpointhook = _breakpoint
    _limit_memory()
    import threading

    threading.Thread(target=_watch_parent, daemon=True).start()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch  # noqa: F401  (imported once, before the first request)

    from harness import probes, wire

    tree = probes.Tree(sys.argv[1])
    wire.write(proto_out, {"status": "ready", "pid": os.getpid(), "torch": torch.__version__})
    while True:
        try:
            request, arrays = wire.read(proto_in)
        except EOFError:
            return
        if request.get("op") == "exit":
            return
        start = time.perf_counter()
        reply, out = probes.run(tree, request, arrays, request.get("rules", {}))
        reply["seconds"] = time.perf_counter() - start
        reply["id"] = request.get("id")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os.write(2, END_OF_PROBE)
        try:
            wire.write(proto_out, reply, out)
        except wire.WireError as e:
            wire.write(proto_out, {"status": "error", "kind": "bad_output", "message": str(e), "details": "", "id": request.get("id")})


if __name__ == "__main__":
    main()
