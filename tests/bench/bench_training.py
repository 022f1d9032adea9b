"""Training throughput: the solutions' GPT and train_step against transformers' GPT-2, and AMP.

1. The solutions' ``GPTModel`` against transformers' ``GPT2LMHeadModel`` at the same
   configuration (the model that ``nox -s train`` trains by default, with the QKV bias that
   transformers' GPT-2 always has: 192 features, 4 layers, 6 heads, context 128, BPE of 1024
   tokens, dropout 0.1, tied head), the same batch (16 x 128 tokens), the same optimizer (AdamW, lr
   3e-4, betas (0.9, 0.95)), fp32 on the CPU. Both run through the solutions' ``train_step``
   (forward, cross-entropy, backward, clipping to norm 1, the optimizer's step), transformers'
   model behind a wrapper that returns its logits; the models take turns, one step each, and the
   median step gives tokens per second. Target: solutions / transformers >= 0.8 (the solutions
   write attention, LayerNorm and GELU out of elementary ops, where transformers calls
   ``F.scaled_dot_product_attention`` and fused kernels).
2. The solutions with ``--amp bf16`` (autocast) against fp32, same model and batch. Whether bf16
   pays on a CPU depends on it: with bfloat16 instructions (AVX512-BF16: AMD Zen 4, Intel Cooper
   Lake and later; AMX: Sapphire Rapids) it is faster, without them usually slower.

Measured on a 2-core AMD EPYC (Zen 4, AVX512-BF16), torch 2.13 CPU, lightly loaded: solutions
3,765 tokens/s, transformers 4,575 (0.82x); bf16 autocast 7,435 tokens/s against fp32 4,541
(1.64x). These numbers move by 2x and more when other processes share the cores.
3. On CUDA (when available): GPT-2 small (124M) with a context of 1024, batch 8, bf16 autocast,
   tokens per second and the model FLOPs utilization, MFU = flops per token x tokens per second /
   the GPU's peak dense bf16 throughput, with nanoGPT's flops per token ``6 N + 12 L T d`` (N the
   parameters without the position embedding, L layers, T the context, d the width). The peak
   used is printed (H100 SXM: 989 TFLOPS; H100 PCIe: 756; A100: 312; other GPUs: set
   ``KATA_PEAK_TFLOPS``).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from solutions.config import GPTConfig  # noqa: E402
from solutions.model import GPTModel  # noqa: E402
from solutions.train import build_parser, make_optimizer  # noqa: E402
from solutions.training import train_step  # noqa: E402

VOCAB, STEPS, WARMUP, TARGET = 1024, 6, 2, 0.8
PEAK_TFLOPS = {"H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


class HFLogits(nn.Module):
    """transformers' GPT-2, returning its logits tensor as train_step expects."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.model = GPT2LMHeadModel(GPT2Config(
            vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim, n_layer=cfg.n_layers,
            n_head=cfg.n_heads, resid_pdrop=cfg.drop_rate, embd_pdrop=cfg.drop_rate, attn_pdrop=cfg.drop_rate,
            activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True, attn_implementation="sdpa",
            bos_token_id=cfg.vocab_size - 1, eos_token_id=cfg.vocab_size - 1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx).logits


def default_config() -> tuple[GPTConfig, int]:
    """The model and the batch size that `nox -s train` uses by default (with a QKV bias)."""
    args = build_parser().parse_args([])  # the options as given: --dropout's default is applied by train's own checks
    cfg = GPTConfig(vocab_size=VOCAB, context_length=args.context_length, emb_dim=args.emb_dim, n_heads=args.n_heads,
                    n_layers=args.n_layers, drop_rate=0.1 if args.dropout is None else args.dropout, qkv_bias=True)
    return cfg, args.batch_size


def race(steppers: dict, batch: int, tokens: int, vocab: int, device: torch.device, steps: int = STEPS,
         warmup: int = WARMUP) -> dict[str, float]:
    """Tokens per second of each stepper (median step), the steppers taking turns."""
    times: dict[str, list[float]] = {name: [] for name in steppers}
    data = torch.randint(0, vocab, (warmup + steps, batch, tokens + 1))
    for i, chunk in enumerate(data):
        x, y = chunk[:, :-1].to(device), chunk[:, 1:].to(device)
        for name, step in steppers.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step(x, y)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: batch * tokens / statistics.median(ts) for name, ts in times.items()}


def stepper(model: nn.Module, device: torch.device, amp_dtype: torch.dtype | None = None):
    model.to(device).train()
    opt = make_optimizer(model, 3e-4, 0.1, device)
    return lambda x, y: train_step(model, opt, [(x, y)], amp_dtype=amp_dtype, max_norm=1.0)


def table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            print("  " + "  ".join("-" * w for w in widths))


def cpu_benchmarks() -> None:
    cpu = torch.device("cpu")
    cfg, batch = default_config()
    torch.manual_seed(0)
    ours, theirs = GPTModel(cfg), HFLogits(cfg)
    n_ours, n_theirs = ours.num_parameters(), sum(p.numel() for p in theirs.parameters())
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}: {cfg.n_layers} layers x {cfg.emb_dim} features, "
          f"{cfg.n_heads} heads, context {cfg.context_length}, vocabulary {cfg.vocab_size}, dropout {cfg.drop_rate}; "
          f"batch {batch} x {cfg.context_length}; parameters: solutions {n_ours:,}, transformers {n_theirs:,}")
    rate = race({"solutions": stepper(ours, cpu), "transformers": stepper(theirs, cpu)}, batch, cfg.context_length, cfg.vocab_size, cpu)
    ratio = rate["solutions"] / rate["transformers"]
    torch.manual_seed(0)
    amp = race({"fp32": stepper(GPTModel(cfg), cpu), "bf16": stepper(GPTModel(cfg), cpu, torch.bfloat16)},
               batch, cfg.context_length, cfg.vocab_size, cpu)
    table([
        ("fp32, CPU", "tokens/s", "vs transformers"),
        ("solutions GPTModel + train_step", f"{rate['solutions']:,.0f}", f"{ratio:.2f}x"),
        ("transformers GPT2LMHeadModel", f"{rate['transformers']:,.0f}", "1.00x"),
    ])
    print(f"  ratio solutions / transformers: {ratio:.2f}x (target >= {TARGET}x: {'met' if ratio >= TARGET else 'NOT met'})")
    print()
    table([
        ("solutions, CPU", "tokens/s", "vs fp32"),
        ("fp32", f"{amp['fp32']:,.0f}", "1.00x"),
        ("bf16 autocast (--amp bf16)", f"{amp['bf16']:,.0f}", f"{amp['bf16'] / amp['fp32']:.2f}x"),
    ])


def gpu_peak_tflops(name: str) -> tuple[float, str]:
    if os.environ.get("KATA_PEAK_TFLOPS"):
        return float(os.environ["KATA_PEAK_TFLOPS"]), "KATA_PEAK_TFLOPS"
    for key, peak in PEAK_TFLOPS.items():
        if all(part in name for part in key.split()):
            return peak, f"{key} dense bf16"
    return float("nan"), "unknown GPU: set KATA_PEAK_TFLOPS"


def cuda_benchmarks() -> None:
    gpu = torch.device("cuda")
    name = torch.cuda.get_device_name(gpu)
    peak, source = gpu_peak_tflops(name)
    cfg, batch = GPTConfig.preset("124M", drop_rate=0.0), 8
    torch.manual_seed(0)
    model = GPTModel(cfg)
    n = model.num_parameters() - model.pos_emb.weight.numel()
    flops_per_token = 6 * n + 12 * cfg.n_layers * cfg.context_length * cfg.emb_dim
    rate = race({"bf16": stepper(model, gpu, torch.bfloat16)}, batch, cfg.context_length, cfg.vocab_size, gpu, steps=10, warmup=3)
    mfu = flops_per_token * rate["bf16"] / (peak * 1e12)
    print()
    print(f"CUDA, {name}: GPT-2 small ({n:,} parameters without the position embedding), context {cfg.context_length}, "
          f"batch {batch}, bf16 autocast; peak {peak:g} TFLOPS ({source})")
    table([
        ("solutions, CUDA", "tokens/s", "MFU"),
        ("124M, bf16 autocast", f"{rate['bf16']:,.0f}", f"{mfu:.1%}"),
    ])


def main() -> None:
    cpu_benchmarks()
    if torch.cuda.is_available():
        cuda_benchmarks()
    else:
        print("\nno CUDA device here: the MFU measurement is skipped")


if __name__ == "__main__":
    main()
