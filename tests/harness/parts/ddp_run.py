"""Trusted scenarios for exercise 18 (data-parallel training under torchrun).

``two_processes`` launches ``python -m torch.distributed.run --standalone --nproc_per_node 2
parts/ddp_rank.py`` (gloo on the CPU, a free port, one thread per process) on the tree under
test and returns what each process recorded: its ``DistInfo``, the inputs its model was fed,
its losses and ``mean_over_processes`` of them, its parameters after training. A process whose
code raised makes the scenario raise that failure (a stub's NotImplementedError reads as not
started); a run that does not finish within ``LIMIT`` seconds is killed and reported.

The other scenarios call the learner's functions in the worker itself, without torchrun.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from harness.worker import parts
from harness.worker.parts import load as load_part
from harness.worker.tree import ProbeError

load_part("ddp_rank")  # sent along with this part; each process runs it from a file written below
LIB = Path(parts.__file__).resolve().parents[2]  # the directory that holds harness/
LIMIT = 120.0  # seconds for the whole two-process run; a healthy one takes a few
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
             "ROLE_RANK", "ROLE_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "GROUP_WORLD_SIZE")
TAIL = 4000  # characters of the processes' output kept for a failure message


def _tail(text: str) -> str:
    text = text.strip()
    return ("[...]\n" + text[-TAIL:]) if len(text) > TAIL else text


def _started(learner) -> None:
    """Call each function once in this process, running alone, before launching anything: a stub
    raises NotImplementedError here, in a fraction of a second. Other errors are left for the
    two-process run to show."""
    import torch.distributed as dist
    from torch import nn

    distributed = _Functions(learner)
    alone = distributed.DistInfo(0, 0, 1, torch.device("cpu"))
    saved = _without_torchrun()
    try:
        for call in (lambda: distributed.setup_distributed("cpu"), lambda: distributed.wrap_model(nn.Linear(2, 2), alone),
                     lambda: distributed.shard(torch.zeros(2, 1), alone), lambda: distributed.mean_over_processes(1.0, alone)):
            try:
                call()
            except NotImplementedError:
                raise
            except Exception:
                pass
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.update(saved)


def two_processes(learner, cfg, state, xs, ys, lr, momentum):
    _started(learner)
    tmp = Path(tempfile.mkdtemp(prefix="kata-ddp-"))
    try:
        torch.save({"cfg": dict(cfg), "state": dict(state), "xs": xs, "ys": ys, "lr": float(lr), "momentum": float(momentum)},
                   tmp / "inputs.pt")
        env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
        env.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        code = tmp / "parts"
        code.mkdir()
        for name, source in parts.SOURCES.items():
            (code / f"{name}.py").write_text(source, encoding="utf-8")
        (tmp / "sources.json").write_text(json.dumps(learner.tree.sources), encoding="utf-8")  # the tree, as the grader read it
        cmd = [sys.executable, "-I", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(code / "ddp_rank.py"), "--tree", str(learner.path), "--sources", str(tmp / "sources.json"), "--out", str(tmp), "--deadline", str(LIMIT + 5),
               "--lib", str(LIB), "--parts", str(code)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=tmp, env=env)
        try:
            output, _ = proc.communicate(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            proc.kill()  # each process's watchdog ends it once torchrun is gone
            proc.communicate()
            raise ProbeError("raised", f"the two processes did not finish within {LIMIT:g} s (a process waiting "
                             "forever in a collective that the other never calls? every process must call "
                             "mean_over_processes and run the same steps)", _printed(tmp) or "(they printed nothing)")
        output = output.decode(errors="replace")
        printed = _printed(tmp)
        errors = []
        for path in tmp.glob("error-rank*.json"):
            try:
                errors.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                pass
        if errors:
            first = min(errors, key=lambda e: e.get("time", 0.0))
            kind = first.get("kind", "raised")
            message = f"in process {first.get('rank')} of 2 (under torchrun): {first.get('message', '')}"
            details = first.get("details", "")
            if kind == "not_started":
                raise ProbeError("not_started", first.get("message", ""))
            raise ProbeError(kind if kind in ("import", "raised", "forbidden", "bad_output") else "raised", message,
                             "\n\n".join(part for part in (details, printed) if part))
        files = [tmp / f"rank{r}.pt" for r in (0, 1)]
        if not all(f.exists() for f in files):  # both results written whole: a crash after that is not the code's
            raise ProbeError("raised", f"torchrun with 2 processes exited with status {proc.returncode} and "
                             f"{sum(f.exists() for f in files)} of 2 results: a process ended early (sys.exit or "
                             "os._exit in the code under test?)",
                             "\n\n".join(part for part in (printed, output.strip() and "torchrun's log:\n" + _tail(output)) if part))
        if printed:
            sys.stderr.write(printed + "\n")  # the learner's prints in the processes, as a probe's would be
        return {"ranks": [torch.load(f, map_location="cpu", weights_only=True) for f in files]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _printed(tmp: Path) -> str:
    """What the processes printed, each under its own heading."""
    parts = []
    for path in sorted(tmp.glob("output-rank*.txt")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            continue
        if text:
            parts.append(f"What process {path.stem.removeprefix('output-rank')} printed:\n{_tail(text)}")
    return "\n\n".join(parts)


def _outcome(call) -> dict:
    """``{"returned": value}`` or ``{"raised": type name, "types": [...], "message": str}``; a
    stub's NotImplementedError passes through."""
    try:
        return {"returned": call()}
    except NotImplementedError:
        raise
    except Exception as e:
        return {"raised": type(e).__name__, "types": [c.__name__ for c in type(e).__mro__], "message": str(e)}


class _Functions:
    """``distributed.name`` is the learner's ``distributed.name``."""

    def __init__(self, learner):
        self.learner = learner

    def __getattr__(self, name):
        return self.learner(f"distributed.{name}")


def _without_torchrun():
    """The environment without torchrun's variables; put them back with the returned dict."""
    return {k: os.environ.pop(k) for k in DIST_VARS if k in os.environ}


def alone(learner, batch, value):
    """Without torchrun: ``setup_distributed("cpu")``, ``wrap_model``, ``shard`` and
    ``mean_over_processes`` of one process running alone."""
    import torch.distributed as dist
    from torch import nn

    distributed = _Functions(learner)
    saved = _without_torchrun()
    try:
        info = distributed.setup_distributed("cpu")
        initialized = dist.is_available() and dist.is_initialized()
        fields = {name: (v if type(v) in (int, bool) else str(v))
                  for name, v in ((n, getattr(info, n, None)) for n in ("rank", "local_rank", "world_size", "device", "is_main"))}
        model = nn.Linear(3, 2)
        wrapped = distributed.wrap_model(model, info)
        piece = distributed.shard(batch, info)
        mean = distributed.mean_over_processes(value, info)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.update(saved)
    return {"info": fields, "info_type": type(info).__name__, "initialized": initialized,
            "same_model": wrapped is model, "wrapped": type(wrapped).__name__,
            "shard": piece if type(piece) is torch.Tensor else repr(piece)[:200],
            "mean": mean if type(mean) in (int, float) else repr(mean)[:200]}


def shards(learner, batch, cases):
    """``shard(batch, DistInfo(rank, rank, world_size, cpu))`` for each ``(rank, world_size)``."""
    distributed = _Functions(learner)
    cpu = torch.device("cpu")
    out = []
    for rank, world in cases:
        info = distributed.DistInfo(rank, rank, world, cpu)
        got = _outcome(lambda: distributed.shard(batch, info))
        if "returned" in got and type(got["returned"]) is not torch.Tensor:
            got = {"raised": None, "message": f"shard returned a {type(got['returned']).__name__}, not a tensor"}
        out.append(got)
    return out


def bad_devices(learner):
    """``setup_distributed`` with a device it does not know, and with "cuda" where CUDA is absent."""
    import torch.distributed as dist

    distributed = _Functions(learner)
    saved = _without_torchrun()
    try:
        out = {"tpu": _outcome(lambda: distributed.setup_distributed("tpu")), "cuda_available": torch.cuda.is_available()}
        if not torch.cuda.is_available():
            out["cuda"] = _outcome(lambda: distributed.setup_distributed("cuda"))
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.update(saved)
    for key in ("tpu", "cuda"):
        if key in out and "returned" in out[key]:
            out[key] = {"returned": repr(out[key]["returned"])[:200]}
    return out
