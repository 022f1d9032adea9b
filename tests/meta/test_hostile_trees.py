"""Hostile trees of issue 24: the verdict rests only on the source the grader read and checked.

Each grade test builds a tree with one attack and a baseline tree without it, grades both sandboxed
with the same seed, and checks that the attack gains nothing, exercise by exercise, and that the
report says why. The tree's code is judged by the allow-list (``tests/allowlist.toml``) before any
of it runs; the tree's files are read once, as regular files only (``harness/treefiles.py``); the
worker imports the package from those texts alone (``harness/worker/tree.py``). The first tests
check the reader and the loader directly, in this process, in a fraction of a second each.
"""

from __future__ import annotations

import json
import os
import py_compile
import shutil
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from helpers import Graded, SOLUTIONS

from harness import sandbox, treefiles
from harness.failures import ImportFailure, NotStarted
from harness.impl import Impl, InProcessBackend
from harness.manifest import ROOT, lookup

BOX, WHY = sandbox.find()
REQUIRED = os.environ.get("KATA_REQUIRE_SANDBOX") == "1"
SANDBOXED = pytest.mark.skipif(BOX is None and not REQUIRED, reason=f"no sandbox here: {WHY}")
POSIX = pytest.mark.skipif(os.name != "posix", reason="FIFOs and symbolic links as Linux makes them")
EXERCISES = ROOT / "exercises"
RULE = "(allow-list rule: "


# ------------------------------------------------------------------------------------------ helpers


def copy(tmp: Path, name: str, modules: dict[str, str] | None = None, base: Path = EXERCISES) -> Path:
    """A copy of ``base`` (the stubs by default) with some files replaced by the given sources."""
    dest = tmp / name
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, source in (modules or {}).items():
        (dest / rel).write_text(textwrap.dedent(source), encoding="utf-8")
    return dest


def graded_files(*ids: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for i in ids for p in (ROOT / "tests").glob(f"test_{i}_*.py"))


def grade(tree: Path, tmp: Path, ids: tuple[str, ...], *args: str, timeout: float = 400) -> Graded:
    """A sandboxed grade of ``ids`` on ``tree``, in a fresh pytest process, as ``nox -s grade`` runs one."""
    import subprocess

    report = tmp / f"report-{tree.name}.json"
    cmd = [sys.executable, "-m", "pytest", *graded_files(*ids), "--grade", "-q", "--impl", str(tree),
           "--report", str(report), "--require-sandbox", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    data = json.loads(report.read_text()) if report.exists() else {}
    return Graded(proc.returncode, proc.stdout, proc.stderr, data)


def no_gain(attack: Graded, baseline: Graded, ids: tuple[str, ...]) -> None:
    """The attack's tree scores no more than the baseline's, exercise by exercise, and its report is finished."""
    assert attack.report.get("extra_data", {}).get("finished"), attack.explain()
    for eid in ids:
        got, base = attack.exercise(eid)["score"], baseline.exercise(eid)["score"]
        assert got <= base, f"exercise {eid}: the attack scored {got}, the baseline {base}\n{attack.explain()}"


def seed_of(g: Graded) -> str:
    return str(g.report["extra_data"]["seed"])


def in_thread(fn, seconds: float = 60):
    """``fn()``'s result, or a failure when it has not returned after ``seconds`` (a hang guard)."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"{fn} did not return within {seconds} s"
    return out[0]


# ------------------------------------------------------------------------------------------ the reader


@POSIX
def test_links_fifos_devices_and_huge_files_are_refused_by_name_unread(tmp_path):
    root = copy(tmp_path, "tree")
    os.symlink("/dev/zero", root / "zero.py")
    os.symlink("attention.py", root / "inside.py")  # a link that stays in the tree is refused too
    os.mkfifo(root / "pipe.py")
    with open(root / "huge.py", "wb") as f:
        f.truncate(50 * 1024 * 1024)
    (root / "sub").mkdir()
    os.symlink("/usr/lib", root / "linked")
    (root / "sub" / "helper.py").write_text("X = 1\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.py").write_text("never read")
    (root / "data.bin").write_bytes(b"\0" * 10)
    files = in_thread(lambda: treefiles.read(root))
    assert set(files.refused) == {"zero.py", "inside.py", "pipe.py", "huge.py", "linked"}, files.refused
    assert "symbolic link" in files.refused["zero.py"] and "FIFO" in files.refused["pipe.py"]
    assert "52,428,800 bytes" in files.refused["huge.py"]
    assert "sub/helper.py" in files.sources and "attention.py" in files.sources
    assert not any("__pycache__" in p or p.endswith(".bin") for p in files.sources)


def test_a_refused_file_costs_the_exercises_that_import_it():
    sources = {"__init__.py": "", "attention.py": "", "layers.py": "from .util import x\n",
               "util.py": "from .deep import y\n"}
    imports = {"layers.py": {"util.py"}, "util.py": {"deep.py"}}.get
    cost = lambda refused, module: treefiles.costs(refused, sources, module, lambda f: imports(f, set()))  # noqa: E731
    assert cost({"deep.py": "a FIFO"}, "layers") == ["deep.py: a FIFO"]
    assert cost({"deep.py": "a FIFO"}, "attention") == []
    assert cost({"__init__.py": "a link"}, "attention") == ["__init__.py: a link"]
    assert cost({"linked": "a link"}, "attention") == ["linked: a link"]  # a linked folder could hold any module


# ------------------------------------------------------------------------------------------ the loader


def test_the_worker_imports_only_the_sources_it_was_given(tmp_path):
    root = copy(tmp_path, "tree", {"attention.py": "from .cheat import softmax\n"})
    cheat = tmp_path / "cheat.py"
    cheat.write_text((SOLUTIONS / "attention.py").read_text())
    py_compile.compile(str(cheat), cfile=str(root / "cheat.pyc"), doraise=True)  # a sourceless module
    (root / "helper.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF not really")
    sources = treefiles.read(root).sources
    impl = Impl(InProcessBackend(root, sources), lookup("01"), {})
    with pytest.raises(ImportFailure, match="No module named 'tree.cheat'"):
        impl.call("attention.softmax", __import__("torch").zeros(2))
    # the text given is what runs, whatever the file says now
    sources["attention.py"] = "def softmax(x, dim=-1):\n    raise NotImplementedError('exercise 01: not yet')\n"
    (root / "attention.py").write_text((SOLUTIONS / "attention.py").read_text())
    impl = Impl(InProcessBackend(root, sources), lookup("01"), {})
    with pytest.raises(NotStarted, match=r"attention\.py, line 2"):
        impl.call("attention.softmax", __import__("torch").zeros(2))


def test_tracebacks_and_syntax_errors_still_show_the_learners_lines(tmp_path):
    root = copy(tmp_path, "tree", {"layers.py": "def gelu(x):\n    return x.no_such_method()\n",
                                   "attention.py": "def softmax(x, dim=-1)\n    return x\n"})
    impl = Impl(InProcessBackend(root), lookup("02"), {})
    with pytest.raises(Exception) as raised:
        impl.call("layers.gelu", __import__("torch").zeros(2))
    assert "return x.no_such_method()" in raised.value.explain() and "layers.py" in raised.value.explain()
    impl = Impl(InProcessBackend(root), lookup("01"), {})
    with pytest.raises(ImportFailure, match=r"SyntaxError in attention\.py, line 1") as raised:
        impl.call("attention.softmax", __import__("torch").zeros(2))
    assert "def softmax(x, dim=-1)" in raised.value.explain()


# ------------------------------------------------------------------------------------------ graded attacks

# Issue 24, item 1: the package's __init__.py walks up the stack to the probe's guard and switches
# it off; then 01 and 02 call the built-ins they forbid.
UNINSTALL = """
    import sys

    _frame = sys._getframe(1)
    while _frame is not None:
        _guard = _frame.f_locals.get("guard")
        if _guard is not None and hasattr(_guard, "uninstall"):
            _guard.uninstall()
            break
        _frame = _frame.f_back
"""
BUILTINS = {
    "attention.py": """
        import torch
        import torch.nn.functional as F

        def softmax(x, dim=-1):
            return torch.softmax(x, dim)

        def causal_mask(seq_len, device=None):
            return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()

        def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    """,
    "layers.py": """
        import torch
        import torch.nn.functional as F
        from torch import nn

        class LayerNorm(nn.Module):
            def __init__(self, emb_dim, eps=1e-5):
                super().__init__()
                self.eps = eps
                self.scale, self.shift = nn.Parameter(torch.ones(emb_dim)), nn.Parameter(torch.zeros(emb_dim))

            def forward(self, x):
                return F.layer_norm(x, x.shape[-1:], self.scale, self.shift, self.eps)

        def gelu(x):
            return F.gelu(x, approximate="tanh")

        class GELU(nn.Module):
            def forward(self, x):
                return gelu(x)
    """,
}


@SANDBOXED
def test_switching_the_guard_off_from_the_package_init_is_refused_before_it_runs(tmp_path):
    ids = ("01", "02")
    hostile = copy(tmp_path, "hostile", {**BUILTINS, "__init__.py": UNINSTALL})
    plain = copy(tmp_path, "plain", BUILTINS)
    a = grade(hostile, tmp_path, ids)
    b = grade(plain, tmp_path, ids, "--seed", seed_of(a))
    no_gain(a, b, ids)
    for eid in ids:
        out = a.exercise(eid)["output"]
        assert a.exercise(eid)["score"] == 0 and "__init__.py line" in out and RULE + "frames" in out, a.explain()


# Issue 24, item 3: 28 written the cheap way (the whole score matrix), and the scenario's memory
# tracker, found on the stack, told that nothing was held.
CHEAP_FLASH = """
    import math
    import sys

    import torch


    def tiled_attention(q, k, v, is_causal=False, block_q=64, block_k=64, scale=None):
        scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
        s = (q @ k.transpose(-2, -1)) * scale
        if is_causal:
            L, S = s.shape[-2:]
            s = s.masked_fill(torch.ones(L, S, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
        lse = torch.logsumexp(s, dim=-1)
        out = torch.exp(s - lse[..., None]) @ v
        HIDE
        return out, lse
"""
HIDE = """
        frame = sys._getframe(1)
        while frame is not None:
            for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
                if hasattr(value, "peak") and hasattr(value, "largest"):
                    value.peak = value.largest = 0
            frame = frame.f_back
"""


@SANDBOXED
def test_the_memory_tracker_of_28_is_out_of_reach(tmp_path):
    ids = ("28",)
    cheap = textwrap.dedent(CHEAP_FLASH)
    hide = textwrap.indent(textwrap.dedent(HIDE), " " * 4).strip()
    hostile = copy(tmp_path, "hostile", {"flash.py": cheap.replace("HIDE", hide)})
    plain = copy(tmp_path, "plain", {"flash.py": cheap.replace("HIDE", "pass")})
    a = grade(hostile, tmp_path, ids)
    b = grade(plain, tmp_path, ids, "--seed", seed_of(a))
    no_gain(a, b, ids)
    out = a.exercise("28")["output"]
    assert a.exercise("28")["score"] == 0 and "flash.py line" in out and RULE + "frames" in out, a.explain()


@SANDBOXED
@POSIX
def test_links_fifos_and_huge_files_are_refused_and_the_report_is_written(tmp_path):
    """Issue 24, item 7: ``zero.py -> /dev/zero`` once made the grader read without end (no report,
    a forged one left in place) and a FIFO held the grade for the watchdog's half hour."""
    ids = ("01", "02")
    hostile = copy(tmp_path, "hostile", {"layers.py": "from .pipe import X\n" + (EXERCISES / "layers.py").read_text()})
    os.symlink("/dev/zero", hostile / "zero.py")
    os.mkfifo(hostile / "pipe.py")
    with open(hostile / "huge.py", "wb") as f:
        f.truncate(50 * 1024 * 1024)
    (tmp_path / f"report-{hostile.name}.json").write_text(json.dumps({"score": 20, "max_score": 20, "tests": [],
                                                                     "extra_data": {"finished": True}}))
    a = grade(hostile, tmp_path, ids, "--grade-timeout", "300", timeout=360)
    b = grade(EXERCISES, tmp_path, ids, "--seed", seed_of(a))
    no_gain(a, b, ids)
    assert a.report["extra_data"]["finished"] and a.report["tests"], a.explain()  # this grade's, not the forged one
    assert a.exercise("01")["score"] == a.exercise("02")["score"] == 0, a.explain()
    out = a.exercise("02")["output"]
    assert "the grader refused to read pipe.py: it is a FIFO" in out, a.explain()  # 02 imports it
    assert "refused" not in a.exercise("01")["output"], a.explain()  # 01 imports none of them
    assert a.status("01") == "not started", a.explain()


@SANDBOXED
def test_bytecode_and_extension_modules_in_the_tree_are_never_loaded(tmp_path):
    """A ``.pyc`` whose code differs from its ``.py`` (unchecked-hash: Python would not compare
    them), a sourceless ``.pyc`` and a file named like an extension module: none of them runs."""
    ids = ("01", "02")
    cheat = "from .cheat import softmax, causal_mask, scaled_dot_product_attention\n"
    hostile = copy(tmp_path, "hostile", {"attention.py": cheat})
    scratch = tmp_path / "compiled"
    scratch.mkdir()
    for name in ("layers", "attention"):
        shutil.copy(SOLUTIONS / f"{name}.py", scratch / f"{name}.py")
    cache = hostile / "__pycache__"
    cache.mkdir()
    tag = sys.implementation.cache_tag
    py_compile.compile(str(scratch / "layers.py"), cfile=str(cache / f"layers.{tag}.pyc"), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    py_compile.compile(str(scratch / "attention.py"), cfile=str(hostile / "cheat.pyc"), doraise=True)
    (hostile / "layers.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF" + b"\0" * 64)
    a = grade(hostile, tmp_path, ids)
    b = grade(EXERCISES, tmp_path, ids, "--seed", seed_of(a))
    no_gain(a, b, ids)
    assert "No module named 'tree.cheat'" in a.exercise("01")["output"], a.explain()
    assert a.status("02") == "not started" and "ELF" not in a.exercise("02")["output"], a.explain()


@SANDBOXED
def test_a_violation_costs_only_the_exercises_whose_code_imports_it(tmp_path):
    ids = ("01", "02")
    util = "import sys\n\n\ndef caller():\n    return sys._getframe(1).f_code.co_name\n"
    layers = "from .util import caller  # noqa: F401\n" + (SOLUTIONS / "layers.py").read_text()
    hostile = copy(tmp_path, "hostile", {"util.py": util, "layers.py": layers}, base=SOLUTIONS)
    honest = "def caller():\n    return 'caller'\n"
    plain = copy(tmp_path, "plain", {"util.py": honest, "layers.py": layers}, base=SOLUTIONS)
    a = grade(hostile, tmp_path, ids)
    b = grade(plain, tmp_path, ids, "--seed", seed_of(a))
    no_gain(a, b, ids)
    assert b.status("02") == "passed" and a.exercise("02")["score"] == 0, a.explain()
    out = a.exercise("02")["output"]
    assert "util.py line 5" in out and RULE + "frames" in out, a.explain()
    assert a.status("01") == "passed", a.explain()


# ------------------------------------------------------------------------------------------ the channel

FORGER = '''
import json
import os
import struct


def _forge_replies():
    """Write a reply of "ok" for the next requests into every socket this process holds: the
    grader's channel is one of them. The file descriptor is a variable: no scan can see which."""
    for n in range(1, 6):
        head = json.dumps({"status": "ok", "result": {}, "id": n, "arrays": []}).encode()
        message = struct.pack("<I", len(head)) + head
        for fd in range(3, 64):
            try:
                if os.stat(fd).st_mode & 0o170000 != 0o140000:
                    continue
                with open(fd, "wb", closefd=False) as f:
                    f.write(message)
            except OSError:
                pass
'''


@SANDBOXED
def test_a_reply_the_probe_did_not_sign_is_refused(tmp_path):
    """The tree holds the socket its own replies travel on, so it can write a reply of its own
    (``open(fd)`` with a computed number passes any scan of the source). Every reply is signed with
    the session's key by the trusted serving loop; one the tree wrote is refused, and the check
    that met it fails."""
    source = (SOLUTIONS / "attention.py").read_text()
    forged = source.replace("\ndef softmax(", FORGER + "\n\ndef softmax(", 1)
    assert forged != source
    forged += "\n_forge_replies()\n"  # at import: before the first probe's own reply
    attack = copy(tmp_path, "forger", {"attention.py": forged}, base=SOLUTIONS)
    honest = copy(tmp_path, "honest", base=SOLUTIONS)
    first = grade(honest, tmp_path, ("01",))
    g = grade(attack, tmp_path, ("01",), "--seed", seed_of(first))
    no_gain(g, first, ("01",))
    assert g.exercise("01")["score"] < first.exercise("01")["score"], g.explain()
    assert "did not sign" in json.dumps(g.report), g.explain()
