"""One process of exercise 18's two-process run, started by ``torchrun`` (see ``ddp_run.py``).

Trusted code: it imports the tree under test as the package ``tree`` (``worker.tree.Tree``), calls the
learner's ``setup_distributed("cpu")``, builds the reference GPT (``parts/model.py``) from the
weights in ``OUT/inputs.pt``, records every input the model is fed (a forward pre-hook on the
model itself, under whatever wrapper), wraps it with the learner's ``wrap_model``, and trains
``len(xs)`` steps of SGD on the global batches ``xs``/``ys`` (the same on every process), feeding
``shard(x, info)`` and ``shard(y, info)``. It writes what it saw to ``OUT/rank<RANK>.pt``
(``torch.save`` of tensors, numbers and strings only), or, when something raised, the failure to
``OUT/error-rank<RANK>.json``, and exits with a non-zero status so that torchrun stops the others.
What it prints goes to ``OUT/output-rank<RANK>.txt``.

A watchdog ends the process when torchrun is gone (killed by a timeout) or past ``--deadline``
seconds, so that no process outlives the grade, even one stuck in a collective.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path


def _watchdog(deadline: float) -> None:
    parent, end = os.getppid(), time.monotonic() + deadline
    while True:
        time.sleep(0.5)
        if os.getppid() != parent or time.monotonic() > end:
            os._exit(4)


def _fail(out: Path, rank: str, kind: str, message: str, details: str = "") -> None:
    record = {"rank": rank, "kind": kind, "message": message, "details": details, "time": time.time()}
    (out / f"error-rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")
    sys.stderr.flush()
    os._exit(1)


def train(tree, out: Path) -> dict:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from harness.worker.parts import load as load_part

    module = tree.module("distributed")
    info = module.setup_distributed("cpu")
    fields = {}
    for name in ("rank", "local_rank", "world_size", "device", "is_main"):
        value = getattr(info, name, None)
        fields[name] = value if type(value) in (int, bool) else str(value)
    initialized = dist.is_available() and dist.is_initialized()
    backend = str(dist.get_backend()) if initialized else ""

    inputs = torch.load(out / "inputs.pt", map_location="cpu", weights_only=True)
    model = load_part("model").GPTModel(inputs["cfg"])
    model.load_state_dict(inputs["state"])
    model.train()
    seen: list = []
    model.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    wrapped = module.wrap_model(model, info)
    if not isinstance(wrapped, nn.Module):
        raise TypeError(f"wrap_model returned a {type(wrapped).__name__}, not a torch.nn.Module")
    optimizer = torch.optim.SGD(model.parameters(), lr=inputs["lr"], momentum=inputs["momentum"])
    losses, means, mean_types = [], [], set()
    for x, y in zip(inputs["xs"], inputs["ys"]):
        xb, yb = module.shard(x, info), module.shard(y, info)
        logits = wrapped(xb)
        loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        mean = module.mean_over_processes(float(loss.detach()), info)
        means.append(float(mean) if type(mean) in (int, float) else float("nan"))
        mean_types.add(type(mean).__name__)
    result = {
        "info": fields,
        "initialized": initialized,
        "backend": backend,
        "wrapped": type(wrapped).__name__,
        "ddp": isinstance(wrapped, DistributedDataParallel),
        "same_module": wrapped is model,
        "seen": seen,
        "losses": torch.tensor(losses, dtype=torch.float64),
        "means": torch.tensor(means, dtype=torch.float64),
        "mean_types": sorted(mean_types),
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
    }
    module.cleanup()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", required=True)
    parser.add_argument("--sources", required=True, help="the tree's .py files as the grader read them (JSON)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--lib", required=True, help="the directory that holds the harness package")
    parser.add_argument("--parts", required=True, help="a directory with the reference parts' sources")
    args = parser.parse_args()
    threading.Thread(target=_watchdog, args=(args.deadline,), daemon=True).start()
    out, rank = Path(args.out), os.environ.get("RANK", "?")
    # what this process prints (the learner's prints, warnings, a crash's traceback) goes to a file
    # of its own, which the scenario reads back; torchrun's own log stays on the console
    log = os.open(str(out / f"output-rank{rank}.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.path.insert(0, args.lib)  # the directory that holds harness/
    import torch

    from harness.worker import parts
    from harness.worker.tree import ProbeError, Tree

    parts.give({p.stem: p.read_text(encoding="utf-8") for p in Path(args.parts).glob("*.py")})
    tree = Tree(args.tree, json.loads(Path(args.sources).read_text(encoding="utf-8")))
    try:
        result = train(tree, out)
    except ProbeError as e:
        _fail(out, rank, e.kind, e.message, e.details)
    except BaseException as e:  # the learner's code raised (or exited)
        err = tree.learner_error(e)
        _fail(out, rank, err.kind, err.message, err.details)
    torch.save(result, out / f"rank{rank}.pt.tmp")
    os.replace(out / f"rank{rank}.pt.tmp", out / f"rank{rank}.pt")
    # Done: leave without the interpreter's shutdown, where torch.distributed's C++ threads now and
    # then abort the process ("terminate called without an active exception") after the work is done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
