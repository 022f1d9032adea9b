"""The speed track (exercises 27-30), measured side by side: what each fast piece buys.

1. Training tokens per second. Every step is the solutions' ``train_step`` (forward, cross-entropy
   of the float32 logits, backward, clipping to norm 1, the optimizer's step, ``zero_grad``), the
   models taking turns one step each, the median step giving tokens per second. The rows, each
   adding one piece (the LLMs-from-scratch book's speed table):

   - from scratch: ``GPTModel`` (exercise 09) + ``torch.optim.AdamW`` with its default
     implementation (a for-loop over the parameters on a CPU, ``foreach`` on CUDA);
   - fast path: ``FastGPT`` (exercise 30: ``F.scaled_dot_product_attention`` on one QKV matmul,
     ``F.layer_norm``, tanh GELU in one kernel, the vocabulary padded to a multiple of 64) + the
     same AdamW;
   - fast path + fused AdamW (``fused=True``, one kernel for all parameters);
   - transformers' ``GPT2LMHeadModel`` (``attn_implementation="sdpa"``) + fused AdamW, behind
     ``bench_training``'s wrapper that returns the logits;
   - with ``--compile`` (or ``KATA_BENCH_COMPILE=1``, as ``nox -s bench`` passes no arguments):
     the fast path + fused AdamW under ``torch.compile`` (slow to start).

   Two configurations: (a) the model that ``nox -s train`` trains by default (192 features, 4
   layers, 6 heads, context 128, BPE of 1024 tokens, batch 16 x 128) and (b) GPT-2 small (124M,
   vocabulary 50257) on a small batch (2 x 256 tokens, a context of 256); both with the QKV bias
   transformers' GPT-2 always has and dropout 0.1 (so on a CPU every SDPA, ours and transformers',
   takes its math path: the CPU's flash kernel has no dropout). Each in fp32 and in bf16 autocast.
   AdamW: lr 3e-4, betas (0.9, 0.95), weight decay 0.1 on the 2-D weights only (``make_optimizer``'s
   groups). Target: fast path (fused AdamW) / transformers >= 1.1x in each configuration and dtype.

2. Cached greedy decoding: GPT-2 small, random weights (transformers' initialisation, loaded into
   ``GPTModel`` with ``load_gpt2_weights`` and into ``FastGPT`` through ``pad_state_dict``, so all
   compute the same function), fp32, eval mode, batch 1, a 4-token prompt, 200 new tokens:
   ``generate_fast`` (FastGPT), ``generate_cached`` (GPTModel, exercise 12), the uncached
   ``generate`` (FastGPT, fewer tokens: its rate is an upper bound for 200, each step costing more
   as the sequence grows) and transformers' ``generate(use_cache=True, do_sample=False)``; the
   best of a few runs. Target: generate_fast / transformers >= 1.2x; the cached / uncached ratio is
   printed. Decoding one token reads every weight once, so the machine's memory bandwidth
   (measured here: a copy and a sum of a 512 MiB tensor) over the bytes of weights read per token
   bounds the tokens per second; each row's share of that bound is printed, and of the lower one
   that a lone matrix-vector product (the head's weight) reaches on this machine.

3. Attention at L = 2048, (1, 12, 2048, 64) fp32, causal, forward + backward: exercise 29's
   ``flash_attention`` (blocks of 64 and of 128) against exercise 01's
   ``scaled_dot_product_attention`` under autograd (which keeps the L x L probabilities) and
   ``F.scaled_dot_product_attention``: the median time, and the peak of live tensor memory above
   the inputs (a TorchDispatchMode that follows the storages the ops create; it cannot see a fused
   kernel's internal scratch buffers), and what the forward pass leaves held for the backward.

4. On CUDA (when available): the training rows for GPT-2 small, context 1024, batch 8, bf16
   autocast, no dropout, the fast path's SDPA restricted to FlashAttention; tokens per second and
   the model FLOPs utilization as in ``bench_training`` (``6 N + 12 L T d`` flops per token).

Quick smoke run: ``--quick`` or ``KATA_BENCH_QUICK=1`` (one or two steps, 16 new tokens, L = 512:
the code paths, not the numbers). A markdown table of everything ends the output, for the speed track's page
(solutions/tracks/27-speed.md).
Timings on a shared CPU move by 2x and more (with 2 threads on 2 cores, an op waits for both, so a
busy core slows the many small ops of decoding and of the tiled attention most): each measurement
prints the share of the CPUs that other processes took meanwhile (from /proc/stat).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import HFLogits, gpu_peak_tflops, table  # noqa: E402
from harness.parts.flash_run import PeakMemory  # noqa: E402
from solutions.attention import scaled_dot_product_attention  # noqa: E402
from solutions.config import GPTConfig  # noqa: E402
from solutions.fast import FastGPT, pad_state_dict, generate_fast  # noqa: E402
from solutions.flash_grad import flash_attention  # noqa: E402
from solutions.generate import generate  # noqa: E402
from solutions.kv_cache import generate_cached  # noqa: E402
from solutions.model import GPTModel  # noqa: E402
from solutions.train import build_parser  # noqa: E402
from solutions.training import train_step  # noqa: E402
from solutions.weights import load_gpt2_weights  # noqa: E402

TARGET_TRAIN, TARGET_DECODE = 1.1, 1.2
DROPOUT, LR, WEIGHT_DECAY = 0.1, 3e-4, 0.1
PROMPT = 4
BUSY = 0.15  # other processes taking more than this share of the CPUs during a measurement: "the machine was busy"

ROWS = {  # key: label, in the order of the table
    "scratch": "from scratch: GPTModel + AdamW ({default})",
    "fast": "fast path: FastGPT + AdamW ({default})",
    "fused": "fast path + fused AdamW",
    "hf": "transformers GPT2LMHeadModel (sdpa) + fused AdamW",
    "compile": "fast path + fused AdamW + torch.compile",
}
SUMMARY: list[tuple[str, str, str, str]] = []  # (measurement, result, ratio, target): the closing markdown table
CONTENTION: list[float] = []  # the share of the CPUs other processes took, per measurement


def record(what: str, result: str, ratio: str = "", target: str = "") -> None:
    SUMMARY.append((what, result, ratio, target))


def verdict(ratio: float, target: float) -> str:
    return f">= {target}x: {'met' if ratio >= target else 'NOT met'}"


class Contention:
    """The share of the CPUs that other processes (and, as steal time, other virtual machines) took
    from its creation to ``share()``: /proc/stat's busy time less this process's own (Linux only)."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
            tick = os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, AttributeError):
            return None
        busy = (sum(ticks) - ticks[3] - ticks[4]) / tick  # user nice system (idle iowait) irq softirq steal
        return time.perf_counter(), busy, sum(os.times()[:4])

    def share(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        other = (end[1] - self.start[1]) - (end[2] - self.start[2])
        share = max(0.0, other / ((end[0] - self.start[0]) * (os.cpu_count() or 1)))
        CONTENTION.append(share)
        return share


def busy_note(share: float | None) -> str | None:
    """A reason to distrust a measurement when other processes took much of the CPUs during it."""
    if share is None or share <= BUSY:
        return None
    return f"the machine was busy: other processes took {share:.0%} of the CPUs during the measurement"


def contention_text(share: float | None) -> str:
    return "" if share is None else f"; other processes took {share:.0%} of the CPUs meanwhile"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # unknown: say nothing about it
    return "avx512_bf16" in flags or "amx_bf16" in flags


# --- 1. training ---------------------------------------------------------------------------------

def adamw(model: nn.Module, fused: bool) -> torch.optim.AdamW:
    """``make_optimizer``'s AdamW (decay on the 2-D weights only), fused or with PyTorch's default."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), **({"fused": True} if fused else {}))


def default_adamw_kind(device: torch.device) -> str:
    """What ``torch.optim.AdamW`` runs by default on ``device``: foreach or a for-loop."""
    try:
        from torch.optim.optimizer import _default_to_fused_or_foreach

        _, foreach = _default_to_fused_or_foreach([torch.zeros(1, device=device)], False, False)
        return "default: foreach" if foreach else "default: for-loop"
    except Exception:  # a private helper: its name may change
        return "default"


def fused_adamw_problem(device: torch.device) -> str | None:
    """None when a fused AdamW steps on ``device``, else why not."""
    try:
        p = nn.Parameter(torch.zeros(4, device=device))
        p.grad = torch.ones_like(p)
        torch.optim.AdamW([p], fused=True).step()
        return None
    except Exception as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def build_rows(cfg: GPTConfig, device: torch.device, fused: bool, compiled: bool) -> dict:
    """key -> (model as called, optimizer), each model built from seed 0, in training mode."""
    def made(cls):
        torch.manual_seed(0)
        return cls(cfg).to(device).train()

    rows = {}
    for key, cls, fuse in (("scratch", GPTModel, False), ("fast", FastGPT, False), ("fused", FastGPT, fused),
                           ("hf", HFLogits, fused)):
        model = made(cls)
        rows[key] = (model, adamw(model, fuse))
    if compiled:
        model = made(FastGPT)
        rows["compile"] = (torch.compile(model), adamw(model, fused))
    return rows


def flash_only(device: torch.device, key: str):
    """On CUDA, the fast path's SDPA restricted to FlashAttention (an error if it cannot run)."""
    if device.type != "cuda" or key not in ("fast", "fused", "compile"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.FLASH_ATTENTION)


def race(rows: dict, amp: torch.dtype | None, batch: int, tokens: int, vocab: int, device: torch.device,
         steps: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per step of each row (after ``warmup`` steps), the rows taking turns one step each."""
    times: dict[str, list[float]] = {key: [] for key in rows}
    data = torch.randint(0, vocab, (warmup + steps, batch, tokens + 1))
    for i, chunk in enumerate(data):
        x, y = chunk[:, :-1].to(device), chunk[:, 1:].to(device)
        for key, (model, opt) in rows.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with flash_only(device, key):
                train_step(model, opt, [(x, y)], amp_dtype=amp, max_norm=1.0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[key].append(time.perf_counter() - start)
    return times


def try_compile(rows: dict, amp: torch.dtype | None, batch: int, tokens: int, vocab: int, device: torch.device) -> str | None:
    """One untimed step of the compiled row (its compilation, for this dtype); on failure the row is
    dropped and the reason returned."""
    if "compile" not in rows:
        return None
    model, opt = rows["compile"]
    x = torch.randint(0, vocab, (batch, tokens + 1), device=device)
    try:
        with flash_only(device, "compile"):
            train_step(model, opt, [(x[:, :-1], x[:, 1:])], amp_dtype=amp, max_norm=1.0)
        return None
    except Exception as e:
        del rows["compile"]
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]


def spread(ts: list[float]) -> float:
    """(slowest - fastest) / median step."""
    return (max(ts) - min(ts)) / statistics.median(ts) if len(ts) > 1 else 0.0


def train_config(title: str, cfg: GPTConfig, batch: int, tokens: int, device: torch.device, amps: list,
                 steps: int, warmup: int, compiled: bool, flops_per_token: float | None = None,
                 peak_tflops: float | None = None) -> None:
    fused_problem = fused_adamw_problem(device)
    labels = {key: label.format(default=default_adamw_kind(device)) for key, label in ROWS.items()}
    if fused_problem:
        print(f"  fused AdamW does not run on {device.type} ({fused_problem}): the 'fused' rows use the default AdamW")
        for key in ("fused", "hf", "compile"):
            labels[key] = labels[key].replace("fused AdamW", f"AdamW ({default_adamw_kind(device)}; fused failed)")
    rows = build_rows(cfg, device, fused_problem is None, compiled)
    n = {key: sum(p.numel() for p in model.parameters()) for key, (model, _) in rows.items()}
    print(f"\n{title}: {cfg.n_layers} layers x {cfg.emb_dim} features, {cfg.n_heads} heads, vocabulary {cfg.vocab_size}, "
          f"dropout {cfg.drop_rate}; batch {batch} x {tokens}; median of {steps} steps after {warmup}, taking turns; "
          f"parameters: GPTModel {n['scratch']:,}, FastGPT {n['fast']:,} (padded vocabulary), transformers {n['hf']:,}")
    compile_problem = None
    for amp in amps:
        dtype = "bf16 autocast" if amp is not None else "fp32"
        compile_problem = try_compile(rows, amp, batch, tokens, cfg.vocab_size, device) or compile_problem
        watch = Contention()
        times = race(rows, amp, batch, tokens, cfg.vocab_size, device, steps, warmup)
        busy = watch.share() if device.type == "cpu" else None
        rate = {key: batch * tokens / statistics.median(ts) for key, ts in times.items()}
        header = (f"{dtype}, {device.type}", "tokens/s", "vs from scratch", "vs transformers", "spread")
        lines = [header]
        for key in rate:
            line = (labels[key], f"{rate[key]:,.0f}", f"{rate[key] / rate['scratch']:.2f}x", f"{rate[key] / rate['hf']:.2f}x",
                    f"{spread(times[key]):.0%}")
            result = f"{rate[key]:,.0f} tokens/s"
            if flops_per_token is not None:
                mfu = f"{flops_per_token * rate[key] / (peak_tflops * 1e12):.1%}"
                line, result = line + (mfu,), result + f", MFU {mfu}"
            lines.append(line)
            record(f"{title}, {dtype}: {labels[key]}", result, f"{rate[key] / rate['hf']:.2f}x transformers",
                   verdict(rate[key] / rate["hf"], TARGET_TRAIN) if key == "fused" else "")
        if flops_per_token is not None:
            lines[0] += ("MFU",)
        print()
        table(lines)
        if compile_problem:
            print(f"  torch.compile failed, row left out: {compile_problem}")
        ratio = rate["fused"] / rate["hf"]
        print(f"  ratio fast path (fused AdamW) / transformers: {ratio:.2f}x ({verdict(ratio, TARGET_TRAIN)})"
              + contention_text(busy))
        if ratio < TARGET_TRAIN:
            reasons = [f"the pieces measured: FastGPT / GPTModel {rate['fast'] / rate['scratch']:.2f}x, "
                       f"fused / default AdamW {rate['fused'] / rate['fast']:.2f}x, and the two models under the same "
                       f"fused AdamW {ratio:.2f}x (transformers' GPT-2 also runs SDPA and one QKV matmul)"]
            if amp is not None and device.type == "cpu" and not cpu_has_bf16():
                reasons.append("this CPU has no bfloat16 instructions (avx512_bf16 / amx_bf16)")
            noisy = max(spread(times["fused"]), spread(times["hf"]))
            if noisy > 0.25:
                reasons.append(f"the step times spread by {noisy:.0%} (noisy)")
            if busy_note(busy):
                reasons.append(busy_note(busy))
            print("  missed: " + "; ".join(reasons))


def cpu_training(quick: bool, compiled: bool) -> None:
    cpu = torch.device("cpu")
    args = build_parser().parse_args([])
    small = GPTConfig(vocab_size=args.vocab_size, context_length=args.context_length, emb_dim=args.emb_dim,
                      n_heads=args.n_heads, n_layers=args.n_layers, drop_rate=DROPOUT, qkv_bias=True)
    amps = [None, torch.bfloat16]
    train_config("nox -s train's model", small, args.batch_size, small.context_length, cpu, amps,
                 steps=2 if quick else 8, warmup=1 if quick else 2, compiled=compiled)
    big = GPTConfig.preset("124M", context_length=256, drop_rate=DROPOUT, qkv_bias=True)
    train_config("GPT-2 124M", big, 2, 256, cpu, amps, steps=1 if quick else 4, warmup=1, compiled=compiled)


def cuda_training(quick: bool, compiled: bool) -> None:
    gpu = torch.device("cuda")
    name = torch.cuda.get_device_name(gpu)
    peak, source = gpu_peak_tflops(name)
    cfg, batch = GPTConfig.preset("124M", drop_rate=0.0), 8
    n = GPTModel(cfg).num_parameters() - cfg.context_length * cfg.emb_dim  # without the position embedding
    flops_per_token = 6 * n + 12 * cfg.n_layers * cfg.context_length * cfg.emb_dim
    print(f"\nCUDA, {name}: peak {peak:g} TFLOPS ({source}); MFU = {flops_per_token / 1e9:.2f} GFLOP per token x tokens/s / peak")
    train_config(f"GPT-2 124M, CUDA ({name})", cfg, batch, cfg.context_length, gpu, [torch.bfloat16],
                 steps=3 if quick else 10, warmup=2 if quick else 3, compiled=compiled, flops_per_token=flops_per_token,
                 peak_tflops=peak)


# --- 2. decoding and the memory bandwidth ----------------------------------------------------------

def bandwidth(mib: int, reps: int, emb_dim: int, rows: int) -> tuple[float, float, float]:
    """This machine's memory bandwidth in bytes/s, best of ``reps``: (copy: read + written, sum: read,
    and the weight bytes a lone matrix-vector product ``(1, emb_dim) x (rows, emb_dim)^T`` reads: what
    a decoding step's matmuls can actually get)."""
    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    weight, x = torch.randn(rows, emb_dim), torch.randn(1, emb_dim)
    copy = read = gemv = 0.0
    for _ in range(reps):
        start = time.perf_counter()
        dst.copy_(src)
        copy = max(copy, 2 * src.nbytes / (time.perf_counter() - start))
        start = time.perf_counter()
        float(src.sum())
        read = max(read, src.nbytes / (time.perf_counter() - start))
        start = time.perf_counter()
        F.linear(x, weight)
        gemv = max(gemv, weight.nbytes / (time.perf_counter() - start))
    return copy, read, gemv


def decoding(quick: bool) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    new, uncached_new, reps = (16, 4, 1) if quick else (200, 64, 3)
    torch.manual_seed(0)
    theirs = GPT2LMHeadModel(GPT2Config(attn_implementation="sdpa")).eval()
    cfg = GPTConfig.preset("124M", drop_rate=0.0)
    ours = GPTModel(cfg).eval()
    load_gpt2_weights(ours, theirs.state_dict())
    fast = FastGPT(cfg).eval()
    fast.load_state_dict(pad_state_dict(ours.state_dict(), cfg.vocab_size))
    prompt = torch.randint(0, cfg.vocab_size, (1, PROMPT))
    mask = torch.ones_like(prompt)

    def hf(n: int) -> torch.Tensor:
        return theirs.generate(prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               use_cache=True, pad_token_id=0)

    runs = {  # key: (label, new tokens, run)
        "fast": ("generate_fast (FastGPT, preallocated cache)", new, lambda n: generate_fast(fast, prompt, n)),
        "cached": ("generate_cached (GPTModel, exercise 12)", new, lambda n: generate_cached(ours, prompt, n)),
        "uncached": ("generate, no cache (FastGPT)", uncached_new, lambda n: generate(fast, prompt, n, context_size=cfg.context_length)),
        "hf": ("transformers generate(use_cache=True)", new, hf),
    }
    for _, _, run in runs.values():  # warm-up
        run(4)
    best: dict[str, float] = {}
    out: dict[str, torch.Tensor] = {}
    watch = Contention()
    for _ in range(reps):  # taking turns
        for key, (_, n, run) in runs.items():
            start = time.perf_counter()
            with torch.no_grad():
                out[key] = run(n)
            best[key] = min(best.get(key, math.inf), time.perf_counter() - start)
    busy = watch.share()
    rate = {key: (out[key].size(1) - PROMPT) / best[key] for key in runs}

    copy_bw, read_bw, gemv_bw = bandwidth(128 if quick else 512, 2 if quick else 5, cfg.emb_dim, cfg.vocab_size)
    # bytes read per new token: every weight once (the tied embedding once, as the head), the two embedding rows
    n_params = ours.num_parameters() - ours.pos_emb.weight.numel()
    bytes_per_token = 4 * (n_params + 2 * cfg.emb_dim)
    bound = read_bw / bytes_per_token
    kv_bytes = 2 * cfg.n_layers * (PROMPT + new / 2) * cfg.emb_dim * 4  # the cache read per token, on average

    print(f"\nCached greedy decoding: GPT-2 124M, random weights, fp32, eval, batch 1, {PROMPT}-token prompt, "
          f"{new} new tokens ({uncached_new} without a cache), best of {reps}{contention_text(busy)}")
    table([("decoding, CPU", "new tokens", "tokens/s", "vs transformers", "of the bound")]
          + [(label, f"{out[key].size(1) - PROMPT}", f"{rate[key]:,.1f}", f"{rate[key] / rate['hf']:.2f}x",
              f"{rate[key] / bound:.0%}") for key, (label, _, _) in runs.items()])

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:  # over the tokens both have
        n = min(a.size(1), b.size(1))
        return torch.equal(a[:, :n], b[:, :n])

    agree = {key: same(out[key], out["fast"]) for key in ("cached", "uncached", "hf")}
    print(f"  same greedy tokens as generate_fast: generate_cached {agree['cached']}, "
          f"uncached generate {agree['uncached']} (first {uncached_new}), transformers {agree['hf']}")
    ratio, cached_ratio = rate["fast"] / rate["hf"], rate["fast"] / rate["uncached"]
    print(f"  ratio generate_fast / transformers: {ratio:.2f}x ({verdict(ratio, TARGET_DECODE)})")
    print(f"  ratio cached / uncached (generate_fast / generate): {cached_ratio:.1f}x, "
          f"the uncached rate taken over its first {uncached_new} tokens (over {new} it would be lower, the ratio higher)")
    print(f"  memory bandwidth, {torch.get_num_threads()} threads: copy {copy_bw / 1e9:.1f} GB/s (read + written), "
          f"sum {read_bw / 1e9:.1f} GB/s (read)")
    print(f"  bytes per new token: {bytes_per_token / 1e6:.1f} MB of fp32 weights ({n_params:,} parameters, the tied head "
          f"once, one row of each embedding), plus ~{kv_bytes / 1e6:.1f} MB of cache on average")
    print(f"  bound: {read_bw / 1e9:.1f} GB/s / {bytes_per_token / 1e6:.1f} MB = {bound:.1f} tokens/s; generate_fast reaches "
          f"{rate['fast'] / bound:.0%} of it, transformers {rate['hf'] / bound:.0%}")
    print(f"  a lone matrix-vector product with the head's weight ({cfg.vocab_size} x {cfg.emb_dim}) reads it at "
          f"{gemv_bw / 1e9:.1f} GB/s: at that speed {gemv_bw / bytes_per_token:.1f} tokens/s; generate_fast reaches "
          f"{rate['fast'] * bytes_per_token / gemv_bw:.0%} of it, transformers {rate['hf'] * bytes_per_token / gemv_bw:.0%}")
    if ratio < TARGET_DECODE:
        reasons = []
        if rate["hf"] / bound > 1 / TARGET_DECODE:
            reasons.append(f"transformers already reaches {rate['hf'] / bound:.0%} of the bandwidth bound, which leaves "
                           f"at most {bound / rate['hf']:.2f}x to gain")
        gemv_bound = gemv_bw / bytes_per_token
        if rate["hf"] / gemv_bound > 1 / TARGET_DECODE:
            reasons.append(f"transformers already runs at {rate['hf'] / gemv_bound:.0%} of the speed at which this machine's "
                           f"matrix-vector products read the weights, which leaves at most {gemv_bound / rate['hf']:.2f}x to gain")
        reasons.append(f"generate_fast reaches {rate['fast'] / bound:.0%} of the bandwidth bound, "
                       f"{rate['fast'] / gemv_bound:.0%} of the matrix-vector one")
        if busy_note(busy):
            reasons.append(busy_note(busy))
        print("  missed: " + "; ".join(reasons))
    for key, (label, _, _) in runs.items():
        record(f"decoding 124M fp32, batch 1: {label}", f"{rate[key]:,.1f} tokens/s",
               f"{rate[key] / rate['hf']:.2f}x transformers; {rate[key] / bound:.0%} of the bound",
               verdict(ratio, TARGET_DECODE) if key == "fast" else "")
    record("decoding: cached / uncached (generate_fast / generate)", f"{cached_ratio:.1f}x", f"uncached over {uncached_new} tokens")
    record("memory bandwidth (copy / sum / matrix-vector)", f"{copy_bw / 1e9:.1f} / {read_bw / 1e9:.1f} / {gemv_bw / 1e9:.1f} GB/s",
           f"bound {bound:.1f} tokens/s at {bytes_per_token / 1e6:.0f} MB per token")
    record("same greedy tokens (cached / uncached / transformers vs generate_fast)",
           " / ".join(str(agree[k]) for k in ("cached", "uncached", "hf")))


# --- 3. attention ---------------------------------------------------------------------------------

def attention(quick: bool) -> None:
    L, reps = (512, 1) if quick else (2048, 3)
    shape = (1, 12, L, 64)
    fns = {
        "F.scaled_dot_product_attention": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "from scratch (exercise 01), autograd": lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=True),
        "flash_attention, blocks of 64": lambda q, k, v: flash_attention(q, k, v, is_causal=True, block_q=64, block_k=64),
        "flash_attention, blocks of 128": lambda q, k, v: flash_attention(q, k, v, is_causal=True, block_q=128, block_k=128),
    }
    torch.manual_seed(0)
    q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
    grad = torch.randn(shape)

    def forward_backward(fn):
        for t in (q, k, v):
            t.grad = None
        out = fn(q, k, v)
        out.backward(grad)
        return out.detach(), [t.grad for t in (q, k, v)]

    ref_out, ref_grads = forward_backward(fns["F.scaled_dot_product_attention"])
    watch = Contention()
    times: dict[str, list[float]] = {name: [] for name in fns}
    error: dict[str, float] = {}
    for _ in range(reps):  # taking turns
        for name, fn in fns.items():
            start = time.perf_counter()
            out, grads = forward_backward(fn)
            times[name].append(time.perf_counter() - start)
            error[name] = max([(out - ref_out).abs().max().item()]
                              + [(g - r).abs().max().item() for g, r in zip(grads, ref_grads)])
    busy = watch.share()
    memory = {}
    for name, fn in fns.items():  # apart from the timing: the tracking slows every op down
        for t in (q, k, v):
            t.grad = None
        with PeakMemory(q, k, v, grad) as mem:  # 28/29's graded memory check, the inputs counting zero
            out = fn(q, k, v)
            held = mem.now  # what the forward pass leaves: the output and what autograd saved
            out.backward(grad)
            del out
        memory[name] = (mem.peak, held)

    mib = 2**20
    print(f"\nAttention, causal, {tuple(shape)} fp32, forward + backward, median of {reps}; memory: the peak of live "
          f"tensors above q, k, v and the output's gradient (fused kernels' internal scratch not seen)")
    table([("attention, CPU", "ms", "peak MiB", "held after forward MiB", "max |diff| vs F.sdpa")]
          + [(name, f"{1000 * statistics.median(times[name]):,.0f}", f"{memory[name][0] / mib:,.1f}",
              f"{memory[name][1] / mib:,.1f}", f"{error[name]:.1e}") for name in fns])
    scratch = "from scratch (exercise 01), autograd"
    best_flash = min(("flash_attention, blocks of 64", "flash_attention, blocks of 128"), key=lambda n: memory[n][0])
    print(f"  {best_flash}: {memory[scratch][0] / max(memory[best_flash][0], 1):.1f}x less peak memory than from scratch, "
          f"{statistics.median(times[best_flash]) / statistics.median(times['F.scaled_dot_product_attention']):.1f}x "
          f"F.sdpa's time (tiles in Python loops){contention_text(busy)}")
    for name in fns:
        record(f"attention L={L} fwd+bwd: {name}", f"{1000 * statistics.median(times[name]):,.0f} ms",
               f"peak {memory[name][0] / mib:,.1f} MiB")


# --- the report -----------------------------------------------------------------------------------

def markdown(started: str, quick: bool, compiled: bool) -> None:
    import transformers

    print(f"\n## bench_fast: {started}{' (--quick: smoke numbers only)' if quick else ''}\n")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), {torch.get_num_threads()} threads; torch {torch.__version__}, "
          f"transformers {transformers.__version__}"
          + (f"; CUDA: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "; no CUDA")
          + ("; torch.compile row on" if compiled else "")
          + (f"; other processes took {min(CONTENTION):.0%} to {max(CONTENTION):.0%} of the CPUs during the measurements"
             if CONTENTION else "") + "\n")
    print("| measurement | result | ratio | target |")
    print("|---|---:|---|---|")
    for row in SUMMARY:
        print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("KATA_BENCH_QUICK") == "1",
                        help="a smoke run: few steps and tokens (also KATA_BENCH_QUICK=1)")
    parser.add_argument("--compile", action="store_true", default=os.environ.get("KATA_BENCH_COMPILE") == "1",
                        help="add a torch.compile row to the training tables (also KATA_BENCH_COMPILE=1; slow to start)")
    parser.add_argument("--only", choices=["training", "decoding", "attention"], default=os.environ.get("KATA_BENCH_ONLY") or None,
                        help="run one section (also KATA_BENCH_ONLY=decoding, ...)")
    args = parser.parse_args()
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.perf_counter()
    print(f"{started}; CPU: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
          + f", {os.cpu_count()} cores")
    sections = {"training": lambda: cpu_training(args.quick, args.compile), "decoding": lambda: decoding(args.quick),
                "attention": lambda: attention(args.quick)}
    for name, section in sections.items():
        if args.only and name != args.only:
            continue
        start = time.perf_counter()
        section()
        print(f"  ({name}: {time.perf_counter() - start:.0f} s)")
    if torch.cuda.is_available():
        cuda_training(args.quick, args.compile)
    else:
        print("\nno CUDA device here: the CUDA training rows and their MFU are skipped")
        record("CUDA training, MFU", "skipped: no CUDA device")
    print(f"\n(the whole benchmark took {time.perf_counter() - t0:.0f} s)")
    markdown(started, args.quick, args.compile)


if __name__ == "__main__":
    main()
