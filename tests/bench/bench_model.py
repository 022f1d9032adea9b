"""Training speed of the solutions' GPT against transformers' GPT-2, same configuration and batch.

GPT-2 small (124M: 12 layers, 12 heads, 768 features, vocabulary 50257, context 1024, dropout
0.1, tied head), fp32, batch 2 x 256 tokens, AdamW (lr 3e-4, PyTorch's default foreach kernel).
One step is forward, cross-entropy on the next tokens, backward and the optimiser step; the loss
is computed the same way from each model's logits. The models take turns, one step each, so
that both see the same machine state; the median step gives the tokens per second.

Target (issue 4): solutions / transformers >= 1.1.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from solutions.config import GPTConfig  # noqa: E402
from solutions.model import GPTModel  # noqa: E402

BATCH, TOKENS, STEPS, WARMUP, TARGET = 2, 256, 4, 1, 1.1


def hf_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(attn_implementation="sdpa"))  # GPT-2 small, dropout 0.1 (its defaults)


def stepper(model, logits_of):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    model.train()

    def step(x, y):
        start = time.perf_counter()
        logits = logits_of(model, x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def main() -> None:
    torch.manual_seed(0)
    ours = GPTModel(GPTConfig.preset("124M", drop_rate=0.1))
    theirs = hf_model()
    print(f"GPT-2 small: solutions {ours.num_parameters():,} parameters, transformers {sum(p.numel() for p in theirs.parameters()):,}; "
          f"batch {BATCH} x {TOKENS}, fp32, AdamW, {torch.get_num_threads()} threads, torch {torch.__version__}")
    steps = {"solutions": stepper(ours, lambda m, x: m(x)), "transformers": stepper(theirs, lambda m, x: m(x).logits)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    data = torch.randint(0, 50257, (WARMUP + STEPS, BATCH, TOKENS + 1))
    for i, batch in enumerate(data):
        x, y = batch[:, :-1], batch[:, 1:]
        for name, step in steps.items():
            t = step(x, y)
            if i >= WARMUP:
                times[name].append(t)
    rate = {name: BATCH * TOKENS / statistics.median(ts) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"  {name:<13} {rate[name]:7.1f} tokens/s   (median step {statistics.median(ts):.2f} s of {', '.join(f'{t:.2f}' for t in ts)})")
    ratio = rate["solutions"] / rate["transformers"]
    print(f"  ratio solutions / transformers: {ratio:.2f}x (target >= {TARGET}x: {'met' if ratio >= TARGET else 'NOT met'})")


if __name__ == "__main__":
    main()
