"""Ungraded: gradient checkpointing inside the learner's own model.

Exercise 16 is graded on ``run_blocks`` alone, with the reference blocks. Here the learner's own
``GPTModel`` (exercise 09, with ``training.use_gradient_checkpointing``, given glue that makes its
blocks run through ``run_blocks``) trains one step with dropout on, once without and once with checkpointing,
from the same parameters and random state: the loss and every gradient must be the same, and the
forward pass must save fewer bytes for backward. Skipped while the model or ``run_blocks`` is a stub.
"""

import pytest
import torch
from harness.draw import n

from harness.compare import assert_close, assert_true
from harness.failures import NotStarted
from harness.impl import Impl
from harness.manifest import Exercise

CHAIN = Exercise(id="chain", slug="grad_checkpoint_model", title="Gradient checkpointing in your model (ungraded)", module="model",
                 functions=(), points=0)


@pytest.fixture
def chain(kata):
    return Impl(kata.get_backend(), CHAIN, kata.lost)


def test_checkpointing_your_model_keeps_loss_and_gradients(chain, gen):
    heads = 2 ** n(gen, 0, 2)
    cfg = {"vocab_size": n(gen, 11, 40), "context_length": 16, "emb_dim": 8 * n(gen, 2, 4), "n_heads": heads, "n_layers": n(gen, 2, 3),
           "drop_rate": 0.2, "qkv_bias": bool(n(gen, 0, 1))}
    idx = torch.randint(0, cfg["vocab_size"], (2, n(gen, 4, 16)), generator=gen)
    targets = torch.randint(0, cfg["vocab_size"], idx.shape, generator=gen)
    try:
        runs = chain.scenario("steps.model_checkpointing", cfg, idx, targets, n(gen, 0, 2**30)).out
    except NotStarted as e:
        pytest.skip(f"the chain is not finished: {e.message}")
    plain, ckpt = runs["False"], runs["True"]
    what = f"your GPTModel (n_layers={cfg['n_layers']}, drop_rate=0.2, training) under use_gradient_checkpointing"
    oracle = "the same model and seed without checkpointing"
    assert_close(torch.tensor(ckpt["loss"]), torch.tensor(plain["loss"]), f"{what}: the loss", oracle=oracle, atol=1e-6, rtol=1e-5)
    assert_true(sorted(ckpt["grads"]) == sorted(plain["grads"]), f"{what}: other parameters got gradients than without checkpointing")
    for name, g in plain["grads"].items():
        assert_close(ckpt["grads"][name], g, f"{what}: the gradient of {name}", oracle=oracle, atol=1e-5, rtol=1e-4)
    assert_true(ckpt["saved_bytes"] < plain["saved_bytes"] / 2,
                f"{what}: the forward pass saved {ckpt['saved_bytes']:,} bytes for backward, against {plain['saved_bytes']:,} without "
                f"checkpointing: not every block is checkpointed")
