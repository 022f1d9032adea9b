"""Exercise 02: LayerNorm and GELU from first principles.

Oracles: ``torch.nn.functional.layer_norm`` (with autograd) and
``torch.nn.functional.gelu(approximate="tanh")``, on fresh random inputs in float32 and bfloat16;
a committed snapshot in reference/02_layernorm.npz.
"""

import math

import torch
import torch.nn.functional as F

from harness.compare import Mistake, assert_close, assert_true
from harness.draw import n
from harness.reference import load_reference

EXERCISE = "02"

BF16 = {"atol": 5e-2, "rtol": 5e-2}


def inputs(gen, dtype=torch.float32, min_dim=2):
    lead = [n(gen, 1, 4) for _ in range(n(gen, 1, 3))]
    d = n(gen, min_dim, 48)
    x = torch.randn(*lead, d, generator=gen) * (1 + 3 * torch.rand(1, generator=gen)) + torch.randn(1, generator=gen)
    scale = torch.randn(d, generator=gen) * 0.5 + 1
    shift = torch.randn(d, generator=gen) * 0.5
    return x.to(dtype), scale, shift


def layernorm_mistakes(x, scale, shift, eps):
    x, d = x.double(), x.size(-1)
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    affine = lambda y: y * scale.double() + shift.double()  # noqa: E731
    return [
        Mistake("unbiased variance (divided by n - 1)", "LayerNorm uses the biased variance: x.var(dim=-1, keepdim=True, unbiased=False).",
                lambda: affine((x - mean) / torch.sqrt(x.var(-1, keepdim=True, unbiased=True) + eps))),
        Mistake("eps outside the square root", "Divide by torch.sqrt(var + eps), not torch.sqrt(var) + eps.",
                lambda: affine((x - mean) / (torch.sqrt(var) + eps))),
        Mistake("the standard deviation is missing its square root", "Divide by sqrt(var + eps), not by var + eps.",
                lambda: affine((x - mean) / (var + eps))),
        Mistake("scale and shift are not applied", "Multiply by self.scale and add self.shift after normalising.",
                lambda: (x - mean) / torch.sqrt(var + eps)),
        Mistake("statistics over the wrong dimension", "Take mean and variance over the last dimension (dim=-1, keepdim=True).",
                lambda: affine((x - x.mean(0, keepdim=True)) / torch.sqrt(x.var(0, keepdim=True, unbiased=False) + eps))),
    ]


def gelu_mistakes(x):
    return [
        Mistake("the exact (erf) GELU instead of the tanh approximation", "Use 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))).",
                lambda: F.gelu(x.double())),
        Mistake("the sigmoid approximation x * sigmoid(1.702 x)", "Use the tanh approximation of GPT-2.",
                lambda: x.double() * torch.sigmoid(1.702 * x.double())),
        Mistake("the cubic term is missing", "The argument of tanh is sqrt(2 / pi) * (x + 0.044715 * x**3).",
                lambda: 0.5 * x.double() * (1 + torch.tanh(math.sqrt(2 / math.pi) * x.double()))),
    ]


# ----------------------------------------------------------------------------------- LayerNorm


def test_layernorm_parameters_start_at_ones_and_zeros(impl, gen):
    d = n(gen, 2, 64)
    x = torch.randn(2, d, generator=gen)
    res = impl.module("layers.LayerNorm", x, init_args=(d,))
    for name, fill in (("scale", 1.0), ("shift", 0.0)):
        assert_true(name in res.initial, f"LayerNorm({d}) has no parameter `{name}`; its parameters are: {', '.join(res.initial) or 'none'}")
        assert_close(res.initial[name], torch.full((d,), fill), f"LayerNorm({d}).{name} as built", oracle=f"torch.full(({d},), {fill})")


def test_layernorm_forward_matches_builtin(impl, gen):
    x, scale, shift = inputs(gen)
    d = x.size(-1)
    res = impl.module("layers.LayerNorm", x, init_args=(d,), params={"scale": scale, "shift": shift})
    assert_close(res.out, F.layer_norm(x, (d,), scale, shift, eps=1e-5), f"LayerNorm on x of shape {tuple(x.shape)}",
                 oracle="F.layer_norm", mistakes=layernorm_mistakes(x, scale, shift, 1e-5))


def test_layernorm_eps_inside_the_root(impl, gen):
    x, scale, shift = inputs(gen)
    d = x.size(-1)
    x = x * 1e-2  # variance ~ eps: where eps goes matters
    eps = float(torch.empty(1).uniform_(1e-4, 1e-3, generator=gen))
    res = impl.module("layers.LayerNorm", x, init_args=(d,), init_kwargs={"eps": eps}, params={"scale": scale, "shift": shift})
    assert_close(res.out, F.layer_norm(x, (d,), scale, shift, eps=eps), f"LayerNorm({d}, eps={eps:.3g}) on inputs of variance ~1e-4",
                 oracle="F.layer_norm", mistakes=layernorm_mistakes(x, scale, shift, eps))


def test_layernorm_backward_matches_builtin(impl, gen):
    x, scale, shift = inputs(gen)
    d = x.size(-1)
    g = torch.randn(x.shape, generator=gen)
    res = impl.module("layers.LayerNorm", x, init_args=(d,), params={"scale": scale, "shift": shift}, grad_output=g, grad_wrt=(0,))
    xx, w, b = (t.clone().requires_grad_(True) for t in (x, scale, shift))
    F.layer_norm(xx, (d,), w, b).backward(g)
    assert_close(res.out, F.layer_norm(x, (d,), scale, shift), "the output", oracle="F.layer_norm", mistakes=layernorm_mistakes(x, scale, shift, 1e-5))
    assert_close(res.grad(0), xx.grad, "the gradient with respect to x", oracle="F.layer_norm's backward", atol=1e-4, rtol=1e-3)
    for name, ref in (("scale", w), ("shift", b)):
        assert_true(name in res.param_grads, f"LayerNorm has no parameter `{name}`")
        assert_close(res.param_grads[name], ref.grad, f"the gradient with respect to {name}", oracle="F.layer_norm's backward", atol=1e-4, rtol=1e-3)


def test_layernorm_bfloat16(impl, gen):
    # At least 8 features: over 2 or 3 features, bf16 rounding alone can flip the gradient's sign
    # (even the built-in's bf16 backward is off by more than the gradient there).
    x, scale, shift = inputs(gen, torch.bfloat16, min_dim=8)
    d = x.size(-1)
    g = torch.randn(x.shape, generator=gen).bfloat16()
    res = impl.module("layers.LayerNorm", x, init_args=(d,), params={"scale": scale, "shift": shift}, dtype=torch.bfloat16,
                      grad_output=g, grad_wrt=(0,))
    y = F.layer_norm(x, (d,), scale.bfloat16(), shift.bfloat16())
    assert_close(res.out, y, "the bf16 output", oracle="F.layer_norm in bfloat16", **BF16,
                 mistakes=layernorm_mistakes(x.float(), scale, shift, 1e-5))
    # The gradient's oracle is the exact one (float64 on the same bf16 values): the built-in's own
    # bf16 backward is itself off by a few percent of the largest gradient.
    x64 = x.double().requires_grad_(True)
    F.layer_norm(x64, (d,), scale.bfloat16().double(), shift.bfloat16().double()).backward(g.double())
    atol = 0.05 * float(x64.grad.abs().max()) + 0.02
    assert_close(res.grad(0), x64.grad, "the bf16 gradient with respect to x", oracle="F.layer_norm's backward in float64 on the same bf16 values",
                 atol=atol, rtol=1e-1, check_dtype=False)


def test_layernorm_bfloat16_statistics_keep_a_large_mean(impl, gen):
    """bf16 inputs far from zero (100 + N(0, 1)): in bf16 the mean is off by up to 0.25 and the
    variance by more, so the statistics must be computed in float32."""
    x, scale, shift = inputs(gen, torch.float32, min_dim=8)
    x = (100 + (x - x.mean()) / x.std()).bfloat16()
    d, eps = x.size(-1), 1e-5
    res = impl.module("layers.LayerNorm", x, init_args=(d,), params={"scale": scale, "shift": shift}, dtype=torch.bfloat16)
    scale16, shift16 = scale.bfloat16(), shift.bfloat16()

    def in_bf16():
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + eps) * scale16 + shift16

    assert_close(res.out, F.layer_norm(x, (d,), scale16, shift16, eps), f"the bf16 output for bf16 x of shape {tuple(x.shape)} "
                 "with values near 100", oracle="F.layer_norm in bfloat16 (it computes the statistics in float32)", **BF16,
                 mistakes=[Mistake("the mean and variance computed in bfloat16",
                                   "Compute the statistics in float32: xf = x.float(), normalise xf, then cast the result back with "
                                   ".to(x.dtype). bfloat16 keeps 8 bits of mantissa: near 100 its steps are 0.5 apart.", in_bf16)]
                 + layernorm_mistakes(x.float(), scale, shift, eps))


# ----------------------------------------------------------------------------------- GELU


def gelu_input(gen, dtype=torch.float32):
    shape = [n(gen, 1, 5) for _ in range(n(gen, 1, 3))]
    shape[-1] += 25
    x = torch.randn(shape, generator=gen) * 4
    # a sweep of [-6, 6], where the approximations differ by up to 5e-4, and the tails (-> 0, -> x)
    x.view(-1)[:25] = torch.linspace(-6, 6, 25)[torch.randperm(25, generator=gen)]
    x.view(-1)[-1], x.view(-1)[-2] = -12.0, 12.0
    return x.to(dtype)


def test_gelu_matches_builtin(impl, gen):
    x = gelu_input(gen)
    got = impl.call("layers.gelu", x).out
    assert_close(got, F.gelu(x, approximate="tanh"), f"gelu(x) for x of shape {tuple(x.shape)}", oracle='F.gelu(approximate="tanh")',
                 mistakes=gelu_mistakes(x))


def test_gelu_backward_matches_builtin(impl, gen):
    x = gelu_input(gen)
    g = torch.randn(x.shape, generator=gen)
    res = impl.call("layers.gelu", x, grad_output=g, grad_wrt=(0,))
    xx = x.clone().requires_grad_(True)
    F.gelu(xx, approximate="tanh").backward(g)
    assert_close(res.out, F.gelu(x, approximate="tanh"), "the output", oracle='F.gelu(approximate="tanh")', mistakes=gelu_mistakes(x))
    assert_close(res.grad(0), xx.grad, "the gradient with respect to x", oracle='F.gelu(approximate="tanh")\'s backward', atol=1e-5, rtol=1e-4)


def test_gelu_bfloat16(impl, gen):
    x = gelu_input(gen, torch.bfloat16)
    got = impl.call("layers.gelu", x).out
    assert_close(got, F.gelu(x, approximate="tanh"), "gelu(x) for bf16 x", oracle='F.gelu(approximate="tanh") in bfloat16', **BF16,
                 mistakes=gelu_mistakes(x.float()))


def test_gelu_module(impl, gen):
    x = gelu_input(gen)
    got = impl.module("layers.GELU", x).out
    assert_close(got, F.gelu(x, approximate="tanh"), "GELU()(x)", oracle='F.gelu(approximate="tanh")', mistakes=gelu_mistakes(x))


def test_layernorm_and_gelu_known_answer(impl, gen):
    """The committed cases, shuffled afresh each run (rows, features with their scale and shift,
    GELU's points), so that no output can be looked up by its input."""
    ref = load_reference("02_layernorm")
    for dtype, tol in ((torch.float32, {}), (torch.bfloat16, BF16)):
        key = str(dtype).removeprefix("torch.")
        t = {k.split("/", 1)[1]: torch.from_numpy(v).to(dtype) for k, v in ref.items() if k.startswith(key + "/")}
        x, y = t["x"].reshape(-1, t["x"].size(-1)), t["layer_norm"].reshape(-1, t["x"].size(-1))
        rows, feats = torch.randperm(x.size(0), generator=gen), torch.randperm(x.size(1), generator=gen)
        x, y = x[rows][:, feats], y[rows][:, feats]
        scale, shift = t["scale"][feats].float(), t["shift"][feats].float()
        res = impl.module("layers.LayerNorm", x, init_args=(x.size(-1),), params={"scale": scale, "shift": shift}, dtype=dtype)
        assert_close(res.out, y, f"LayerNorm on the committed {key} case (shuffled)", oracle="reference/02_layernorm.npz", **tol)
        points = torch.randperm(t["gelu_x"].numel(), generator=gen)
        got = impl.call("layers.gelu", t["gelu_x"][points]).out
        assert_close(got, t["gelu"][points], f"gelu on the committed {key} case (shuffled)", oracle="reference/02_layernorm.npz", **tol)
