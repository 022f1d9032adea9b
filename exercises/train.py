"""Train a small GPT from scratch, end to end (glue, not an exercise).

    python -m <tree>.train                          # or: nox -s train
    python -m <tree>.train --data my.txt --steps 2000 --emb-dim 256 --n-layers 6
    python -m <tree>.train --resume out/train/ckpt.pt --steps 1500     # go on, to step 1500
    python -m torch.distributed.run --standalone --nproc_per_node 2 -m <tree>.train   # nox -s train -- --nproc 2
    python -m <tree>.sample out/train/ckpt.pt "The "                    # or: nox -s sample -- "The "

``<tree>`` is ``exercises`` (yours, once its exercises are done) or ``solutions`` (the reference,
where it is present); ``nox -s train`` and ``nox -s sample`` take it as ``-- --impl <tree>``
(default: solutions).

Everything the course built meets here: the text is tokenized with a byte-level BPE that
``bpe.train_bpe`` (04) learns on the training text itself, wrapped by ``tokenizer.Tokenizer``
(05) (or GPT-2's own ranks with ``--tokenizer gpt2 --ranks FILE``); batches come from
``data.get_batch`` (06); the model is ``model.GPTModel`` (09); each optimizer step sets the
learning rate of ``schedule.learning_rate`` (14) and runs ``training.train_step`` (15: gradient
accumulation, mixed precision, clipping), with ``--grad-checkpointing`` through
``training.run_blocks`` (16); losses are measured with ``loss.calc_loss_loader`` (13), samples drawn
with ``generate.generate`` (10), and the run is saved and resumed with ``resume`` (17). Under
``torchrun`` it trains data-parallel with ``distributed`` (18).

``run`` is the program as a sequence of named steps, in the order nanoGPT's ``train.py`` reads: the
data (tokenizer, ids, train/validation split), the model, the optimizer, the run's state (new, or
from ``--resume``), then ``train``, the loop, which calls ``evaluate`` and ``checkpoint`` (the
checkpoint and the plot). What the steps share is passed to them: ``Setup``, the parts made before
the loop, and ``RunState``, what the loop changes and the checkpoint keeps.

The default corpus is offline and ships with Python: the text of CPython's ``pydoc_data.topics``
(the help pages of the language reference, about 465 KB), the topics joined in sorted order. The
first 90% of its tokens are for training, the last 10% for validation.

Batches: ``data.get_batch`` draws random windows (any start) with a seeded ``torch.Generator``.
That choice (rather than ``create_dataloader``) keeps three things simple: the generator's state
is the whole position of the data stream, so it goes into the checkpoint and ``--resume`` draws
exactly the batches an uninterrupted run would have drawn; under ``torchrun`` every process
draws the same global batch and keeps its own rows (``distributed.shard``), with no sampler to
keep in step; and on a small corpus, windows at every offset serve the model more varied
examples than a fixed cut does. The loss estimates use a fixed set of batches (drawn once, from
generators of their own), so that successive estimates are comparable.

Output (rank 0 only, under ``--out``, default ``out/train``): ``ckpt.pt`` (every ``--save-every``
steps and at the end; it loads with ``torch.load(..., weights_only=True)`` and its ``extra``
holds the model's configuration and the tokenizer, so ``sample.py`` needs nothing else) and
``loss.png``, the loss curves.

``--resume PATH`` continues a run: the model, the optimizer, the step (and with it the learning
rate schedule), the data stream and the random states come from the checkpoint, and so do the
options not given again on the command line (give ``--steps`` to train longer: the cosine then
stretches to the new end).

The defaults are tuned for about 8 minutes on 2 CPU cores: 2.0M parameters (4 layers of 192
features, 6 heads, context 128, BPE of 1,024 tokens), batches of 16 x 128 tokens, 1,100 steps
(2.25M tokens, about 16 passes over the 143,540 training tokens), AdamW at 3e-3 with 50 steps of
warmup and a cosine down to 3e-4. The corpus is small, so the run is limited by data more than
by compute: without dropout a model of this size memorizes it (validation loss rises again after
about 10 passes), hence dropout 0.2. Measured on a 2-core AMD EPYC, lightly loaded by other work:
8 min 13 s in all, 4,900 tokens/s, validation loss 3.61 (perplexity 37) from 6.95. A shorter
run warms up for a tenth of its steps when that is fewer than 50 (``--steps 20``: 2). On a CPU
with bfloat16 instructions ``--amp bf16`` is about 1.6x faster (``nox -s bench -- training``).

Threads: torch's threads wait on each other, so a thread on a core that other work holds slows
them all. Before the model is built, ``threads.use_threads`` takes one thread per core that is at
least half idle at that moment (at least one), unless ``--threads N`` or ``OMP_NUM_THREADS`` says
how many, and the run's first line (on stderr) says which and how to change it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import shlex
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed

from .bpe import train_bpe
from .config import GPTConfig, ModernConfig
from .data import get_batch
from .device import pick_device
from .distributed import DistInfo, cleanup, mean_over_processes, setup_distributed, shard, wrap_model
from .fast import FastGPT
from .generate import generate
from .loss import calc_loss_loader, perplexity
from .model import GPTModel
from .modern import ModernModel
from .resume import load_checkpoint, save_checkpoint
from .schedule import learning_rate
from .threads import add_threads_option, use_threads
from .tokenizer import Tokenizer
from .training import train_step, use_gradient_checkpointing

DEFAULT_OUT = Path("out") / "train"
CHECKPOINT = "ckpt.pt"
PLOT = "loss.png"
# The options of the model's shape: a resumed run takes them from the checkpoint.
MODEL_OPTIONS = ("arch", "context_length", "emb_dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "dropout", "vocab_size",
                 "tokenizer")
DEFAULT_DROPOUT = 0.2  # GPT-2's; the modern model has none


# --- the corpus and the tokenizer -------------------------------------------------------------

def default_corpus() -> str:
    """The text of CPython's ``pydoc_data.topics``, the topics in sorted order, separated by a blank line."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def tokenizer_state(vocab: dict[int, bytes] | None = None, merges: list[tuple[bytes, bytes]] | None = None,
                    ranks: str | None = None) -> dict:
    """What rebuilds a tokenizer, in plain data that ``torch.load(weights_only=True)`` reads.

    A trained BPE: ``{"kind": "bpe", "vocab": [token of id 0, 1, ...], "merges": [[a, b], ...]}``
    with every byte string as a latin-1 ``str`` (one character per byte), and, once ``finetune.py``
    has added an end-of-text token, ``"special_tokens": ["<|endoftext|>"]`` (tokens of the vocab). GPT-2's:
    ``{"kind": "gpt2", "ranks": path}`` (the ranks file is not copied, only where it was).
    """
    if vocab is None:
        return {"kind": "gpt2", "ranks": str(ranks) if ranks else None}
    assert sorted(vocab) == list(range(len(vocab))), "train_bpe numbers its tokens 0 .. len(vocab) - 1"
    return {
        "kind": "bpe",
        "vocab": [vocab[i].decode("latin-1") for i in range(len(vocab))],
        "merges": [[a.decode("latin-1"), b.decode("latin-1")] for a, b in merges],
    }


def tokenizer_from_state(state: dict, ranks: str | os.PathLike | None = None) -> Tokenizer:
    """The tokenizer ``tokenizer_state`` describes; GPT-2's needs its ranks file (``ranks``, else
    the path recorded at training time)."""
    if state["kind"] == "bpe":
        vocab = {i: token.encode("latin-1") for i, token in enumerate(state["vocab"])}
        merges = [(a.encode("latin-1"), b.encode("latin-1")) for a, b in state["merges"]]
        return Tokenizer.from_merges(vocab, merges, state.get("special_tokens", []))
    if state["kind"] == "gpt2":
        path = ranks or state.get("ranks")
        if not path or not Path(path).is_file():
            raise FileNotFoundError("this model uses GPT-2's tokenizer: pass --ranks FILE, GPT-2's ranks "
                                    "(gpt2.tiktoken; `python reference/gpt2_encoding.py` prints where they are)")
        return Tokenizer.from_gpt2(path)
    raise ValueError(f"unknown tokenizer kind {state['kind']!r}")


def vocab_size_of(tok: Tokenizer) -> int:
    return max(tok.decoder) + 1


def read_extra(path: str | os.PathLike) -> dict:
    """The ``extra`` dict of a checkpoint (configuration, tokenizer, ...), read with ``weights_only=True``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not isinstance(state.get("extra"), dict) or "config" not in state["extra"]:
        raise ValueError(f"{path} is not a checkpoint written by train.py (no model configuration in its extra)")
    return state["extra"]


# --- options ----------------------------------------------------------------------------------

class OneLineErrors(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (without the long usage), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def stopped_at_stub(prog: str, error: NotImplementedError) -> SystemExit:
    """The one-line error of a script (train, finetune, chat) that met an exercise of its tree
    that is still a stub: which exercise, and where to see what is left."""
    reference = Path(__file__).resolve().parent.parent / "solutions"
    also = "; `--impl solutions` runs the reference" if reference.is_dir() else ""
    return SystemExit(f"{prog}: error: this needs an exercise that is still a stub: {error} (`nox -s grade` shows what is left{also})")


def run_script(parser: argparse.ArgumentParser, run, argv: list[str] | None) -> None:
    """What the ``main`` of finetune, chat and reason does: parse ``argv`` and call ``run(args,
    parser)``; a stub of the exercises/ tree met on the way, not finished yet, is a one-line error
    that says which exercise (``stopped_at_stub``)."""
    args = parser.parse_args(argv)
    try:
        run(args, parser)
    except NotImplementedError as e:
        raise stopped_at_stub(parser.prog, e) from None


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog=f"python -m {__package__ or 'solutions'}.train",
        description="Train a small GPT from scratch on a text (default: the text of Python's pydoc topics).",
        epilog="Run through nox (`nox -s train -- OPTIONS`), two more options: --impl solutions|exercises (the tree "
               "that trains) and --nproc N (N processes on this machine, data-parallel, under torchrun).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = p.add_argument_group("data and tokenizer")
    data.add_argument("--data", help="a UTF-8 text file to train on (default: CPython's pydoc_data.topics)")
    data.add_argument("--max-chars", type=int, help="use only the first N characters of the text (quick runs)")
    data.add_argument("--tokenizer", choices=["bpe", "gpt2"], default="bpe",
                      help="bpe: a byte-level BPE trained on the training text with bpe.train_bpe; gpt2: GPT-2's ranks")
    data.add_argument("--vocab-size", type=int, default=1024, help="the BPE's vocabulary size (--tokenizer bpe)")
    data.add_argument("--ranks", help="GPT-2's ranks, gpt2.tiktoken (--tokenizer gpt2; nox -s train finds them)")
    model = p.add_argument_group("model")
    model.add_argument("--arch", choices=["gpt2", "llama"], default="gpt2",
                       help="gpt2: GPTModel (09); llama: ModernModel (23): RMSNorm, RoPE, grouped-query attention, SwiGLU, no dropout")
    model.add_argument("--context-length", type=int, default=128)
    model.add_argument("--emb-dim", type=int, default=192)
    model.add_argument("--n-layers", type=int, default=4)
    model.add_argument("--n-heads", type=int, default=6)
    model.add_argument("--n-kv-heads", type=int, help="--arch llama: key/value heads (default: a third of --n-heads, at least 1)")
    model.add_argument("--hidden-dim", type=int,
                       help="--arch llama: SwiGLU's width (default: the one that gives the GPT's parameter count)")
    model.add_argument("--dropout", type=float, help=f"--arch gpt2 only (default {DEFAULT_DROPOUT})")
    model.add_argument("--grad-checkpointing", action="store_true", help="recompute the blocks' activations in the backward pass")
    model.add_argument("--fused", action="store_true",
                       help="--arch gpt2: the fast path, FastGPT (30: PyTorch's fused kernels, the vocabulary padded to 64), and fused AdamW")
    model.add_argument("--compile", action="store_true", help="torch.compile the model (needs a C++ compiler on a CPU; slow to start)")
    opt = p.add_argument_group("optimization")
    opt.add_argument("--steps", type=int, default=1100, help="optimizer steps in all (a resumed run goes on to this step)")
    opt.add_argument("--batch-size", type=int, default=16, help="sequences per micro-batch, over all processes")
    opt.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    opt.add_argument("--lr", type=float, default=3e-3, help="the peak learning rate")
    opt.add_argument("--min-lr", type=float, default=3e-4, help="the learning rate at the end of the cosine")
    opt.add_argument("--warmup", type=int,
                     help="steps of linear warmup (default: 50, or a tenth of --steps when that is fewer)")
    opt.add_argument("--weight-decay", type=float, default=0.1, help="AdamW's, on the 2-D weights only")
    opt.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradients' global norm to this (0: no clipping)")
    opt.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                     help="mixed precision: bf16 (CPU or GPU) or fp16 (CUDA, with a GradScaler)")
    run = p.add_argument_group("run")
    run.add_argument("--out", default=str(DEFAULT_OUT), help="where the checkpoint and the plot go")
    run.add_argument("--resume", help="a checkpoint of an earlier run to continue")
    run.add_argument("--eval-every", type=int, default=100, help="steps between loss estimates and samples")
    run.add_argument("--eval-batches", type=int, default=8, help="batches per loss estimate")
    run.add_argument("--save-every", type=int, default=400, help="steps between checkpoints (0: only at the end)")
    run.add_argument("--prompt", default='The "for" statement', help="the prompt of the samples")
    run.add_argument("--sample-tokens", type=int, default=48, help="tokens per sample (0: no samples)")
    run.add_argument("--seed", type=int, default=1337)
    run.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    add_threads_option(run)
    return p


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser, dict | None]:
    """The options; for ``--resume``, those not given again come from the checkpoint."""
    parser = build_parser()
    args = parser.parse_args(argv)
    extra = None
    if args.resume:
        if not Path(args.resume).is_file():
            parser.error(f"--resume {args.resume}: no such file")
        try:
            extra = read_extra(args.resume)
        except Exception as e:  # not a checkpoint, or not one of ours
            parser.error(f"--resume {args.resume}: {e}".splitlines()[0])
        known = {a.dest for a in parser._actions}
        saved = {k: v for k, v in extra.get("args", {}).items() if k in known and k not in ("resume", "threads")}
        parser.set_defaults(**saved)
        args = parser.parse_args(argv)
        changed = [k for k in MODEL_OPTIONS if k in saved and getattr(args, k) != saved[k]]
        if changed:
            parser.error(f"--resume: the checkpoint's model has {', '.join(f'{k}={saved[k]!r}' for k in changed)}; "
                         "leave out the model options (or start a new run in another --out)")
    check_args(parser, args)
    return args, parser, extra


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    positive = ["steps", "batch_size", "grad_accum", "context_length", "emb_dim", "n_layers", "n_heads", "eval_every", "eval_batches"]
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.emb_dim % args.n_heads:
        parser.error(f"--emb-dim {args.emb_dim} is not divisible by --n-heads {args.n_heads}")
    if args.warmup is None:
        args.warmup = default_warmup(args.steps)
    if not 0 <= args.warmup <= args.steps:
        parser.error(f"--warmup {args.warmup} must be between 0 and --steps {args.steps} (leave it out for "
                     f"{default_warmup(args.steps)}, the default for {args.steps} steps)")
    if not 0 <= args.min_lr <= args.lr:
        parser.error(f"--min-lr {args.min_lr} must be between 0 and --lr {args.lr}")
    if args.arch == "llama":
        if args.dropout:
            parser.error(f"--dropout {args.dropout}: the llama architecture has no dropout (leave the option out)")
        if args.fused:
            parser.error("--fused is the fast path of --arch gpt2 (FastGPT, exercise 30); the llama architecture has none")
        args.n_kv_heads = args.n_kv_heads or max(1, args.n_heads // 3)
        if args.n_kv_heads < 1 or args.n_heads % args.n_kv_heads:
            parser.error(f"--n-kv-heads {args.n_kv_heads} must divide --n-heads {args.n_heads}")
        if (args.emb_dim // args.n_heads) % 2:
            parser.error(f"--emb-dim {args.emb_dim} / --n-heads {args.n_heads} is odd: RoPE rotates features in pairs")
        args.hidden_dim = args.hidden_dim or matched_hidden_dim(args)
        if args.hidden_dim < 1:
            parser.error(f"--hidden-dim must be at least 1, got {args.hidden_dim}")
    else:
        if args.n_kv_heads is not None or args.hidden_dim is not None:
            parser.error("--n-kv-heads and --hidden-dim are options of --arch llama")
        args.dropout = DEFAULT_DROPOUT if args.dropout is None else args.dropout
    if not 0 <= (args.dropout or 0.0) < 1:
        parser.error(f"--dropout {args.dropout} must be in [0, 1)")
    if args.data and not Path(args.data).is_file():
        parser.error(f"--data {args.data}: no such file")
    if args.tokenizer == "gpt2":
        if not args.ranks:
            parser.error("--tokenizer gpt2 needs --ranks FILE, GPT-2's ranks (gpt2.tiktoken); `nox -s train` finds them")
        if not Path(args.ranks).is_file():
            parser.error(f"--ranks {args.ranks}: no such file")
    if args.tokenizer == "bpe" and args.vocab_size < 257:
        parser.error(f"--vocab-size {args.vocab_size}: a byte-level BPE needs more than the 256 bytes")
    if args.amp == "fp16" and args.device != "cuda" and not (args.device == "auto" and torch.cuda.is_available()):
        parser.error("--amp fp16 needs CUDA (it needs a GradScaler); on a CPU or MPS use --amp bf16")
    if args.max_chars is not None and args.max_chars < 1:
        parser.error(f"--max-chars must be at least 1, got {args.max_chars}")


def default_warmup(steps: int) -> int:
    """The warmup of a run of ``steps`` steps when ``--warmup`` is not given: 50 steps, or a tenth of
    the run when that is fewer (a short run, ``--steps 20``, warms up for 2)."""
    return min(50, steps // 10)


def read_text(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    if args.data:
        try:
            text = Path(args.data).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            parser.error(f"--data {args.data}: not UTF-8 text ({e.reason} at byte {e.start})")
        except OSError as e:
            parser.error(f"--data {args.data}: {e.strerror}")
    else:
        text = default_corpus()
    return text[: args.max_chars] if args.max_chars else text


# --- the program ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    wall_start = time.perf_counter()
    args, parser, extra = parse_args(argv)
    text = read_text(parser, args)

    # Where to run: under torchrun (WORLD_SIZE set) through distributed.py, else on --device.
    if "WORLD_SIZE" in os.environ:
        if args.device == "mps":
            parser.error("--device mps: data-parallel training runs on CPUs (gloo) or CUDA GPUs (nccl)")
        if args.batch_size % int(os.environ["WORLD_SIZE"]):
            parser.error(f"--batch-size {args.batch_size} must be a multiple of the {os.environ['WORLD_SIZE']} processes")
    try:
        if "WORLD_SIZE" in os.environ:
            info = setup_distributed(args.device)
        else:
            try:
                info = DistInfo(0, 0, 1, pick_device(args.device))
            except ValueError as e:
                parser.error(str(e))
        run(args, parser, extra, text, info, wall_start)
    except NotImplementedError as e:  # the exercises/ tree, not finished yet: say which exercise, in one line
        raise stopped_at_stub(parser.prog, e) from None
    finally:
        cleanup()


def run(args, parser, extra, text, info: DistInfo, wall_start: float) -> None:
    """The training program, step by step; the steps are defined below, grouped in the order they come."""
    torch.manual_seed(args.seed)  # the initial weights (and, on one process, the dropout masks)

    data = prepare_data(args, parser, extra, text)
    # the first line, once the options and the text are known good: the threads, and how to change them
    use_threads(args.threads, announce=info.is_main)
    raw_model = build_model(args, extra, data.tok, info.device)
    optimizer = make_optimizer(raw_model, args.lr, args.weight_decay, info.device, fused=isinstance(raw_model, FastGPT))
    # fp16's small gradients underflow to zero unless the loss is scaled up first
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" and info.device.type == "cuda" else None
    data_gen = torch.Generator().manual_seed(args.seed)  # the data stream: its state is the position in it
    state = RunState()
    if args.resume:
        state = resume_from_checkpoint(args.resume, extra, raw_model, optimizer, scaler, data_gen, info.device)
    if info.world_size > 1:  # each process its own dropout masks (the weights come from rank 0)
        torch.manual_seed(args.seed + 1_000_003 * state.step + info.rank)
    model = wrap_model(torch.compile(raw_model) if args.compile else raw_model, info)
    val_batches, train_eval_batches = estimate_batches(args, data, raw_model.cfg.context_length)
    setup = Setup(args, info, data, raw_model, model, optimizer, scaler, data_gen, val_batches, train_eval_batches)

    log_start(setup, state, len(text))
    if state.step >= args.steps:
        log(info, f"nothing to do: the run is at step {state.step} and --steps is {args.steps} (give a larger --steps to go on)")
        return
    train(setup, state)
    finish(setup, state, wall_start)


# --- what the steps share ---------------------------------------------------------------------

@dataclasses.dataclass
class Data:
    """The text as token ids, split 90/10, and the tokenizer that made them (``tok_state`` rebuilds it)."""
    tok: Tokenizer
    tok_state: dict
    ids: np.ndarray
    train_ids: np.ndarray
    val_ids: np.ndarray
    seconds: float  # making the tokenizer and encoding the text


@dataclasses.dataclass
class RunState:
    """What changes as the run goes on. The checkpoint holds all but the ``start_`` fields;
    ``--resume`` takes back the first four (the latest estimates are each session's own)."""
    step: int = 0
    history: dict = dataclasses.field(default_factory=lambda: {"step": [], "loss": [], "lr": []})  # every step's
    evals: list = dataclasses.field(default_factory=list)  # every loss estimate's: step, tokens, train_loss, val_loss
    train_seconds: float = 0.0  # in optimizer steps only, over every session of the run
    train_loss: float | None = None  # the latest estimates (None until this session makes one)
    val_loss: float | None = None
    start_step: int = 0  # where this session's training began: tokens/s counts from there
    start_seconds: float = 0.0

    def tokens_per_second(self, tokens_per_step: int) -> float:
        return (self.step - self.start_step) * tokens_per_step / max(self.train_seconds - self.start_seconds, 1e-9)


@dataclasses.dataclass
class Setup:
    """The run's parts, made before the loop; the loop's steps take them as their first argument.
    The parts stay, their contents move on (the weights, the optimizer's state, the data stream)."""
    args: argparse.Namespace
    info: DistInfo
    data: Data
    raw_model: GPTModel | ModernModel  # the module itself: what is saved, evaluated and sampled
    model: torch.nn.Module  # what trains: raw_model, compiled (--compile), wrapped for data parallelism (torchrun)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    data_gen: torch.Generator
    val_batches: list
    train_eval_batches: list

    @property
    def cfg(self) -> GPTConfig | ModernConfig:
        return self.raw_model.cfg

    @property
    def tokens_per_step(self) -> int:
        return self.args.batch_size * self.args.grad_accum * self.cfg.context_length

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.args.amp]

    @property
    def out(self) -> Path:
        return Path(self.args.out)


def log(info: DistInfo, message: str) -> None:
    if info.is_main:
        from tqdm import tqdm

        tqdm.write(message)


# --- the data ---------------------------------------------------------------------------------

def prepare_data(args, parser: argparse.ArgumentParser, extra: dict | None, text: str) -> Data:
    """The tokenizer, the text's token ids, and their split: the first 90% to train on, the rest to validate."""
    start = time.perf_counter()
    tok, tok_state = make_tokenizer(args, parser, extra, text)
    ids = np.array(tok.encode(text, allowed_special="all"), dtype=np.int64)
    seconds = time.perf_counter() - start

    # Split by tokens; each part must hold at least one window and its target.
    n_train = int(0.9 * len(ids))
    train_ids, val_ids = ids[:n_train], ids[n_train:]
    need = args.context_length + 1
    if len(val_ids) < need:
        parser.error(f"the text is too short: {len(ids)} tokens, so {len(val_ids)} for validation (the last 10%), "
                     f"but --context-length {args.context_length} needs {need} in each part; give a longer text "
                     f"(at least {math.ceil(need / 0.1)} tokens) or a shorter --context-length")
    return Data(tok, tok_state, ids, train_ids, val_ids, seconds)


def make_tokenizer(args, parser: argparse.ArgumentParser, extra: dict | None, text: str) -> tuple[Tokenizer, dict]:
    """The tokenizer and its state: from the checkpoint when resuming, else trained (BPE) or read (GPT-2)."""
    if extra is not None:
        tok_state = extra["tokenizer"]
        try:
            tok = tokenizer_from_state(tok_state, args.ranks)
        except (FileNotFoundError, ValueError) as e:
            parser.error(f"--resume {args.resume}: {e}")
    elif args.tokenizer == "gpt2":
        tok_state = tokenizer_state(ranks=str(Path(args.ranks).resolve()))
        tok = tokenizer_from_state(tok_state)
    else:
        # Trained on the training part of the text only (its first 90%), so that the validation
        # text is new to the tokenizer too.
        vocab, merges = train_bpe(text[: int(0.9 * len(text))], args.vocab_size)
        tok_state = tokenizer_state(vocab, merges)
        tok = tokenizer_from_state(tok_state)
    return tok, tok_state


def estimate_batches(args, data: Data, context_length: int) -> tuple[list, list]:
    """The fixed batches of the loss estimates, validation and train, drawn once from generators of
    their own: successive estimates are comparable, and the data stream is left alone."""
    def draw(ids: np.ndarray, seed: int) -> list:
        return [get_batch(ids, args.batch_size, context_length, torch.Generator().manual_seed(seed + i))
                for i in range(args.eval_batches)]

    return draw(data.val_ids, args.seed + 1), draw(data.train_ids, args.seed + 10_001)


# --- the model and the optimizer --------------------------------------------------------------

def matched_hidden_dim(args) -> int:
    """SwiGLU's width that gives ``--arch llama`` the parameter count of ``--arch gpt2`` with the
    same options (the same embedding, blocks and heads; the vocabulary cancels out): GPT-2's
    blocks spend 12 emb^2 + 10 emb on weights, biases and norms, plus the position embedding, where the
    modern block spends ``2 emb^2 (1 + kv / heads) + 2 emb`` on attention and norms and
    ``3 emb hidden`` on SwiGLU."""
    e, layers, context = args.emb_dim, args.n_layers, args.context_length
    gpt = context * e + layers * (12 * e * e + 10 * e) + 2 * e  # position embedding, blocks (qkv without bias), final norm
    modern = layers * (2 * e * e + 2 * e * e * args.n_kv_heads // args.n_heads + 2 * e) + e  # attention, norms, final norm
    return max(1, round((gpt - modern) / (3 * e * layers)))


def build_model(args, extra: dict | None, tok: Tokenizer, device: torch.device) -> GPTModel | ModernModel:
    """A new model of the options' shape (the checkpoint's, when resuming: its weights are loaded later)."""
    return make_model(args.arch, extra["config"] if extra is not None else model_config(args, vocab_size_of(tok)),
                      args.grad_checkpointing).to(device)


def model_config(args, vocab_size: int) -> dict:
    """The model's configuration from the options, as a dict (what the checkpoint keeps)."""
    if args.arch == "llama":
        return dataclasses.asdict(ModernConfig(vocab_size=vocab_size, context_length=args.context_length, emb_dim=args.emb_dim,
                                               n_heads=args.n_heads, n_kv_heads=args.n_kv_heads, n_layers=args.n_layers,
                                               hidden_dim=args.hidden_dim, tie_weights=True))
    return dataclasses.asdict(GPTConfig(vocab_size=vocab_size, context_length=args.context_length, emb_dim=args.emb_dim,
                                        n_heads=args.n_heads, n_layers=args.n_layers, drop_rate=args.dropout, qkv_bias=False,
                                        tie_weights=True, fused=args.fused))


def make_model(arch: str, config: dict, grad_checkpointing: bool = False) -> GPTModel | FastGPT | ModernModel:
    """``GPTModel`` (``arch`` "gpt2"; ``FastGPT`` when the config has ``fused``) or ``ModernModel``
    ("llama") of ``config``; also what ``sample.py`` builds from a checkpoint."""
    if arch == "llama":
        model = ModernModel(ModernConfig(**config))
    else:
        cfg = GPTConfig(**config)
        model = FastGPT(cfg) if cfg.fused else GPTModel(cfg)
    if grad_checkpointing:
        use_gradient_checkpointing(model)
    return model


def trained_model(path: str | os.PathLike, extra: dict) -> GPTModel | FastGPT | ModernModel:
    """The model a checkpoint of this script (or of ``finetune.py``) holds, its weights loaded
    (no optimizer), on the CPU; ``extra`` is the checkpoint's, from ``read_extra``."""
    model = make_model(extra.get("arch", "gpt2"), extra["config"])
    load_checkpoint(path, model=model)
    return model


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device,
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW with weight decay on the 2-D weights (matrices, embeddings) only; biases and the
    LayerNorms' scale and shift are not decayed (nanoGPT's rule). PyTorch's fused kernel (one
    kernel for every parameter's update) on CUDA, and with ``fused`` (the fast path) on any device."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=fused or device.type == "cuda" or None)


def resume_from_checkpoint(path: str, extra: dict, raw_model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scaler: torch.amp.GradScaler | None, data_gen: torch.Generator, device: torch.device) -> RunState:
    """Loads the weights, the optimizer's (and the scaler's) state, the random states and the data
    stream's position from the checkpoint at ``path``; returns the run's state as it was saved."""
    got = load_checkpoint(path, model=raw_model, optimizer=optimizer, map_location=device,
                          scaler=scaler if extra.get("scaler") else None)
    data_gen.set_state(got["data_state"]["generator"])
    state = RunState(step=got["step"], evals=list(extra.get("evals", [])), train_seconds=float(extra.get("train_seconds", 0.0)))
    if "history" in extra:
        state.history = {k: list(v) for k, v in extra["history"].items()}
    return state


def log_start(setup: Setup, state: RunState, n_chars: int) -> None:
    """The run's first lines: the data, the model, where it runs, where it resumed."""
    data, cfg, info = setup.data, setup.cfg, setup.info
    log(info, f"data: {n_chars:,} characters -> {len(data.ids):,} tokens "
              f"({len(data.train_ids):,} train, {len(data.val_ids):,} validation), "
              f"{data.tok_state['kind']} tokenizer of {cfg.vocab_size:,} tokens ({data.seconds:.1f} s)")
    shape = (f"llama: {cfg.n_layers} layers, {cfg.n_heads} heads sharing {cfg.n_kv_heads} kv heads, {cfg.emb_dim} features, "
             f"SwiGLU {cfg.hidden_dim}, context {cfg.context_length}" if isinstance(cfg, ModernConfig) else
             f"gpt2: {cfg.n_layers} layers, {cfg.n_heads} heads, {cfg.emb_dim} features, context {cfg.context_length}, "
             f"dropout {cfg.drop_rate}")
    log(info, f"model: {setup.raw_model.num_parameters():,} parameters "
              f"({shape}); {info.world_size} process(es) on {info.device}, "
              f"{torch.get_num_threads()} thread(s) each; {setup.tokens_per_step:,} tokens per step; amp {setup.args.amp}")
    if state.step:
        log(info, f"resumed from {setup.args.resume} at step {state.step}")


# --- the loop ---------------------------------------------------------------------------------

def train(setup: Setup, state: RunState) -> None:
    """Optimizer steps up to ``--steps``: a loss estimate every ``--eval-every`` steps (and before
    the first, and after the last), a checkpoint every ``--save-every`` steps and at the end."""
    from tqdm import tqdm

    args = setup.args
    bar = tqdm(total=args.steps, initial=state.step, disable=not setup.info.is_main, desc="train", unit="step",
               dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
    state.start_step, state.start_seconds = state.step, state.train_seconds
    setup.raw_model.train()
    if state.step == 0:
        evaluate(setup, state)  # the loss before training: about ln(vocab_size)
    while state.step < args.steps:
        loss, lr = train_one_step(setup, state)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", refresh=False)
        bar.update(1)
        if not math.isfinite(loss) and setup.scaler is None:  # fp16's GradScaler skips such steps itself
            bar.close()
            raise SystemExit(f"the loss is {loss} at step {state.step}: lower --lr (now {args.lr}) or check --amp")
        if state.step % args.eval_every == 0 or state.step == args.steps:
            evaluate(setup, state)
        if args.save_every and state.step % args.save_every == 0 and state.step != args.steps:
            checkpoint(setup, state)
    bar.close()
    checkpoint(setup, state)


def train_one_step(setup: Setup, state: RunState) -> tuple[float, float]:
    """One optimizer step on ``--grad-accum`` micro-batches from the data stream, at the schedule's
    learning rate; it is counted in ``state``. Returns the loss (the mean over the processes) and the learning rate."""
    args, info = setup.args, setup.info
    lr = learning_rate(state.step, max_lr=args.lr, min_lr=args.min_lr, warmup_steps=args.warmup, total_steps=args.steps)
    for group in setup.optimizer.param_groups:
        group["lr"] = lr
    t0 = time.perf_counter()
    micro_batches = []
    for _ in range(args.grad_accum):
        # the global batch: every process draws it, and keeps its rows
        x, y = get_batch(setup.data.train_ids, args.batch_size, setup.cfg.context_length, setup.data_gen)
        micro_batches.append((shard(x, info).to(info.device), shard(y, info).to(info.device)))
    loss, _grad_norm = train_step(setup.model, setup.optimizer, micro_batches, scaler=setup.scaler, amp_dtype=setup.amp_dtype,
                                  max_norm=args.grad_clip or None)
    if info.device.type == "cuda":
        torch.cuda.synchronize()  # CUDA runs asynchronously: wait, so that the time is the step's
    state.train_seconds += time.perf_counter() - t0
    loss = mean_over_processes(loss, info)
    state.step += 1
    state.history["step"].append(state.step)
    state.history["loss"].append(loss)
    state.history["lr"].append(lr)
    return loss, lr


# --- evaluation -------------------------------------------------------------------------------

def evaluate(setup: Setup, state: RunState) -> None:
    """Estimates the train and validation losses (kept in ``state``), logs them and, on rank 0, a sample."""
    info, args, step = setup.info, setup.args, state.step
    state.train_loss = estimate_loss(setup.raw_model, setup.train_eval_batches, info, setup.amp_dtype)
    state.val_loss = estimate_loss(setup.raw_model, setup.val_batches, info, setup.amp_dtype)
    state.evals.append({"step": step, "tokens": step * setup.tokens_per_step, "train_loss": state.train_loss, "val_loss": state.val_loss})
    rate = state.tokens_per_second(setup.tokens_per_step)
    log(info, f"step {step:>5} | tokens {step * setup.tokens_per_step / 1e6:6.2f}M | train {state.train_loss:.3f} | "
              f"val {state.val_loss:.3f} (perplexity {perplexity(state.val_loss):.1f})" + (f" | {rate:,.0f} tokens/s" if rate else ""))
    if info.is_main and args.sample_tokens > 0:
        sample = draw_sample(setup.raw_model, setup.data.tok, args.prompt, args.sample_tokens, info.device, args.seed)
        log(info, textwrap.indent(sample, "    | ", lambda line: True))


def estimate_loss(model: torch.nn.Module, batches: list, info: DistInfo, amp_dtype: torch.dtype | None) -> float:
    """The mean loss over fixed batches (each process its rows), in eval mode, then back to training."""
    model.eval()
    mine = [(shard(x, info), shard(y, info)) for x, y in batches]
    with torch.autocast(device_type=info.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext():
        loss = calc_loss_loader(mine, model, info.device)
    model.train()
    return mean_over_processes(loss, info)


def draw_sample(model: torch.nn.Module, tok: Tokenizer, prompt: str, n_tokens: int, device: torch.device, seed: int) -> str:
    """A sampled continuation of ``prompt`` (temperature 0.8, top-k 40, a fixed seed): the
    same random draws at every evaluation, so the samples show what the model learned."""
    model.eval()
    ids = tok.encode(prompt) or tok.encode("\n")
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, idx, n_tokens, model.cfg.context_length, temperature=0.8, top_k=40, generator=generator)
    model.train()
    return tok.decode(out[0].tolist())


# --- the checkpoint and the plot --------------------------------------------------------------

def checkpoint(setup: Setup, state: RunState) -> None:
    """Rank 0 writes ``ckpt.pt`` (all that ``--resume`` and ``sample.py`` need) and ``loss.png`` under ``--out``."""
    if not setup.info.is_main:
        return
    cfg, tokens_seen = setup.cfg, state.step * setup.tokens_per_step
    save_checkpoint(setup.out / CHECKPOINT, model=setup.raw_model, optimizer=setup.optimizer, step=state.step, scaler=setup.scaler,
                    data_state={"generator": setup.data_gen.get_state(), "tokens_seen": tokens_seen},
                    extra={"config": dataclasses.asdict(cfg), "arch": setup.args.arch, "tokenizer": setup.data.tok_state,
                           "args": vars(setup.args),
                           "val_loss": state.val_loss, "train_loss": state.train_loss, "tokens_seen": tokens_seen,
                           "train_seconds": state.train_seconds, "history": state.history, "evals": state.evals,
                           "scaler": setup.scaler is not None})
    plot_losses(setup.out / PLOT, state.history, state.evals, setup.tokens_per_step,
                f"{setup.raw_model.num_parameters():,} parameters, {cfg.n_layers}x{cfg.emb_dim}, context {cfg.context_length}, "
                f"{setup.tokens_per_step:,} tokens/step")


def plot_losses(path: Path, history: dict, evals: list[dict], tokens_per_step: int, title: str, unit: str = "tokens",
                train_label: str = "train (estimate, no dropout)") -> None:
    """Train (every step, and the estimates) and validation loss against tokens seen (or another
    ``unit``, ``tokens_per_step`` of it per step: finetune.py counts examples); steps on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if history["step"]:
        tokens = [s * tokens_per_step for s in history["step"]]
        ax.plot(tokens, history["loss"], color="tab:blue", alpha=0.25, lw=0.8, label="train (each step)")
    if evals:
        tokens = [e["tokens"] for e in evals]
        ax.plot(tokens, [e["train_loss"] for e in evals], "o-", color="tab:blue", ms=3, label=train_label)
        ax.plot(tokens, [e["val_loss"] for e in evals], "o-", color="tab:orange", ms=3, label="validation")
    ax.set_xlabel(f"{unit} seen")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    top = ax.secondary_xaxis("top", functions=(lambda t: t / tokens_per_step, lambda s: s * tokens_per_step))
    top.set_xlabel("optimizer steps")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# --- the end ----------------------------------------------------------------------------------

def finish(setup: Setup, state: RunState, wall_start: float) -> None:
    """The run's summary and, once every process is done, where its files are."""
    info, out = setup.info, setup.out
    rate = state.tokens_per_second(setup.tokens_per_step)
    log(info, f"done: {state.step} steps, {state.step * setup.tokens_per_step:,} tokens; {rate:,.0f} tokens/s while training; "
              f"val loss {state.val_loss:.3f} (perplexity {perplexity(state.val_loss):.1f}); "
              f"{time.perf_counter() - wall_start:.0f} s in all")
    if info.world_size > 1:  # the others wait for rank 0's checkpoint: leaving the group one by one can abort gloo
        torch.distributed.barrier()
    if info.is_main:
        where = "" if out.resolve() == DEFAULT_OUT.resolve() else f" --checkpoint {shlex.quote(str(out / CHECKPOINT))}"
        tree = f" --impl {__package__}" if __package__ == "exercises" else ""
        log(info, f"wrote {out / CHECKPOINT} and {out / PLOT}; complete a prompt with it: "
                  f"`nox -s sample -- {shlex.quote(setup.args.prompt)}{where}{tree}`")


if __name__ == "__main__":
    main(sys.argv[1:])
