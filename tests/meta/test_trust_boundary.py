"""The grader's trust boundary, tried as a hostile learner would: ten attacks that raised the score
of a tree with no implementation before the worker ran in a sandbox (issue 11), and a few more.

Each test builds a tree that makes one attack in place of the code it should write, and a baseline
tree that leaves the same code as stubs, grades both with the same seed, and checks that the
attack gains nothing: no exercise scores more than in the baseline. Sandboxed where bubblewrap runs
(``KATA_REQUIRE_SANDBOX=1``, set by ``.ci/run``, makes a missing sandbox a failure instead of a
skip); the attacks that need no sandbox to be defeated run again with ``--no-sandbox``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import FIND_GRADER, Graded, checkout_copy

from harness import sandbox
from harness.manifest import ROOT

BOX, WHY = sandbox.find()
REQUIRED = os.environ.get("KATA_REQUIRE_SANDBOX") == "1"
SANDBOXED = pytest.mark.skipif(BOX is None and not REQUIRED, reason=f"no sandbox here: {WHY}")
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fallback's defences here are Linux's")
BOTH = pytest.mark.parametrize("mode", [pytest.param("sandbox", marks=SANDBOXED), pytest.param("no-sandbox", marks=LINUX)])
EXERCISES = ROOT / "exercises"
ALLOW_LIST = "(allow-list rule: "  # how a refusal by the allow-list ends (tests/allowlist.toml), before any code runs


def test_the_sandbox_runs_where_ci_requires_it():
    if REQUIRED:
        assert BOX is not None, WHY
    elif BOX is None:
        pytest.skip(f"no sandbox here: {WHY}")
    assert "bubblewrap" in BOX.describe()


# ------------------------------------------------------------------------------------------ helpers


def tree(tmp: Path, name: str, modules: dict[str, str], base: Path = EXERCISES) -> Path:
    """A copy of ``base`` (the stubs by default) with some modules replaced by the given sources."""
    dest = tmp / name
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for module, source in modules.items():
        (dest / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return dest


def grade(tree_path: Path, tmp: Path, files: list[str], *args: str, mode: str = "sandbox", python: str = sys.executable,
          cwd: Path = ROOT, timeout: float = 400, env: dict[str, str] | None = None) -> Graded:
    report = tmp / f"report-{tree_path.name}-{mode}.json"
    box = ["--require-sandbox"] if mode == "sandbox" else ["--no-sandbox"]
    cmd = [python, "-m", "pytest", *files, "--grade", "-q", "--impl", str(tree_path), "--report", str(report), *box, *args]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    data = json.loads(report.read_text()) if report.exists() else {}
    return Graded(proc.returncode, proc.stdout, proc.stderr, data)


def graded_files(*ids: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for i in ids for p in (ROOT / "tests").glob(f"test_{i}_*.py"))


def no_gain(attack: Graded, baseline: Graded, ids: tuple[str, ...]) -> None:
    """The attack's tree scores no more than the baseline's, exercise by exercise."""
    for eid in ids:
        got, base = attack.exercise(eid)["score"], baseline.exercise(eid)["score"]
        assert got <= base, f"exercise {eid}: the attack scored {got}, the stubs {base}\n{attack.explain()}"


def refused(g: Graded, eid: str) -> bool:
    """The allow-list refused the exercise's code before any of it ran (the grade finished)."""
    return bool(g.report.get("tests")) and ALLOW_LIST in g.exercise(eid)["output"]


def seed_of(g: Graded) -> str:
    return str(g.report["extra_data"]["seed"])


# ------------------------------------------------------------------------ 1, 2: the guard's refusals

ON_A_THREAD = """
    import threading
    import torch
    import torch.nn.functional as F
    from torch import nn

    def _on_a_thread(fn, *args, **kwargs):
        out = []
        t = threading.Thread(target=lambda: out.append(fn(*args, **kwargs)))
        t.start()
        t.join()
        if not out:
            raise RuntimeError("the thread found nothing")
        return out[0]
"""
ATTENTION_THREADS = ON_A_THREAD + """
    def softmax(x, dim=-1):
        return _on_a_thread(torch.softmax, x, dim)

    def causal_mask(seq_len, device=None):
        return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()

    def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):
        return _on_a_thread(F.scaled_dot_product_attention, q, k, v, attn_mask=attn_mask, is_causal=is_causal)
"""
LAYERS_THREADS = ON_A_THREAD + """
    class LayerNorm(nn.Module):
        def __init__(self, emb_dim, eps=1e-5):
            super().__init__()
            self.eps, self.scale, self.shift = eps, nn.Parameter(torch.ones(emb_dim)), nn.Parameter(torch.zeros(emb_dim))

        def forward(self, x):
            return _on_a_thread(F.layer_norm, x, x.shape[-1:], self.scale, self.shift, self.eps)

    def gelu(x):
        return _on_a_thread(F.gelu, x, approximate="tanh")

    class GELU(nn.Module):
        def forward(self, x):
            return gelu(x)
"""
# Dispatch modes switched off (under a name the source check does not know), and aten's kernels
# called through torch.ops, which never reach a function mode.
OPS = """
    import torch
    from torch import nn

    _off = getattr(torch._C, "_Disable" + "TorchDispatch")
    _ops = getattr(torch, "ops").aten
"""
ATTENTION_OPS = OPS + """
    def softmax(x, dim=-1):
        with _off():
            return _ops._softmax.default(x, dim, False)

    def causal_mask(seq_len, device=None):
        return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()

    def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):
        with _off():
            return _ops._scaled_dot_product_attention_math.default(q, k, v, attn_mask, 0.0, is_causal)[0]
"""
LAYERS_OPS = OPS + """
    class LayerNorm(nn.Module):
        def __init__(self, emb_dim, eps=1e-5):
            super().__init__()
            self.eps, self.scale, self.shift = eps, nn.Parameter(torch.ones(emb_dim)), nn.Parameter(torch.zeros(emb_dim))

        def forward(self, x):
            with _off():
                return _ops.native_layer_norm.default(x, list(x.shape[-1:]), self.scale, self.shift, self.eps)[0]

    def gelu(x):
        with _off():
            return _ops.gelu.default(x, approximate="tanh")

    class GELU(nn.Module):
        def forward(self, x):
            return gelu(x)
"""


def stubbed(source: str, names: tuple[str, ...]) -> str:
    """``source`` with the bodies of the functions ``names`` replaced by a stub."""
    lines, out, skipping = textwrap.dedent(source).splitlines(), [], None
    for line in lines:
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if skipping is not None and (not stripped or indent > skipping):
            continue
        skipping = None
        out.append(line)
        for name in names:
            if stripped.startswith(f"def {name}("):
                out.append(" " * (indent + 4) + "raise NotImplementedError('exercise: not yet')")
                skipping = indent
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("attack", ["threads", "dispatch switched off"])
@BOTH
def test_forbidden_builtins_on_a_thread_or_through_aten_are_refused(tmp_path, attack, mode):
    attention, layers = (ATTENTION_THREADS, LAYERS_THREADS) if attack == "threads" else (ATTENTION_OPS, LAYERS_OPS)
    hostile = tree(tmp_path, "hostile", {"attention": attention, "layers": layers})
    honest = tree(tmp_path, "honest", {"attention": stubbed(attention, ("softmax", "scaled_dot_product_attention")),
                                       "layers": stubbed(layers, ("forward", "gelu"))})
    files = graded_files("01", "02")
    a = grade(hostile, tmp_path, files, mode=mode)
    b = grade(honest, tmp_path, files, "--seed", seed_of(a), mode=mode)
    no_gain(a, b, ("01", "02"))
    for eid in ("01", "02"):  # the attack was refused: by the allow-list before it ran, or by the guard when it did
        out = a.exercise(eid)["output"]
        assert "asks you to write this yourself" in out or ALLOW_LIST in out, a.explain()


# ------------------------------------------------------------------------ 3, 4: the grader's files

# Where a tree might look for the grader's parts or the instructor's solutions: beside the worker
# (sys.argv[0]), beside itself, in the checkout it was graded from (a hostile learner may know
# that path), and in the worker's memory.
FINDER = textwrap.dedent(f"""
    import importlib, sys
    from pathlib import Path

    _CHECKOUT = Path({str(ROOT)!r})

    def _places(folder):
        here = [Path(sys.argv[0]).resolve(), Path(__file__).resolve()]
        for p in here:
            for up in p.parents:
                yield up / folder
                yield up / "tests" / ("har" + "ness") / folder
        yield _CHECKOUT / folder
        yield _CHECKOUT / "tests" / ("har" + "ness") / folder

    def _source(folder, name):
        for place in _places(folder):
            try:
                return (place / (name + ".py")).read_text()
            except OSError:
                pass
        try:
            return importlib.import_module("har" + "ness.worker.parts").SOURCES[name]
        except Exception:
            return None

    def _borrow(folder, name, into):
        source = _source(folder, name)
        if source is None:
            raise NotImplementedError("exercise: not yet (nothing to borrow)")
        exec(compile(source, name + ".py", "exec"), into)
""")


@SANDBOXED
def test_the_graders_parts_are_out_of_reach(tmp_path):
    modules = {m: FINDER + f"\n_borrow('parts', {m!r}, globals())\n" for m in ("attention", "layers", "multihead", "block", "model")}
    hostile = tree(tmp_path, "hostile", modules)
    files = graded_files("01", "02", "07", "08", "09")
    a = grade(hostile, tmp_path, files)
    b = grade(EXERCISES, tmp_path, files, "--seed", seed_of(a))
    no_gain(a, b, ("01", "02", "07", "08", "09"))
    assert a.report["score"] == 0, a.explain()
    for eid in ("01", "02", "07", "08", "09"):  # the attack was refused before it ran, or ran and found nothing
        assert "nothing to borrow" in a.exercise(eid)["output"] or ALLOW_LIST in a.exercise(eid)["output"], a.explain()


@SANDBOXED
def test_the_instructors_solutions_are_out_of_reach(tmp_path):
    checkout = checkout_copy(tmp_path)  # an instructor's checkout: it has solutions/
    modules = {m: FINDER.replace(repr(str(ROOT)), repr(str(checkout))) + f"\n_borrow('solutions', {m!r}, globals())\n"
               for m in ("attention", "layers", "multihead")}
    hostile = tree(tmp_path, "student", modules)
    files = graded_files("01", "02", "07")
    a = grade(hostile, tmp_path, files, cwd=checkout)
    assert a.report["score"] == 0, a.explain()
    for eid in ("01", "02", "07"):  # the attack was refused before it ran, or ran and found nothing
        assert "nothing to borrow" in a.exercise(eid)["output"] or ALLOW_LIST in a.exercise(eid)["output"], a.explain()


# ------------------------------------------------------------------------ 5: the worker's clock

SLOW = """
import time as _time
_fast_train_bpe = train_bpe


def train_bpe(text, vocab_size, special_tokens):  # right, but slower than the check allows on a large text
    if len(text) > 200_000:
        _time.sleep(4.0)
    return _fast_train_bpe(text, vocab_size, special_tokens)
"""
FROZEN_CLOCK = """
_time.perf_counter = lambda: 0.0
_time.monotonic = lambda: 0.0
_time.time = lambda: 0.0
_time.perf_counter_ns = lambda: 0
"""


@BOTH
def test_the_workers_clock_does_not_time_a_check(tmp_path, mode):
    solution = (ROOT / "solutions" / "bpe.py").read_text()
    honest = tree(tmp_path, "slow", {"bpe": solution + SLOW}, base=ROOT / "solutions")
    hostile = tree(tmp_path, "frozen", {"bpe": solution + SLOW + FROZEN_CLOCK}, base=ROOT / "solutions")
    files = [*graded_files("04"), "-k", "test_training_is_fast"]
    a = grade(hostile, tmp_path, files, mode=mode)
    b = grade(honest, tmp_path, files, "--seed", seed_of(a), mode=mode)
    no_gain(a, b, ("04",))
    out = a.exercise("04")["output"]  # the allow-list refuses the frozen clock, or the slow trainer fails on its time
    assert "took" in out or ALLOW_LIST in out, a.explain()


# ------------------------------------------------------------------------ 6: tiktoken by file path

LOAD_CORE = """
    import base64, glob, importlib.util, os, sys
    import regex

    def _core():
        name = "_tik" + "token"
        for folder in sys.path:
            for path in glob.glob(os.path.join(folder, "*", name + "*.so")):
                loader = getattr(importlib.machinery, "Extension" + "FileLoader")(name, path)
                spec = getattr(importlib.util, "spec_from_" + "file_location")(name, path, loader=loader)
                module = getattr(importlib.util, "module_from_" + "spec")(spec)
                loader.exec_module(module)
                return module
        raise NotImplementedError("exercise 05: not yet (no tiktoken core found)")

    PATTERN = r\"\"\"'(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+\"\"\"

    class Tokenizer:
        def __init__(self, ranks, special_tokens=None, pattern=PATTERN):
            self.ranks, self.special = ranks, dict(special_tokens or {})
            self.core = _core().CoreBPE(ranks, self.special, pattern)

        @classmethod
        def from_tiktoken_file(cls, path, special_tokens=None, pattern=PATTERN):
            ranks = {}
            for line in open(path, "rb"):
                if line.strip():
                    token, rank = line.split()
                    ranks[base64.b64decode(token)] = int(rank)
            return cls(ranks, special_tokens, pattern)

        @classmethod
        def from_gpt2(cls, path):
            return cls.from_tiktoken_file(path, {"<|endoftext|>": 50256})

        def encode(self, text, allowed_special=frozenset()):
            allowed = set(self.special) if allowed_special == "all" else set(allowed_special)
            return list(self.core.encode(text, allowed))

        def decode(self, ids):
            return bytes(self.core.decode_bytes(ids)).decode("utf-8", errors="replace")
"""


@SANDBOXED
def test_tiktoken_is_absent_from_the_tokenizer_exercises_sandbox(tmp_path):
    hostile = tree(tmp_path, "hostile", {"tokenizer": LOAD_CORE})
    a = grade(hostile, tmp_path, graded_files("05"))
    assert a.exercise("05")["score"] == 0, a.explain()
    out = a.exercise("05")["output"]  # refused by the allow-list before it ran, or it ran and found no core
    assert "no tiktoken core found" in out or ALLOW_LIST in out, a.explain()


def test_the_tokenizer_exercises_share_the_one_sandbox_that_lacks_tiktoken():
    """The grade starts first the host that serves nearly every exercise, 03-05 among them, and its
    sandbox leaves tiktoken out; only exercise 31 (whose trusted part encodes with tiktoken) is
    served by a second host, started after the first probe."""
    from harness import manifest, runner

    needs = [(e.hidden_modules, e.worker_imports) for e in manifest.load()]
    hosts = list(runner._group(needs, sandboxed=True))
    assert len(hosts) == 2 and "tiktoken" in hosts[0] and "tiktoken" not in hosts[1], hosts
    assert all(manifest.lookup(i).hidden_modules == hosts[0] for i in ("03", "04", "05"))
    assert list(runner._group(needs, sandboxed=False)) == [()]


# ------------------------------------------------------------------------ 7: a forged report

FORGER = """
import json, os, sys, time

def _forge():
    reports = []
    for pid in os.listdir("/proc"):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\\0")
        except OSError:
            continue
        if "--report" in args and "pytest" in args:
            reports.append((int(pid), args[args.index("--report") + 1]))
    fake = json.dumps({"score": 20, "max_score": 20, "tests": [], "extra_data": {"finished": True, "forged": True}})
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for _ in range(300):  # wait for the grader to finish, then write the report
                time.sleep(0.05)
                for pid, path in reports:
                    if not os.path.exists(f"/proc/{pid}"):
                        try:
                            open(path, "w").write(fake)
                        except OSError:
                            pass
                        os._exit(0)
            os._exit(0)
        os._exit(0)

_forge()
"""


@BOTH
def test_no_process_of_the_grade_outlives_it_to_forge_the_report(tmp_path, mode):
    hostile = tree(tmp_path, "hostile", {"attention": FORGER + (EXERCISES / "attention.py").read_text()})
    a = grade(hostile, tmp_path, graded_files("01"), mode=mode)
    assert a.report.get("extra_data", {}).get("finished") is True, a.explain()
    digest = next(line for line in a.stdout.splitlines() if "sha256" in line).split("sha256 ")[1].split()[0]
    time.sleep(3)  # a survivor would have written by now
    report = tmp_path / f"report-hostile-{mode}.json"
    import hashlib

    assert hashlib.sha256(report.read_bytes()).hexdigest() == digest, report.read_text()[:300]
    assert "forged" not in report.read_text()


# ------------------------------------------------------------------------ 8: a poisoned environment

POISON = """
import os, site, sys

def _poison():
    for folder in site.getsitepackages():
        try:
            with open(os.path.join(folder, "kata_evil.py"), "w") as f:
                f.write("import os\\nopen(os.environ.get('KATA_EVIL_MARK', os.devnull), 'a').write('ran\\\\n')\\n")
            for name in sorted(os.listdir(folder)):
                if name.endswith(".pth"):
                    with open(os.path.join(folder, name), "a") as f:
                        f.write("\\nimport kata_evil\\n")
                    break
        except OSError:
            pass

_poison()
"""


def disposable_environment(tmp: Path) -> Path:
    """A small virtual environment that borrows this one's packages through a .pth file, with a
    stamp and a record as nox leaves them: an attack may poison it, not the suite's own."""
    env = tmp / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site_packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site_packages / "kata_borrow.pth").write_text("\n".join(ours) + "\n")
    (env / "kata-env.json").write_text("{}")
    subprocess.run([str(python), "-I", "-B", str(ROOT / "tests" / "harness" / "environment.py"), "--record"], check=True,
                   capture_output=True)
    return python


@BOTH
def test_a_poisoned_environment_voids_the_grade_and_every_later_one(tmp_path, mode, monkeypatch):
    python = disposable_environment(tmp_path)
    env = python.parent.parent
    mark = tmp_path / "evil-ran"
    monkeypatch.setenv("KATA_EVIL_MARK", str(mark))
    hostile = tree(tmp_path, "hostile", {"layers": POISON + (EXERCISES / "layers.py").read_text()})
    a = grade(hostile, tmp_path, graded_files("01", "02"), mode=mode, python=str(python))
    poisoned = any(p.name == "kata_evil.py" for p in env.rglob("kata_evil.py"))
    if refused(a, "02"):  # the allow-list refused it before it ran: nothing is poisoned, nothing void
        assert not poisoned and a.exercise("02")["score"] == 0 and not a.report["extra_data"]["void"], a.explain()
        return
    if mode == "sandbox":
        assert not poisoned, "the sandbox let the worker write into the environment"
        assert not a.report["extra_data"]["void"] and (env / "kata-env.json").exists(), a.explain()
        return
    assert poisoned, "the attack did not run"
    assert a.report["score"] == 0 and a.report["extra_data"]["void"], a.explain()
    assert "GRADE VOID" in a.stdout and "rm -rf .nox/kata" in a.stdout, a.explain()
    assert not (env / "kata-env.json").exists()  # nox rebuilds the environment before its next session
    solutions = ROOT / "solutions"
    later = grade(solutions, tmp_path, graded_files("01"), mode=mode, python=str(python))
    assert mark.exists(), "the poison did not run in the later grade"
    assert later.report["score"] == 0 and "changed since it was built" in later.stdout, later.explain()


# ------------------------------------------------------------------------ 9: a stopped grader

# Stop the grader where it can be found (else whatever is above: in the sandbox, the worker's host).
STOPPER = FIND_GRADER + """
import signal
os.kill(_grader() or os.getppid(), signal.SIGSTOP)
"""


@BOTH
def test_a_stopped_grader_still_ends_the_grade(tmp_path, mode):
    hostile = tree(tmp_path, "hostile", {"attention": STOPPER + (EXERCISES / "attention.py").read_text()})
    start = time.monotonic()
    a = grade(hostile, tmp_path, graded_files("01", "02"), mode=mode, timeout=240)
    assert time.monotonic() - start < 200
    assert (a.report.get("score") or 0) == 0, a.explain()
    if mode == "no-sandbox" and not refused(a, "01"):  # the allow-list refuses it before it runs; without it:
        assert a.code != 0 and "GRADE VOID: the grader was stopped" in a.stderr, a.explain()
        assert a.report["output"].startswith("GRADE VOID"), a.report


# ------------------------------------------------------------------------ 10: exercise 12's drivers

FAKE_DRIVERS = """

def cached_logits(cfg, state_dict, idx, chunk_sizes, max_len=None, reset_after=0):
    from .model import GPTModel
    model = GPTModel(cfg)
    model.load_state_dict(state_dict, strict=False)
    with torch.no_grad():
        return model.eval()(idx)


def traced_generate_cached(cfg, state_dict, idx, max_new_tokens, eos_id=None):
    from .generate import generate
    from .model import GPTModel
    model = GPTModel(cfg)
    model.load_state_dict(state_dict, strict=False)
    tokens = generate(model.eval(), idx, max_new_tokens, context_size=idx.size(1) + max_new_tokens)
    layers = model.cfg.n_layers
    return {"tokens": tokens, "fed": [idx.size(1)] * layers + [1] * (layers * (max_new_tokens - 1))}
"""


@BOTH
def test_exercise_12s_drivers_are_the_graders(tmp_path, mode):
    solutions = ROOT / "solutions"
    stubs = (EXERCISES / "kv_cache.py").read_text()
    honest = tree(tmp_path, "honest", {"kv_cache": stubs}, base=solutions)
    hostile = tree(tmp_path, "hostile", {"kv_cache": stubs + FAKE_DRIVERS}, base=solutions)
    files = graded_files("12")
    a = grade(hostile, tmp_path, files, mode=mode)
    b = grade(honest, tmp_path, files, "--seed", seed_of(a), mode=mode)
    no_gain(a, b, ("12",))
    assert a.exercise("12")["score"] == 0, a.explain()


# ------------------------------------------------------------------------ the portable path


def test_where_fork_is_not_used_each_exercise_gets_a_fresh_process(tmp_path):
    """macOS and Windows start one process per exercise (no fork, no sandbox): forced here."""
    exits = tree(tmp_path, "exits", {"layers": "import os\nos._exit(3)\n"}, base=ROOT / "solutions")
    g = grade(exits, tmp_path, graded_files("01", "02"), mode="no-sandbox", env={"KATA_WORKER_START": "spawn"})
    assert g.status("01") == "passed", g.explain()
    out = g.exercise("02")["output"]  # refused by the allow-list (os._exit), or contained when it ran
    assert refused(g, "02") or (g.status("02") == "error" and "exited with code 3" in out), g.explain()


def test_a_grade_leaves_nothing_behind(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"TMPDIR": str(scratch)}
    litter = tree(tmp_path, "litter", {"layers": "import os, tempfile\nopen(os.path.join(tempfile.gettempdir(), 'litter'), 'w')\n"
                                                  "os.makedirs(os.path.expanduser('~/.cache/litter'), exist_ok=True)\n"
                                                  + (ROOT / "solutions" / "layers.py").read_text()}, base=ROOT / "solutions")
    for mode in ["no-sandbox"] + (["sandbox"] if BOX is not None else []):
        g = grade(litter, tmp_path, graded_files("02"), mode=mode, env=env)
        assert g.status("02") == "passed" or refused(g, "02"), g.explain()  # refused: it writes outside the tree
        assert not list(scratch.iterdir()), f"{mode}: left {sorted(p.name for p in scratch.iterdir())}"


def test_only_package_directories_count_as_the_environment(tmp_path, monkeypatch):
    """A script's own directory, the working directory or a PYTHONPATH entry on sys.path is
    anybody's: the sandbox does not show it and the environment's record does not watch it."""
    from harness import environment

    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not any(p.is_relative_to(tmp_path) for p in sandbox.python_dirs())
    assert not any(Path(p).is_relative_to(tmp_path) for p in environment.signature())
    assert any("site-packages" in p for p in environment.signature())


@BOTH
def test_nothing_written_in_one_exercise_reaches_the_next(tmp_path, mode):
    note = "import os, tempfile\nopen(os.path.join(tempfile.gettempdir(), 'kata-note'), 'w').write('from 01')\n"
    check = ("import os, tempfile\nif os.path.exists(os.path.join(tempfile.gettempdir(), 'kata-note')):\n"
             "    raise RuntimeError('a note from an earlier exercise')\n")
    solutions = ROOT / "solutions"
    notes = tree(tmp_path, "notes", {"attention": note + (solutions / "attention.py").read_text(),
                                     "layers": check + (solutions / "layers.py").read_text()}, base=solutions)
    g = grade(notes, tmp_path, graded_files("01", "02"), mode=mode)
    # the allow-list refuses writes outside the tree; without it, the sandbox keeps them apart
    assert all(g.status(e) == "passed" or refused(g, e) for e in ("01", "02")), g.explain()
