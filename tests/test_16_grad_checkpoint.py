"""Exercise 16: gradient checkpointing through the transformer blocks (``run_blocks``).

The scenario ``steps.run_blocks`` (tests/harness/parts/steps.py) builds an ``nn.Sequential`` of the
reference parts' ``TransformerBlock``s (dropout on, training mode) from parameters drawn here, calls
the learner's ``run_blocks(blocks, x, checkpointing=True)`` after ``torch.manual_seed(seed)`` under
a ``saved_tensors_hooks`` counter, and backpropagates ``grad_output``. It reports the output, the
gradients with respect to ``x`` and every parameter, the bytes of activations saved for backward
during the forward pass, and how often each block ran.

Oracle: the same blocks run plainly, ``blocks(x)``, after the same seed, in the grading process:
with the random state preserved across the recomputation, checkpointing changes neither the
output nor any gradient, only the memory.
"""

import torch
from harness.draw import n
from torch.utils.checkpoint import checkpoint

from harness.compare import Mistake, assert_close, assert_true
from harness.failures import Mismatch
from harness.impl import load_part as _load_part

EXERCISE = "16"
ORACLE = "blocks(x) without checkpointing after the same torch.manual_seed"
GRAD_ORACLE = "autograd through " + ORACLE

steps = _load_part("steps")
_block = _load_part("block")


def setup(gen, n_layers=None):
    heads = 2 ** n(gen, 0, 2)
    cfg = {"vocab_size": 11, "context_length": 16, "emb_dim": 8 * n(gen, 2, 4), "n_heads": heads,
           "n_layers": n_layers or n(gen, 2, 3), "drop_rate": 0.1 + 0.3 * float(torch.rand(1, generator=gen)),
           "qkv_bias": bool(n(gen, 0, 1)), "tie_weights": False}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(n(gen, 0, 2**31 - 1))
        blocks = torch.nn.Sequential(*(_block.TransformerBlock(cfg) for _ in range(cfg["n_layers"])))
        state = {k: v.detach().clone() for k, v in blocks.state_dict().items()}
    x = torch.randn(n(gen, 1, 3), n(gen, 4, 16), cfg["emb_dim"], generator=gen)
    grad_output = torch.randn(x.shape, generator=gen)
    return cfg, state, x, grad_output, n(gen, 0, 2**31 - 1)


def describe(cfg, x):
    return (f"run_blocks(blocks, x, checkpointing=True) on {cfg['n_layers']} TransformerBlocks (emb_dim={cfg['emb_dim']}, "
            f"drop_rate={cfg['drop_rate']:.2g}, training mode) with x of shape {tuple(x.shape)}")


def plain(cfg, state, x, grad_output, seed, run=None):
    """Output, gradients and saved bytes of ``run(blocks, x)`` (default ``blocks(x)``) after ``seed``."""
    blocks = steps.build_blocks(cfg, state)
    x = x.clone().requires_grad_(True)
    saved = steps.SavedBytes(blocks)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with saved.hooks():
            out = run(blocks, x) if run else blocks(x)
        out.backward(grad_output)
    return {"out": out.detach(), "x_grad": x.grad, "param_grads": {k: p.grad for k, p in blocks.named_parameters()},
            "saved_bytes": saved.total}


def without_rng_state(blocks, x):
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=False)
    return x


NO_RNG = ("the recomputation drew other dropout masks (preserve_rng_state=False)",
          "Keep checkpoint's default preserve_rng_state=True: the forward pass is recomputed in backward, and its dropout must "
          "draw the same masks as the first time, or the gradients belong to another network")


def test_checkpointed_blocks_match_the_plain_run(impl, gen):
    """Output, gradient with respect to x and gradients of every block parameter equal those of
    blocks(x) with dropout on and the same seed."""
    cfg, state, x, grad_output, seed = setup(gen)
    what = describe(cfg, x)
    res = impl.scenario("steps.run_blocks", cfg, state, x, grad_output, seed, True).out
    expected = plain(cfg, state, x, grad_output, seed)
    wrong = {}

    def mistake(key, name=None):
        def out():
            if not wrong:
                wrong.update(plain(cfg, state, x, grad_output, seed, without_rng_state))
            return wrong[key] if name is None else wrong[key][name]
        return [Mistake(*NO_RNG, out)]

    assert_close(res["out"], expected["out"], f"{what}: the output", oracle=ORACLE, atol=1e-5, rtol=1e-4)
    assert_true(res["x_grad"] is not None, f"{what}: x got no gradient: return the output of the last block, computed from x")
    assert_close(res["x_grad"], expected["x_grad"], f"{what}: the gradient with respect to x", oracle=GRAD_ORACLE,
                 atol=1e-5, rtol=1e-4, mistakes=mistake("x_grad"))
    for name, g in expected["param_grads"].items():
        got = res["param_grads"][name]
        if got is None:
            raise Mismatch(f"{what}: the parameter {name} got no gradient: every block must stay in the graph "
                           f"(checkpoint(block, x, use_reentrant=False) returns a tensor that backward reaches the block through)")
        assert_close(got, g, f"{what}: the gradient with respect to {name}", oracle=GRAD_ORACLE, atol=1e-5, rtol=1e-4,
                     mistakes=mistake("param_grads", name))


def test_checkpointing_saves_activation_memory(impl, gen):
    """The activations saved for backward during the forward pass (bytes of non-parameter tensors
    packed by autograd, counted with ``torch.autograd.graph.saved_tensors_hooks``) are at most a
    quarter of those of blocks(x): a checkpointed block keeps only its input (measured: about 4%).
    During backward one recomputed block at a time holds its activations (what bounds the peak
    memory of backward), and every block runs twice: once in the forward pass, once recomputed."""
    cfg, state, x, grad_output, seed = setup(gen, n_layers=n(gen, 2, 4))
    what = describe(cfg, x)
    res = impl.scenario("steps.run_blocks", cfg, state, x, grad_output, seed, True).out
    expected = plain(cfg, state, x, grad_output, seed)
    assert_close(res["out"], expected["out"], f"{what}: the output", oracle=ORACLE, atol=1e-5, rtol=1e-4)
    full, got = expected["saved_bytes"], res["saved_bytes"]
    first, later = res["forward_calls"], res["calls"]
    recomputed = [later[i] - first[i] for i in range(len(first))]
    if got > full / 4:
        if all(r == 0 for r in recomputed):
            hint = ("This looks like: the blocks are not checkpointed at all. With checkpointing=True run each block "
                    "through torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)")
        elif recomputed[0] and not all(recomputed[1:]):
            hint = ("This looks like: only the first block is checkpointed. Put every block through checkpoint(...): "
                    "for block in blocks: x = checkpoint(block, x, use_reentrant=False)")
        else:
            hint = "Checkpoint each block: for block in blocks: x = checkpoint(block, x, use_reentrant=False)"
        raise Mismatch(f"{what}: the forward pass saved {got:,} bytes of activations for backward, {100 * got / full:.0f}% of the "
                       f"{full:,} that blocks(x) saves; checkpointing keeps only each block's input (at most 25% here). {hint}")
    peak = res["peak_recomputed"]
    if peak > 1:
        raise Mismatch(f"{what}: during backward {peak} blocks were recomputed before the first of them had its own backward, "
                       f"so their activations were all held at once: the peak memory of backward is that of no checkpointing.\n"
                       "This looks like: one checkpoint around several blocks (checkpoint(blocks, x)). It saves memory in the forward "
                       "pass only. Give each block its own: for block in blocks: x = checkpoint(block, x, use_reentrant=False)")
    not_recomputed = [i for i, r in enumerate(recomputed) if r != 1]
    assert_true(not not_recomputed, f"{what}: block {not_recomputed[0] if not_recomputed else ''} ran {first} times in the forward "
                                    f"pass and {recomputed} times more in backward (per block); with checkpointing each block runs once "
                                    f"in each: checkpoint(block, x, use_reentrant=False) for every block")
