"""Exercise 19: RMSNorm, the normalisation of Llama, Qwen3 and Gemma.

Oracle: PyTorch's own ``torch.nn.functional.rms_norm`` (and its autograd), with the weight applied
as ``1 + weight`` for Gemma's offset, on fresh random shapes and values in float32 and bfloat16;
for bfloat16 the exact result (float64 on the same bf16 values). The worker refuses the built-in
to the learner's code.
"""

import torch
import torch.nn.functional as F

from harness.compare import Mistake, assert_close_alone, assert_true
from harness.draw import n

EXERCISE = "19"

BF16 = {"atol": 3e-2, "rtol": 3e-2}


def inputs(gen, scale: float = 1.0, min_dim: int = 3):
    lead = [n(gen, 1, 4) for _ in range(n(gen, 1, 3))]
    d = n(gen, min_dim, 48)  # three features at least: with two, a pair of opposite signs makes several mistakes look alike
    # a common offset too: RMSNorm must not subtract the mean, and a mean far from 0 shows it
    x = (torch.randn(*lead, d, generator=gen) * (1 + 3 * torch.rand(1, generator=gen)) + 2 * torch.randn(1, generator=gen)) * scale
    weight = torch.randn(d, generator=gen) * 0.5 + 1
    return x, weight


def oracle(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: bool = False) -> torch.Tensor:
    return F.rms_norm(x.double(), (x.size(-1),), (1 + weight.double()) if offset else weight.double(), eps=eps)


def mistakes(x, weight, eps, offset=False):
    x, w = x.double(), weight.double()
    scale = (1 + w) if offset else w
    ms = x.pow(2).mean(-1, keepdim=True)
    return [
        Mistake("the mean was subtracted (that is LayerNorm, not RMSNorm)",
                "RMSNorm divides x itself by sqrt(mean(x ** 2) + eps): no x - mean.",
                lambda: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * scale),
        Mistake("eps outside the square root", "Divide by sqrt(mean(x ** 2) + eps), not sqrt(mean(x ** 2)) + eps.",
                lambda: x / (torch.sqrt(ms) + eps) * scale),
        Mistake("the root is missing: divided by the mean of squares", "Divide by its square root: torch.rsqrt(ms + eps).",
                lambda: x / (ms + eps) * scale),
        Mistake("the root taken twice: divided by the square root of the root mean square",
                "One square root: x * torch.rsqrt(mean(x ** 2) + eps).", lambda: x * torch.rsqrt(ms.sqrt() + eps) * scale),
        Mistake("Gemma's offset: the weight applied as it is", "With offset=True the weight is stored as w and applied as 1 + w.",
                lambda: x * torch.rsqrt(ms + eps) * w),
        Mistake("the offset applied without offset=True", "Only Gemma's convention (offset=True) adds 1: Llama and Qwen3 multiply by the weight.",
                lambda: x * torch.rsqrt(ms + eps) * (1 + w)),
        Mistake("the weight is not applied", "Multiply the normalised x by the weight (or 1 + weight).",
                lambda: x * torch.rsqrt(ms + eps)),
        Mistake("the sum of squares, not their mean", "Average the squares: x.pow(2).mean(-1, keepdim=True).",
                lambda: x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps) * scale),
        Mistake("the squares summed and divided by d - 1", "RMSNorm takes the plain mean of the squares: .mean(-1), no d - 1.",
                lambda: x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) / (x.size(-1) - 1) + eps) * scale),
        Mistake("eps left out", "Add eps to the mean of squares, inside the root: torch.rsqrt(ms + eps).",
                lambda: x * torch.rsqrt(ms) * scale),
        Mistake("divided by the standard deviation, not the root mean square", "RMSNorm takes no mean at all: divide by "
                "sqrt(mean(x ** 2) + eps), not by sqrt(var(x) + eps).",
                lambda: x / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * scale),
        Mistake("multiplied by the root mean square instead of divided", "Divide: x * torch.rsqrt(ms + eps).",
                lambda: x * torch.sqrt(ms + eps) * scale),
        Mistake("the weight added, not multiplied", "Scale the normalised x: y * weight.",
                lambda: x * torch.rsqrt(ms + eps) + scale),
        Mistake("the mean of squares over the whole tensor, not each vector", "Average over the last dimension only: "
                "x.pow(2).mean(dim=-1, keepdim=True).", lambda: x * torch.rsqrt(x.pow(2).mean() + eps) * scale),
    ] + [Mistake("the mean of squares over the wrong dimension", f"Average over the last dimension (dim=-1), not dim={axis}, "
                 "with keepdim=True.", lambda axis=axis: x * torch.rsqrt(x.pow(2).mean(axis, keepdim=True) + eps) * scale)
         for axis in range(x.dim() - 1)]


def describe(x, eps, offset=False):
    return f"RMSNorm({x.size(-1)}, eps={eps:.3g}{', offset=True' if offset else ''}) on x of shape {tuple(x.shape)}"


def test_rmsnorm_weight_starts_at_ones_or_zeros_with_offset(impl, gen):
    d = n(gen, 2, 64)
    x = torch.randn(2, d, generator=gen)
    for offset, fill in ((False, 1.0), (True, 0.0)):
        res = impl.module("rmsnorm.RMSNorm", x, init_args=(d,), init_kwargs={"offset": offset})
        assert_true("weight" in res.initial, f"RMSNorm({d}, offset={offset}) has no parameter `weight`; its parameters are: "
                                             f"{', '.join(res.initial) or 'none'}")
        assert_true(len(res.initial) == 1, f"RMSNorm({d}) has the parameters {', '.join(res.initial)}; it has one, `weight` "
                                           "(no shift: only LayerNorm has one)")
        assert_close_alone(res.initial["weight"], torch.full((d,), fill), f"RMSNorm({d}, offset={offset}).weight as built",
                     oracle=f"torch.full(({d},), {fill}): {'Gemma stores w, applied as 1 + w' if offset else 'ones'}",
                     mistakes=[Mistake(f"the weight starts at {'ones with' if offset else 'zeros without'} offset",
                                       "It starts where it changes nothing: zeros with offset (applied as 1 + w), else ones.",
                                       lambda fill=fill: torch.full((d,), 1 - fill))])


def test_rmsnorm_matches_builtin(impl, gen):
    x, weight = inputs(gen)
    eps = [1e-5, 1e-6][n(gen, 0, 1)]
    res = impl.module("rmsnorm.RMSNorm", x, init_args=(x.size(-1),), init_kwargs={"eps": eps}, params={"weight": weight})
    assert_close_alone(res.out, oracle(x, weight, eps).float(), describe(x, eps), oracle="F.rms_norm", mistakes=mistakes(x, weight, eps))


def test_rmsnorm_eps_inside_the_root(impl, gen):
    x, weight = inputs(gen, scale=1e-2)  # mean of squares ~ 1e-4: where eps goes matters
    eps = float(torch.empty(1).uniform_(1e-4, 1e-3, generator=gen))
    res = impl.module("rmsnorm.RMSNorm", x, init_args=(x.size(-1),), init_kwargs={"eps": eps}, params={"weight": weight})
    assert_close_alone(res.out, oracle(x, weight, eps).float(), describe(x, eps) + " of mean square ~1e-4", oracle="F.rms_norm",
                 mistakes=mistakes(x, weight, eps))


def test_rmsnorm_gemma_offset(impl, gen):
    x, weight = inputs(gen)
    weight = weight - 1  # stored as w, near 0
    eps = 1e-6
    res = impl.module("rmsnorm.RMSNorm", x, init_args=(x.size(-1),), init_kwargs={"offset": True}, params={"weight": weight})
    assert_close_alone(res.out, oracle(x, weight, eps, offset=True).float(), describe(x, eps, offset=True),
                 oracle="F.rms_norm with the weight 1 + w", mistakes=mistakes(x, weight, eps, offset=True))


def test_rmsnorm_backward_matches_autograd(impl, gen):
    x, weight = inputs(gen)
    offset = bool(n(gen, 0, 1))
    if offset:
        weight = weight - 1
    g = torch.randn(x.shape, generator=gen)
    res = impl.module("rmsnorm.RMSNorm", x, init_args=(x.size(-1),), init_kwargs={"offset": offset}, params={"weight": weight},
                      grad_output=g, grad_wrt=(0,))
    xx, w = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    F.rms_norm(xx, (x.size(-1),), (1 + w) if offset else w, eps=1e-6).backward(g)
    assert_close_alone(res.out, oracle(x, weight, 1e-6, offset).float(), describe(x, 1e-6, offset), oracle="F.rms_norm",
                 mistakes=mistakes(x, weight, 1e-6, offset))
    assert_close_alone(res.grad(0), xx.grad, "the gradient with respect to x", oracle="F.rms_norm's backward", atol=1e-4, rtol=1e-3)
    assert_true("weight" in res.param_grads, "RMSNorm has no parameter `weight`")
    assert_close_alone(res.param_grads["weight"], w.grad, "the gradient with respect to weight", oracle="F.rms_norm's backward", atol=1e-4, rtol=1e-3)


def test_rmsnorm_bfloat16_statistics_in_float32(impl, gen):
    """Values near 100 in bfloat16: one rounding of the result (float32 statistics) stays within
    2^-8 of the exact value; squares, a mean and a root each rounded to bf16 drift to about 1%."""
    d = n(gen, 32, 64)
    x = (torch.randn(4, 8, d, generator=gen) * 2 + 100).bfloat16()
    weight = (torch.randn(d, generator=gen) * 0.5 + 1).bfloat16().float()
    res = impl.module("rmsnorm.RMSNorm", x, init_args=(d,), params={"weight": weight}, dtype=torch.bfloat16)
    assert_true(res.out.dtype == torch.bfloat16, f"RMSNorm on bfloat16 input returned {res.out.dtype}: return the input's dtype "
                                                  "(compute in float32, then .to(x.dtype))")

    def in_bf16():
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return (y * weight.bfloat16()).double()

    assert_close_alone(res.out.double(), oracle(x.float(), weight, 1e-6), describe(x, 1e-6) + " in bfloat16, values near 100",
                 oracle="the exact RMSNorm of the same bf16 values", check_dtype=False, rtol=5.5e-3, atol=1e-4,
                 mistakes=[Mistake("the statistics computed in bfloat16", "Square, average and take the root in float32: "
                                   "xf = x.float() first, and cast the result back with .to(x.dtype).", in_bf16)])
