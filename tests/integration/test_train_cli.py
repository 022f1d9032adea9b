"""Ungraded: the tree's training and sampling entry points, end to end, as `nox -s train` runs them.

A tiny model trains for a few steps on the first 20,000 characters of the default corpus (a BPE
of 300 tokens trained on them): the run writes its checkpoint and its loss curve, `--resume`
continues it, `sample.py` completes a prompt from the checkpoint alone, and two processes
train it data-parallel under torch.distributed.run (gloo, CPU). Bad input is a one-line error
that leaves nothing behind. Each run is a subprocess of the tree's own `train.py` (this process
never imports the tree; it reads the checkpoint as data, with `weights_only=True`). Skipped while
an exercise the chain needs is a stub. About 20 seconds on a 2-core machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("tqdm", reason="train.py needs tqdm (`nox -s tests` installs the train extra)")
pytest.importorskip("matplotlib", reason="train.py needs matplotlib (`nox -s tests` installs the train extra)")

# Runs `<tree>.<module>` as __main__ for any directory, whatever its name (as `python -m` would
# for solutions/ or exercises/): the directory is imported as the package `kata_tree`.
LAUNCHER = """\
import importlib.machinery, importlib.util, runpy, sys
from pathlib import Path
tree, module = Path(sys.argv[1]), sys.argv[2]
del sys.argv[1:3]
init = tree / "__init__.py"
if init.exists():
    spec = importlib.util.spec_from_file_location("kata_tree", init, submodule_search_locations=[str(tree)])
else:
    spec = importlib.machinery.ModuleSpec("kata_tree", None, is_package=True)
    spec.submodule_search_locations = [str(tree)]
package = importlib.util.module_from_spec(spec)
sys.modules["kata_tree"] = package
if init.exists():
    spec.loader.exec_module(package)
runpy.run_module("kata_tree." + module, run_name="__main__", alter_sys=True)
"""
TINY = ["--max-chars", "20000", "--vocab-size", "300", "--context-length", "32", "--emb-dim", "32", "--n-layers", "2",
        "--n-heads", "2", "--batch-size", "8", "--warmup", "2", "--eval-every", "5", "--eval-batches", "2",
        "--sample-tokens", "8", "--save-every", "5", "--prompt", "The "]
TIMEOUT = 120
PORT_CLASH = ("EADDRINUSE", "address already in use", "Address already in use")


class Runner:
    def __init__(self, tree: Path, workdir: Path):
        self.tree, self.workdir = tree, workdir
        self.launcher = workdir / "launch_tree.py"
        self.launcher.write_text(LAUNCHER)
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONIOENCODING": "utf-8"}
        self.env.pop("WORLD_SIZE", None)

    def __call__(self, module: str, *args: str, nproc: int | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(self.launcher), str(self.tree), module, *args]
        if nproc:
            cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
        for attempt in range(3):
            res = subprocess.run(cmd, cwd=self.workdir, env=self.env, capture_output=True, text=True, encoding="utf-8",
                                 errors="replace", timeout=TIMEOUT)
            # torchrun picks a free port, which another process may take before the workers bind it
            if not (nproc and res.returncode and any(s in res.stderr for s in PORT_CLASH)):
                break
        return res


def skip_if_unfinished(res: subprocess.CompletedProcess) -> None:
    """Skip, naming the stub, when the run stopped on an exercise that is not written yet."""
    stub = [line for line in res.stderr.splitlines() if "still a stub" in line or "NotImplementedError" in line]
    if res.returncode and stub:
        pytest.skip(f"the chain is not finished: {stub[-1].strip()}")


def ok(res: subprocess.CompletedProcess, what: str) -> str:
    skip_if_unfinished(res)
    assert res.returncode == 0, f"{what} failed (exit status {res.returncode}):\n{res.stderr[-3000:]}"
    return res.stdout


def read_checkpoint(path: Path) -> dict:
    assert path.is_file(), f"no checkpoint at {path}"
    return torch.load(path, map_location="cpu", weights_only=True)  # plain data only, or this raises


@pytest.fixture(scope="module")
def runner(kata, tmp_path_factory) -> Runner:
    return Runner(kata.tree, tmp_path_factory.mktemp("train_cli"))


@pytest.fixture(scope="module")
def first_run(runner) -> Path:
    out = runner.workdir / "run"
    ok(runner("train", *TINY, "--steps", "10", "--out", str(out)), "a tiny training run")
    return out


def test_a_tiny_run_writes_its_checkpoint_and_loss_curve(first_run):
    png = first_run / "loss.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "no loss curve (loss.png) in the run's --out"
    state = read_checkpoint(first_run / "ckpt.pt")
    extra = state["extra"]
    assert state["step"] == 10
    cfg = extra["config"]
    assert (cfg["context_length"], cfg["emb_dim"], cfg["n_layers"], cfg["n_heads"]) == (32, 32, 2, 2)
    tok = extra["tokenizer"]
    assert tok["kind"] == "bpe" and len(tok["vocab"]) == cfg["vocab_size"] <= 300
    assert [t.encode("latin-1") for t in tok["vocab"][:256]] == [bytes([i]) for i in range(256)]
    assert len(tok["merges"]) == len(tok["vocab"]) - 256
    assert state["model"]["tok_emb.weight"].shape == (cfg["vocab_size"], 32)
    assert extra["val_loss"] is not None and extra["val_loss"] < torch.log(torch.tensor(float(cfg["vocab_size"]))).item()
    assert len(extra["history"]["loss"]) == 10 and [e["step"] for e in extra["evals"]] == [0, 5, 10]


def test_resume_continues_the_run(runner, first_run):
    out = ok(runner("train", "--resume", str(first_run / "ckpt.pt"), "--steps", "14"), "--resume")
    assert "resumed from" in out and "step 10" in out, out
    state = read_checkpoint(first_run / "ckpt.pt")  # the resumed run writes to the same --out
    assert state["step"] == 14
    history = state["extra"]["history"]
    assert history["step"] == list(range(1, 15)), "the resumed run's history should go on from the first run's"
    assert state["data_state"] is not None


def test_sample_completes_a_prompt_from_the_checkpoint(runner, first_run):
    out = ok(runner("sample", str(first_run / "ckpt.pt"), "The ", "--max-new-tokens", "12", "--seed", "3"), "sample.py")
    assert out.startswith("The ") and len(out.strip()) > len("The"), f"sample.py printed {out!r}"


def test_the_llama_architecture_trains_resumes_and_samples(runner):
    """`--arch llama`: the modern model (19-25) in the same loop, with the GPT's parameter count."""
    out = runner.workdir / "llama"
    stdout = ok(runner("train", *TINY, "--arch", "llama", "--steps", "6", "--eval-every", "3", "--out", str(out)), "--arch llama")
    assert "llama: 2 layers, 2 heads sharing 1 kv heads" in stdout, stdout
    state = read_checkpoint(out / "ckpt.pt")
    extra, cfg = state["extra"], state["extra"]["config"]
    assert extra["arch"] == "llama" and (cfg["n_kv_heads"], cfg["emb_dim"], cfg["n_layers"]) == (1, 32, 2)
    assert "trf_blocks.0.ff.gate.weight" in state["model"] and not any("pos_emb" in k for k in state["model"])
    gpt = read_checkpoint(runner.workdir / "run" / "ckpt.pt") if (runner.workdir / "run" / "ckpt.pt").is_file() else None
    if gpt is not None and gpt["extra"]["config"]["vocab_size"] == cfg["vocab_size"]:
        counts = [sum(t.numel() for k, t in s["model"].items() if k != "out_head.weight") for s in (gpt, state)]
        assert abs(counts[0] - counts[1]) <= 3 * 32 * 2, f"the default --hidden-dim should match the GPT's parameter count: {counts}"
    assert extra["val_loss"] < torch.log(torch.tensor(float(cfg["vocab_size"]))).item()
    resumed = ok(runner("train", "--resume", str(out / "ckpt.pt"), "--steps", "8"), "--resume of a llama run")
    assert "resumed from" in resumed and "llama:" in resumed, resumed
    said = ok(runner("sample", str(out / "ckpt.pt"), "The ", "--max-new-tokens", "8"), "sample.py on a llama checkpoint")
    assert said.startswith("The "), said


def test_the_fast_path_trains_resumes_and_samples(runner):
    """`--fused`: FastGPT (30) with fused AdamW in the same loop; its checkpoint keeps the padded
    vocabulary and the switch, so resuming and sampling build the fast model again."""
    out = runner.workdir / "fused"
    ok(runner("train", *TINY, "--fused", "--steps", "6", "--eval-every", "3", "--out", str(out)), "--fused")
    state = read_checkpoint(out / "ckpt.pt")
    cfg = state["extra"]["config"]
    padded = -(-cfg["vocab_size"] // 64) * 64
    assert cfg["fused"] is True and state["model"]["tok_emb.weight"].shape[0] == padded, (cfg, state["model"]["tok_emb.weight"].shape)
    assert state["extra"]["val_loss"] < torch.log(torch.tensor(float(cfg["vocab_size"]))).item()
    resumed = ok(runner("train", "--resume", str(out / "ckpt.pt"), "--steps", "8"), "--resume of a --fused run")
    assert "resumed from" in resumed, resumed
    assert read_checkpoint(out / "ckpt.pt")["step"] == 8
    said = ok(runner("sample", str(out / "ckpt.pt"), "The ", "--max-new-tokens", "8"), "sample.py on a --fused checkpoint")
    assert said.startswith("The "), said


def test_two_processes_train_data_parallel(runner):
    out = runner.workdir / "ddp"
    res = runner("train", *TINY, "--steps", "4", "--eval-every", "4", "--out", str(out), nproc=2)
    stdout = ok(res, "a 2-process run under torch.distributed.run")
    assert "2 process(es)" in stdout, stdout
    assert stdout.count("step     4") == 1, "only rank 0 should log"
    assert read_checkpoint(out / "ckpt.pt")["step"] == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "no-such-file.txt"], "no such file"),
        (["--data", "short.txt"], "too short"),
        (["--tokenizer", "gpt2"], "--ranks"),
        (["--arch", "llama", "--dropout", "0.1"], "no dropout"),
        (["--arch", "llama", "--n-kv-heads", "3"], "must divide"),
        (["--n-kv-heads", "1"], "--arch llama"),
        (["--arch", "llama", "--fused"], "--fused"),
    ],
    ids=["missing-data", "text-too-short", "gpt2-without-ranks", "llama-with-dropout", "llama-kv-heads", "kv-heads-without-llama",
         "llama-fused"],
)
def test_bad_input_is_a_one_line_error(runner, args, message):
    (runner.workdir / "short.txt").write_text("Far too short to train on.\n", encoding="utf-8")
    out = runner.workdir / "bad"
    res = runner("train", *TINY, "--steps", "2", "--out", str(out), *args)
    skip_if_unfinished(res)  # the text is tokenized before its length is known
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, f"expected exit status 2 (a usage error), got {res.returncode}:\n{res.stderr[-2000:]}"
    assert len(lines) == 1 and "error:" in lines[0] and message in lines[0], f"expected one line naming {message!r}, got:\n{res.stderr}"
    assert not out.exists(), "a run that stops on bad input should write nothing"
