"""Exercise 20: SwiGLU, the gated feed-forward of Llama, Qwen3 and Mistral.

Oracles: ``torch.nn.functional.silu`` for ``silu``, and ``F.linear(F.silu(F.linear(x, W_gate)) *
F.linear(x, W_up), W_down)`` with autograd for the module, on fresh random shapes and weights.
The worker refuses ``F.silu``, ``nn.SiLU`` and GLU to the learner's code.
"""

import torch
import torch.nn.functional as F

from harness.compare import Mistake, assert_close, assert_close_alone, assert_gradients_close, assert_true, autograd_through
from harness.draw import n

EXERCISE = "20"


def sizes(gen):
    emb = n(gen, 2, 24)
    return emb, n(gen, emb, 3 * emb)


def weights(gen, emb, hidden):
    return {"gate.weight": torch.randn(hidden, emb, generator=gen) / emb ** 0.5,
            "up.weight": torch.randn(hidden, emb, generator=gen) / emb ** 0.5,
            "down.weight": torch.randn(emb, hidden, generator=gen) / hidden ** 0.5}


def inputs(gen, emb):
    lead = [n(gen, 1, 4) for _ in range(n(gen, 1, 2))]
    return torch.randn(*lead, emb, generator=gen) * 2


def swiglu(x, p):
    return F.linear(F.silu(F.linear(x, p["gate.weight"])) * F.linear(x, p["up.weight"]), p["down.weight"])


def mistakes(x, p):
    x = x.double()
    p = {k: v.double() for k, v in p.items()}
    g, u, wd = F.linear(x, p["gate.weight"]), F.linear(x, p["up.weight"]), p["down.weight"]
    return [
        Mistake("SiLU on the up projection instead of the gate", "Only the gate goes through SiLU: silu(self.gate(x)) * self.up(x).",
                lambda: F.linear(g * F.silu(u), wd)),
        Mistake("a sigmoid gate (GLU), not SiLU", "SiLU is z * sigmoid(z), not sigmoid(z) alone.",
                lambda: F.linear(torch.sigmoid(g) * u, wd)),
        Mistake("GELU instead of SiLU", "Llama's gate is SiLU: z * sigmoid(z).", lambda: F.linear(F.gelu(g) * u, wd)),
        Mistake("the gate added to the up projection, not multiplied", "The gate scales each hidden unit: a product, not a sum.",
                lambda: F.linear(F.silu(g) + u, wd)),
        Mistake("SiLU applied after the product", "Apply SiLU to the gate alone, then multiply by up(x).",
                lambda: F.linear(F.silu(g * u), wd)),
        Mistake("ReLU instead of SiLU", "Llama's gate is SiLU: z * sigmoid(z).", lambda: F.linear(F.relu(g) * u, wd)),
        Mistake("no activation on the gate", "The gate goes through SiLU: silu(self.gate(x)) * self.up(x).",
                lambda: F.linear(g * u, wd)),
        Mistake("SiLU on both projections", "Only the gate goes through SiLU; up(x) stays linear.",
                lambda: F.linear(F.silu(g) * F.silu(u), wd)),
        Mistake("the up projection left out: silu(up(x)) alone", "Two projections meet: silu(self.gate(x)) * self.up(x).",
                lambda: F.linear(F.silu(u), wd)),
        Mistake("the up projection left out: silu(gate(x)) alone", "Multiply by the up projection: silu(self.gate(x)) * "
                "self.up(x).", lambda: F.linear(F.silu(g), wd)),
        Mistake("the gate projection used twice, the up projection never: silu(gate(x)) * gate(x)",
                "The product's second factor is self.up(x).", lambda: F.linear(F.silu(g) * g, wd)),
        Mistake("the up projection used twice, the gate never: silu(up(x)) * up(x)",
                "SiLU goes on self.gate(x); the product's second factor is self.up(x).", lambda: F.linear(F.silu(u) * u, wd)),
        Mistake("the residual x added inside the feed-forward", "Return self.down(hidden) alone: the block adds the shortcut "
                "around the whole feed-forward.", lambda: F.linear(F.silu(g) * u, wd) + x),
    ]


def test_silu_matches_builtin(impl, gen):
    x = torch.randn(n(gen, 1, 5), n(gen, 1, 40), generator=gen) * 4
    assert_close_alone(impl.call("swiglu.silu", x).out, F.silu(x), f"silu(x) for x of shape {tuple(x.shape)}", oracle="F.silu",
                 mistakes=[Mistake("the sigmoid alone", "SiLU multiplies: x * torch.sigmoid(x).", lambda: torch.sigmoid(x)),
                           Mistake("GELU", "SiLU is x * sigmoid(x), not GELU.", lambda: F.gelu(x)),
                           Mistake("GELU's sigmoid approximation, x * sigmoid(1.702 x)", "SiLU is x * sigmoid(x), no factor.",
                                   lambda: x * torch.sigmoid(1.702 * x)),
                           Mistake("the sign of the exponent flipped: x * sigmoid(-x)", "sigmoid(x) = 1 / (1 + exp(-x)).",
                                   lambda: x * torch.sigmoid(-x)),
                           Mistake("tanh instead of the sigmoid", "SiLU is x * sigmoid(x); x * tanh(x) is another function.",
                                   lambda: x * torch.tanh(x)),
                           Mistake("ReLU", "SiLU is x * sigmoid(x), smooth and slightly negative below 0.", lambda: F.relu(x))])
    half = x.to(torch.bfloat16)  # the docstring: the output keeps x's dtype (Llama runs in bfloat16)
    got = impl.call("swiglu.silu", half).out
    assert_close(got, F.silu(half.float()).to(torch.bfloat16), f"silu(x) for bfloat16 x of shape {tuple(x.shape)}",
                 oracle="F.silu in float32, rounded to bfloat16", atol=1e-2, rtol=1e-2)


def test_swiglu_layers_are_named_and_shaped(impl, gen):
    emb, hidden = sizes(gen)
    res = impl.module("swiglu.SwiGLU", inputs(gen, emb), init_args=(emb, hidden))
    want = {"gate.weight": (hidden, emb), "up.weight": (hidden, emb), "down.weight": (emb, hidden)}
    got = {k: tuple(v.shape) for k, v in res.initial.items()}
    biases = sorted(k for k in got if k.endswith("bias"))
    assert_true(not biases, f"SwiGLU({emb}, {hidden}) has the biases {', '.join(biases)}: Llama's projections have none (bias=False)")
    assert_true(got == want, f"SwiGLU({emb}, {hidden}) has the parameters {got}; expected {want}")


def test_swiglu_matches_oracle(impl, gen):
    emb, hidden = sizes(gen)
    x, p = inputs(gen, emb), weights(gen, emb, hidden)
    res = impl.module("swiglu.SwiGLU", x, init_args=(emb, hidden), params=p)
    assert_close_alone(res.out, swiglu(x, p), f"SwiGLU({emb}, {hidden}) on x of shape {tuple(x.shape)}",
                 oracle="down(F.silu(gate(x)) * up(x))", mistakes=mistakes(x, p))


def test_swiglu_backward_matches_autograd(impl, gen):
    emb, hidden = sizes(gen)
    x, p = inputs(gen, emb), weights(gen, emb, hidden)
    g = torch.randn(*x.shape[:-1], emb, generator=gen)
    res = impl.module("swiglu.SwiGLU", x, init_args=(emb, hidden), params=p, grad_output=g, grad_wrt=(0,))
    out, x_grad, param_grads = autograd_through(swiglu, x, p, g)
    assert_close_alone(res.out, out, f"SwiGLU({emb}, {hidden})", oracle="down(F.silu(gate(x)) * up(x))", mistakes=mistakes(x, p))
    assert_gradients_close(res, x_grad, param_grads)
