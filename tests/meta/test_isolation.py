"""Exercises cannot reach each other nor the process that starts them, and resource verdicts come
from outside the learner's process (issue 24).

Two kinds of test. The kernel's defences, tried directly: trusted test code standing in for the
learner (``isolation_attack.py``) runs in a child forked the way the worker's host forks an
exercise, and tries to write, trace or read its host; the allow-list would refuse such code in a
tree before it ran, so these tests do not depend on it. And hostile trees, graded: an exercise
that writes into its host or kills it, and tiled attention (28, 29) written the cheap way (the
whole score matrix) where the in-process tracker cannot see it (NumPy), on a thread started at
import, in a double-forked grandchild, or in a process started at import. Sandboxed where
bubblewrap runs, and again with ``--no-sandbox`` (Linux).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import run_check
from test_trust_boundary import BOTH, BOX, LINUX, SANDBOXED, grade, graded_files, no_gain, seed_of, tree

from harness.failures import Mismatch
from harness.impl import Impl, WorkerBackend
from harness.manifest import ROOT, lookup

HERE = Path(__file__).resolve().parent
SOLUTIONS = ROOT / "solutions"
REFUSED = {"EPERM", "EACCES"}
NO_YAMA = not Path("/proc/sys/kernel/yama/ptrace_scope").exists()


# ------------------------------------------------------------------ the kernel's defences, directly


def attack_report(mode: str, sandboxed: bool, tmp: Path) -> dict:
    """``isolation_attack.py`` run as a host (``mode``: isolated or bare), in the sandbox or not."""
    script = HERE / "isolation_attack.py"
    if not sandboxed:
        argv = [sys.executable, str(script), str(ROOT / "tests"), mode]
    else:
        from harness import sandbox

        folder = tmp / "attack"
        folder.mkdir(exist_ok=True)
        (folder / script.name).write_text(script.read_text())
        inner = [sys.executable, "-I", str(sandbox.TREES / folder.name / script.name), str(sandbox.LIB), mode]
        argv = BOX.command(inner, folder, env={"PATH": "/usr/bin:/bin"})
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("sandboxed", [pytest.param(True, marks=SANDBOXED), pytest.param(False, marks=LINUX)])
def test_a_child_cannot_write_trace_or_read_its_host(tmp_path, sandboxed):
    """The host is non-dumpable and the child holds no capability: every way into the host's
    memory fails with EPERM or EACCES, and the host's memory is unchanged. Signals still pass
    (see ``test_killing_the_host_costs_only_the_exercise_that_did_it``)."""
    got = attack_report("isolated", sandboxed, tmp_path)
    assert got["capabilities_left"] == [], got
    for attempt in ("proc_mem_write", "ptrace_attach", "process_vm_writev", "read_environ", "read_maps"):
        assert got[attempt] in REFUSED, f"{attempt}: {got}"
    assert not got["host_memory_changed"], got
    assert got["signal"] == "ok", got
    if NO_YAMA:  # the control: without the defences, the same child reaches its host
        bare = attack_report("bare", sandboxed, tmp_path)
        assert bare["proc_mem_write"] == "ok" and bare["host_memory_changed"], bare


# ---------------------------------------------------------------- exercises that reach their host

WRITE_HOST = """
import os

# The paths are computed, as a tree that hides from the allow-list would: no scan of the source
# sees them, so this reaches the kernel, the layer this test is about.
_PROC = "/" + "".join(["pr", "oc"])


def _parent(pid):
    with open(f"{_PROC}/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _is_grader(pid):  # not bubblewrap's own process, the host's parent in the sandbox
    try:
        with open(f"{_PROC}/{pid}/cmdline", "rb") as f:
            return b"\\0--grade\\0" in f.read()
    except OSError:
        return False


_HOST = _parent("self")

# 02 is forked from the same host next: write into a page of the host's memory (and of the
# grader's, the host's parent, where it can be seen: without the sandbox). The same bytes are
# written back, so that a success harms nothing and shows: this module then fails to import.
for _who, _pid in [("host", _HOST)] + [("grader", p) for p in [_parent(_HOST)] if _is_grader(p)]:
    try:
        with open(f"{_PROC}/{_pid}/maps") as _maps:
            _start = next(int(line.split("-")[0], 16) for line in _maps if " rw-p " in line)
        with open(f"{_PROC}/{_pid}/mem", "r+b", buffering=0) as _mem:
            _mem.seek(_start)
            _page = _mem.read(4096)
            _mem.seek(_start)
            _mem.write(_page)
    except (OSError, StopIteration):
        continue
    raise ImportError(f"kata-test: wrote into the {_who}")
"""

LAYER_NORM = """
import torch
import torch.nn.functional as F


class LayerNorm(torch.nn.Module):
    def __init__(self, emb_dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.scale = torch.nn.Parameter(torch.ones(emb_dim))
        self.shift = torch.nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.scale, self.shift, self.eps)
"""


def _layers_with_layer_norm() -> str:
    """solutions/layers.py with its LayerNorm replaced by one on ``F.layer_norm`` (which 02 forbids)."""
    source = (SOLUTIONS / "layers.py").read_text()
    start = source.index("class LayerNorm")
    end = source.index("\nclass ", start + 1)
    return textwrap.dedent(LAYER_NORM) + "\n\n" + source[:start] + source[end + 1:]


@BOTH
def test_an_exercise_cannot_rewrite_the_host_that_forks_the_next(tmp_path, mode):
    """Attack 2: 01's module writes into ``/proc/<host>/mem`` at import; 02, graded after it on
    ``F.layer_norm``, is refused as it is without the attack."""
    layers = _layers_with_layer_norm()
    attack = tree(tmp_path, "write-host", {"attention": WRITE_HOST + (SOLUTIONS / "attention.py").read_text(), "layers": layers},
                  base=SOLUTIONS)
    baseline = tree(tmp_path, "plain", {"layers": layers}, base=SOLUTIONS)
    files = graded_files("01", "02")
    a = grade(attack, tmp_path, files, mode=mode)
    b = grade(baseline, tmp_path, files, "--seed", seed_of(a), mode=mode)
    no_gain(a, b, ("01", "02"))
    assert a.status("01") == "passed", a.explain()  # its module imported: every write was refused
    assert "asks you to write this yourself" in a.exercise("02")["output"], a.explain()


KILL_HOST = """
import os, signal
os.kill(os.getppid(), signal.SIGKILL)
"""


@BOTH
def test_killing_the_host_costs_only_the_exercise_that_did_it(tmp_path, mode):
    """A child can signal its host (same uid): the host dies with everything below it, that
    exercise scores 0, and the next one is graded by a new host."""
    killer = tree(tmp_path, "kill-host", {"attention": KILL_HOST + (SOLUTIONS / "attention.py").read_text()}, base=SOLUTIONS)
    g = grade(killer, tmp_path, graded_files("01", "02"), mode=mode)
    assert g.exercise("01")["score"] == 0, g.explain()
    assert g.status("02") == "passed", g.explain()


# ------------------------------------------------------ 28, 29: the cheap way, out of the tracker's sight

FULL = """
import math

import numpy as np
import torch


def _full(q, k, v, is_causal, scale):
    # the whole score matrix, in NumPy: no dispatch mode in the process sees it
    qn, kn, vn = (t.detach().numpy() for t in (q, k, v))
    s = qn @ np.swapaxes(kn, -1, -2) * np.asarray(scale, qn.dtype)
    if is_causal:
        s = np.where(np.triu(np.ones(s.shape[-2:], dtype=bool), 1), -np.inf, s)
    m = s.max(-1, keepdims=True)
    p = np.exp(s - m)
    l = p.sum(-1, keepdims=True)
    return np.ascontiguousarray((p / l) @ vn), np.ascontiguousarray((m + np.log(l))[..., 0])


def _checked(q, block_q, block_k, scale):
    if block_q <= 0 or block_k <= 0:
        raise ValueError(f"block_q and block_k must be positive, got {block_q} and {block_k}")
    return 1 / math.sqrt(q.shape[-1]) if scale is None else scale
"""

TILED = """

def tiled_attention(q, k, v, is_causal=False, block_q=64, block_k=64, scale=None):
    scale = _checked(q, block_q, block_k, scale)
    out, lse = {compute}
    return torch.from_numpy(out).to(q.dtype), torch.from_numpy(lse)
"""

IN_PROCESS = TILED.format(compute="_full(q, k, v, is_causal, scale)")

ON_A_THREAD = """
import queue
import threading

_jobs, _done = queue.Queue(), queue.Queue()


def _serve():
    while True:
        _done.put(_full(*_jobs.get()))


threading.Thread(target=_serve, daemon=True).start()
""" + TILED.format(compute="_jobs.put((q, k, v, is_causal, scale)) or _done.get()")

GRANDCHILD = """
import os


def _in_a_grandchild(q, k, v, is_causal, scale):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:  # the grandchild computes, and is nobody's child once its parent is gone
            out, lse = _full(q, k, v, is_causal, scale)
            os.write(write, out.tobytes() + lse.tobytes())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    data = b""
    while chunk := os.read(read, 1 << 20):
        data += chunk
    os.close(read)
    n = q.shape[:-1].numel() * v.shape[-1]
    out = np.frombuffer(data, dtype=q.numpy().dtype)
    return out[:n].reshape(*q.shape[:-1], v.shape[-1]).copy(), out[n:].reshape(q.shape[:-1]).copy()
""" + TILED.format(compute="_in_a_grandchild(q, k, v, is_causal, scale)")

BACKGROUND = """
import multiprocessing

_ours, _theirs = multiprocessing.Pipe()


def _serve(conn):
    while True:
        q, k, v, is_causal, scale = conn.recv()
        conn.send(_full(*(torch.from_numpy(a) for a in (q, k, v)), is_causal, scale))


multiprocessing.get_context("fork").Process(target=_serve, args=(_theirs,), daemon=True).start()


def _elsewhere(q, k, v, is_causal, scale):
    _ours.send((q.detach().numpy(), k.detach().numpy(), v.detach().numpy(), is_causal, scale))
    return _ours.recv()
""" + TILED.format(compute="_elsewhere(q, k, v, is_causal, scale)")

FLASH = {"in-process": IN_PROCESS, "thread": ON_A_THREAD, "grandchild": GRANDCHILD, "background": BACKGROUND}

FLASH_GRAD = """
import math

import numpy as np
import torch

from .flash import tiled_attention  # noqa: F401


class TiledAttention(torch.autograd.Function):
    # the whole matrix of probabilities, kept for the backward in NumPy, out of the tracker's sight

    @staticmethod
    def forward(ctx, q, k, v, is_causal=False, block_q=64, block_k=64):
        qn, kn, vn = (t.detach().numpy() for t in (q, k, v))
        scale = np.asarray(1 / math.sqrt(q.shape[-1]), qn.dtype)
        s = qn @ np.swapaxes(kn, -1, -2) * scale
        if is_causal:
            s = np.where(np.triu(np.ones(s.shape[-2:], dtype=bool), 1), -np.inf, s)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out = p @ vn
        ctx.arrays = (qn, kn, vn, p, out, scale)
        return torch.from_numpy(np.ascontiguousarray(out)).to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        qn, kn, vn, p, out, scale = ctx.arrays
        do = grad_out.detach().numpy()
        dv = np.swapaxes(p, -1, -2) @ do
        dp = do @ np.swapaxes(vn, -1, -2)
        ds = p * (dp - (do * out).sum(-1, keepdims=True))
        dq, dk = ds @ kn * scale, np.swapaxes(ds, -1, -2) @ qn * scale
        return (*(torch.from_numpy(np.ascontiguousarray(g)) for g in (dq, dk, dv)), None, None, None)
"""

FLASH_GRAD_PLAIN = """
import math

import torch

from .flash import tiled_attention  # noqa: F401


class TiledAttention(torch.autograd.Function):
    # the whole matrix of probabilities, kept for the backward, where the tracker sees it

    @staticmethod
    def forward(ctx, q, k, v, is_causal=False, block_q=64, block_k=64):
        scale = 1 / math.sqrt(q.shape[-1])
        s = q @ k.transpose(-2, -1) * scale
        if is_causal:
            s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
        p = torch.exp(s - s.amax(-1, keepdim=True))
        p = p / p.sum(-1, keepdim=True)
        out = p @ v
        ctx.save_for_backward(q, k, v, p, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, p, out = ctx.saved_tensors
        dv = p.transpose(-2, -1) @ grad_out
        dp = grad_out @ v.transpose(-2, -1)
        ds = p * (dp - (grad_out * out).sum(-1, keepdim=True))
        return ds @ k * ctx.scale, ds.transpose(-2, -1) @ q * ctx.scale, dv, None, None, None
"""

MEMORY_CHECKS = {"28": ("test_28_flash_forward", "test_tiled_attention_memory_grows_with_the_tile"),
                 "29": ("test_29_flash_backward", "test_backward_memory_grows_with_the_tile")}
KERNEL_WORDS = ("peak resident memory rose", "started another process")


def hostile_tree(tmp: Path, name: str, flash: str | None = None, flash_grad: str | None = None) -> Path:
    modules = {}
    if flash is not None:
        modules["flash"] = FULL + flash
    if flash_grad is not None:
        modules["flash_grad"] = flash_grad
    return tree(tmp, name, modules, base=SOLUTIONS)


def memory_verdict(tree_path: Path, exercise: str, sandboxed: bool, seed: int = 3) -> str:
    """Run exercise ``exercise``'s memory check on ``tree_path`` in the worker, as a grade does;
    the failure's message, or "" when it passed."""
    import importlib

    from harness import sandbox

    module, check = MEMORY_CHECKS[exercise]
    tests = importlib.import_module(module)
    backend = WorkerBackend(tree_path, sandbox=sandbox.find()[0] if sandboxed else None)
    try:
        run_check(getattr(tests, check), Impl(backend, lookup(exercise), {}), seed)
        return ""
    except Mismatch as e:
        return str(e)
    finally:
        backend.close()


SIDES = pytest.mark.parametrize("sandboxed", [pytest.param(True, marks=SANDBOXED), pytest.param(False, marks=LINUX)])


@SIDES
def test_the_solutions_pass_the_kernels_memory_verdict(sandboxed):
    for exercise in ("28", "29"):
        assert memory_verdict(SOLUTIONS, exercise, sandboxed) == ""


@SIDES
@pytest.mark.parametrize("where", list(FLASH))
def test_the_whole_score_matrix_is_caught_out_of_the_trackers_sight(tmp_path, where, sandboxed):
    """28 the cheap way, where the dispatch mode in the worker sees none of it (as when a tree
    replaces the tracker): in NumPy in the process, on a thread started at import, in a
    double-forked grandchild, in a process started at import. The kernel's numbers fail it."""
    message = memory_verdict(hostile_tree(tmp_path, where, flash=FLASH[where]), "28", sandboxed)
    assert any(words in message for words in KERNEL_WORDS), message or "the check passed"


@SIDES
def test_the_whole_matrix_of_probabilities_is_caught_in_the_backward(tmp_path, sandboxed):
    message = memory_verdict(hostile_tree(tmp_path, "grad", flash_grad=FLASH_GRAD), "29", sandboxed)
    assert any(words in message for words in KERNEL_WORDS), message or "the check passed"


@BOTH
def test_hiding_the_score_matrix_from_the_tracker_gains_nothing(tmp_path, mode):
    """Graded: 28 and 29 the cheap way in NumPy score no more than the same in plain PyTorch,
    which the in-process tracker sees."""
    plain = textwrap.dedent("""
        import math
        import torch


        def tiled_attention(q, k, v, is_causal=False, block_q=64, block_k=64, scale=None):
            if block_q <= 0 or block_k <= 0:
                raise ValueError(f"block_q and block_k must be positive, got {block_q} and {block_k}")
            scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
            work = torch.float64 if q.dtype == torch.float64 else torch.float32
            s = (q.to(work) @ k.to(work).transpose(-2, -1)) * scale
            if is_causal:
                s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
            m = s.amax(-1, keepdim=True)
            p = torch.exp(s - m)
            l = p.sum(-1, keepdim=True)
            return ((p / l) @ v.to(work)).to(q.dtype), (m + torch.log(l))[..., 0]
    """)
    hidden = hostile_tree(tmp_path, "hidden", flash=IN_PROCESS, flash_grad=FLASH_GRAD)
    seen = tree(tmp_path, "seen", {"flash": plain}, base=SOLUTIONS)
    (seen / "flash_grad.py").write_text(FLASH_GRAD_PLAIN)
    files = graded_files("28", "29")
    a = grade(hidden, tmp_path, files, mode=mode)
    b = grade(seen, tmp_path, files, "--seed", seed_of(a), mode=mode)
    no_gain(a, b, ("28", "29"))
    for eid in ("28", "29"):
        assert a.exercise(eid)["score"] < a.exercise(eid)["max_score"], a.explain()
