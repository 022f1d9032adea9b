"""Exercise 21: rotary position embeddings (RoPE), half-split as Llama and Hugging Face pair features.

Oracle: written here in another form than the solution's: each pair ``(x[i], x[i + d/2])`` as the
complex number ``x[i] + j x[i + d/2]``, multiplied by ``exp(j * position * theta ** (-2i/d))``, in
float64, on fresh random shapes, positions and thetas. ``apply_rope`` is checked with the oracle's
cosines and sines, so a mistake in ``rope_cos_sin`` costs only its own checks. Llama 3.1's
frequency scaling is checked against transformers' own (reference/21_llama3_rope.npz) and against
``gpt_oracle.llama3_inv_freq``, the same rule written as one clamped blend, on random scalings.
"""

import torch
from gpt_oracle import llama3_inv_freq
from gpt_oracle import rope_angles as angles
from gpt_oracle import rope_inv_freq as inv_freq
from gpt_oracle import rope_rotate as rotate

from harness.compare import Mistake, assert_close_alone, assert_true, expect_value_error
from harness.draw import n
from harness.reference import load_reference

EXERCISE = "21"


def cos_sin(d: int, positions: torch.Tensor, theta: float, scaling=None):
    a = angles(d, positions, theta, scaling)
    a = torch.cat([a, a], dim=-1)
    return a.cos(), a.sin()


def case(gen):
    d = 2 * n(gen, 1, 16)
    seq = n(gen, 1, 12)
    x = torch.randn(n(gen, 1, 2), n(gen, 1, 3), seq, d, generator=gen)
    theta = [10_000.0, 500_000.0, 1_000_000.0][n(gen, 0, 2)]
    return x, theta


def test_rope_frequencies(impl, gen):
    d, theta = 2 * n(gen, 1, 64), [10_000.0, 500_000.0][n(gen, 0, 1)]
    got = impl.call("rope.rope_frequencies", d, theta).out
    i = torch.arange(0, d // 2, dtype=torch.float64)
    assert_close_alone(got, inv_freq(d, theta).float(), f"rope_frequencies({d}, theta={theta:g})", oracle="theta ** (-2i / head_dim)",
                 rtol=1e-5, atol=1e-7,
                 mistakes=[Mistake("the exponent is i / head_dim, not 2i / head_dim", "Pair i turns at theta ** (-2 * i / head_dim): "
                                   "torch.arange(0, head_dim, 2) / head_dim.", lambda: theta ** (-i / d)),
                           Mistake("theta ** (2i / head_dim): the frequencies grow instead of shrinking", "Take the inverse: theta ** -(2i / head_dim).",
                                   lambda: theta ** (i * 2 / d))])
    expect_value_error(lambda: impl.call("rope.rope_frequencies", d + 1, theta, returns="data"), f"rope_frequencies({d + 1})",
                       why=": features rotate in pairs, so head_dim must be even")


def test_rope_cos_sin_at_absolute_positions(impl, gen):
    d, start, seq = 2 * n(gen, 1, 16), n(gen, 0, 200), n(gen, 1, 10)
    theta = [10_000.0, 500_000.0][n(gen, 0, 1)]
    positions = torch.arange(start, start + seq)
    like = torch.randn(1, 1, seq, d, generator=gen)
    res = impl.call("rope.rope_cos_sin", like, positions, theta, returns="data").out
    assert_true(isinstance(res, (tuple, list)) and len(res) == 2, f"rope_cos_sin returned {type(res).__name__}; expected (cos, sin)")
    cos, sin = res
    want_cos, want_sin = cos_sin(d, positions, theta)
    from_zero = cos_sin(d, torch.arange(seq), theta)
    what = f"rope_cos_sin(x with head_dim {d}, positions {start} .. {start + seq - 1}, theta={theta:g})"
    for name, got, want, zero in (("cos", cos, want_cos, from_zero[0]), ("sin", sin, want_sin, from_zero[1])):
        assert_true(isinstance(got, torch.Tensor), f"{what}: its {name} is a {type(got).__name__}; expected a tensor")
        assert_close_alone(got, want.float(), f"{what}: the {name}", oracle="cos/sin of positions * theta ** (-2i / head_dim), both halves",
                     rtol=1e-4, atol=1e-4,
                     mistakes=[Mistake("the positions start at 0, not at the ones given", "Use positions as given: a cached decode "
                                       "passes start .. start + n - 1.", lambda z=zero: z.float()),
                               Mistake("cos and sin swapped", "Return (cos, sin), in that order: angles.cos(), angles.sin().",
                                       lambda other=(want_sin if name == "cos" else want_cos): other.float()),
                               *[Mistake("the positions off by one", "Token t sits at positions[t] exactly: angles = positions[:, None] "
                                         "* inv_freq[None, :].", lambda s=s, name=name: cos_sin(d, positions + s, theta)[name == "sin"].float())
                                 for s in (-1, 1)],
                               Mistake("the halves interleaved, not repeated", "Repeat the angles: torch.cat([angles, angles], -1), "
                                       "so that features i and i + head_dim / 2 share an angle.",
                                       lambda w=want: torch.stack([w[:, : d // 2], w[:, : d // 2]], -1).flatten(-2).float())])


def test_rope_angles_stay_float32_in_bfloat16(impl, gen):
    d, start, seq = 2 * n(gen, 4, 16), n(gen, 4000, 8000), n(gen, 2, 8)
    positions = torch.arange(start, start + seq)
    like = torch.randn(1, 1, seq, d, generator=gen).bfloat16()
    cos, sin = impl.call("rope.rope_cos_sin", like, positions, 500_000.0, returns="data").out
    want_cos, want_sin = cos_sin(d, positions, 500_000.0)
    assert_true(cos.dtype == torch.bfloat16 and sin.dtype == torch.bfloat16,
                f"rope_cos_sin(bf16 x, ...) returned {cos.dtype} and {sin.dtype}; cast the cosines and sines to x's dtype")
    for index, (name, got, want) in enumerate((("cos", cos, want_cos), ("sin", sin, want_sin))):
        assert_close_alone(got.float(), want.float(), f"rope_cos_sin(bf16 x with head_dim {d}, positions {start} .. {start + seq - 1}): the {name}",
                     oracle="the float64 angles, rounded once to bf16", check_dtype=False, rtol=0, atol=1e-2,
                     mistakes=bf16_angle_mistakes(d, positions, 500_000.0, index),
                     context="At positions in the thousands a bf16 angle is off by radians: compute the angles in float32 and cast "
                             "only the cosines and sines to x's dtype.")


BF16_ANGLES = ("the angles computed in bfloat16", "Compute positions * inv_freq in float32 (positions.float(), float32 frequencies) "
               "and cast only the cosines and sines to x's dtype: in bf16 an angle in the thousands is rounded by whole radians.")


def bf16_angle_mistakes(d, positions, theta, index):
    """The cos (``index`` 0) or sin (1) of angles that went through bfloat16 on the way, each way a
    learner may let them: the product of bf16 positions and bf16 frequencies, the float32 angles
    cast to bf16 before cos and sin, and bf16 positions times float32 frequencies. One name: the
    angles were bf16, which is what the output shows."""
    inv = inv_freq(d, theta).float()
    bf = torch.bfloat16

    def trig(a):
        a = torch.cat([a, a], dim=-1)
        return (a.cos() if index == 0 else a.sin()).float()

    return [Mistake(*BF16_ANGLES, lambda: trig(positions.to(bf)[:, None] * inv.to(bf)[None, :])),
            Mistake(*BF16_ANGLES, lambda: trig((positions.float()[:, None] * inv[None, :]).to(bf))),
            Mistake(*BF16_ANGLES, lambda: trig(positions.to(bf).float()[:, None] * inv[None, :]))]


def turned(x, positions, theta, rotate_half):
    """``x * cos + rotate_half(x1, x2) * sin`` in float64, with another ``rotate_half`` (a mistake's)."""
    cos, sin = cos_sin(x.size(-1), positions, theta)
    x1, x2 = x.double().chunk(2, dim=-1)
    return x.double() * cos + torch.cat(rotate_half(x1, x2), dim=-1) * sin


def apply_mistakes(x, positions, theta):
    """apply_rope's known mistakes on ``x`` at ``positions``: other pairs, other rotate_halfs."""
    return [Mistake("neighbours paired (interleaved), not the two halves", "Llama's convention pairs feature i with "
                    "i + head_dim / 2: rotate_half(x) = (-x2, x1).", lambda: rotate(x, positions, theta, interleaved=True)),
            Mistake("rotated the wrong way", "rotate_half(x) is (-x2, x1), not (x2, -x1): out = x * cos + rotate_half(x) * sin.",
                    lambda: rotate(x, -positions, theta)),
            Mistake("rotate_half without its minus sign: (x2, x1)", "rotate_half(x) is (-x2, x1): the second half, negated, "
                    "comes first.", lambda: turned(x, positions, theta, lambda a, b: (b, a))),
            Mistake("rotate_half's halves in the wrong order: (-x1, x2)", "rotate_half(x) is (-x2, x1): the second half, "
                    "negated, then the first.", lambda: turned(x, positions, theta, lambda a, b: (-a, b))),
            Mistake("rotate_half pairs neighbours (-x[1::2], x[0::2]) while cos and sin repeat in halves: two conventions mixed",
                    "With cos and sin laid out as two repeated halves, rotate_half must pair feature i with i + head_dim / 2: "
                    "torch.cat([-x2, x1], dim=-1) with x1, x2 = the two halves.", lambda: neighbours_rotated(x, positions, theta))]


def neighbours_rotated(x, positions, theta):
    """``x * cos + rotate_half(x) * sin`` with the half-split cos and sin but the interleaved
    rotate_half, ``(-x[1], x[0], -x[3], x[2], ...)``, in float64."""
    cos, sin = cos_sin(x.size(-1), positions, theta)
    xd = x.double()
    return xd * cos + torch.stack([-xd[..., 1::2], xd[..., 0::2]], dim=-1).flatten(-2) * sin


def test_apply_rope_matches_the_complex_rotation(impl, gen):
    x, theta = case(gen)
    seq, d = x.size(-2), x.size(-1)
    positions = torch.arange(seq) + n(gen, 0, 50)
    cos, sin = cos_sin(d, positions, theta)
    got = impl.call("rope.apply_rope", x, cos.float(), sin.float()).out
    assert_close_alone(got, rotate(x, positions, theta).float(), f"apply_rope(x of shape {tuple(x.shape)}, cos, sin)",
                 oracle="each pair (i, i + d/2) turned as a complex number",
                 mistakes=apply_mistakes(x, positions, theta))


def test_apply_rope_keeps_bfloat16(impl, gen):
    x, theta = case(gen)
    positions = torch.arange(x.size(-2))
    cos, sin = cos_sin(x.size(-1), positions, theta)
    xb = x.bfloat16()
    got = impl.call("rope.apply_rope", xb, cos.float(), sin.float()).out
    assert_true(got.dtype == torch.bfloat16, f"apply_rope on bfloat16 x returned {got.dtype}: return x's dtype (compute in float32, "
                                              "then .to(x.dtype))")
    assert_close_alone(got.float(), rotate(xb.float(), positions, theta).float(), f"apply_rope(bf16 x of shape {tuple(x.shape)})",
                 oracle="the exact rotation of the same bf16 values", check_dtype=False, rtol=1e-2, atol=1e-2,
                 mistakes=apply_mistakes(xb.float(), positions, theta))


def test_a_cached_decode_rotates_as_the_full_pass(impl, gen):
    """The learner's own two functions together: the last tokens at positions start.. equal those
    rows of the whole sequence rotated at once; a random start, and always the last position
    alone (one token decoded, the commonest step of a cached decode)."""
    x, theta = case(gen)
    x = torch.cat([x, x], dim=-2)  # at least two positions, so that the decoded ones do not start at 0
    seq = x.size(-2)
    for start in (n(gen, 1, seq - 1), seq - 1):
        tail = x[..., start:, :].contiguous()
        cos, sin = impl.call("rope.rope_cos_sin", tail, torch.arange(start, seq), theta, returns="data").out
        got = impl.call("rope.apply_rope", tail, cos, sin).out
        assert_close_alone(got, rotate(x, torch.arange(seq), theta)[..., start:, :].float(),
                     f"apply_rope on positions {start} .. {seq - 1} of {seq} (a cached decode)", oracle="the same rows of the full pass",
                     mistakes=[Mistake("the positions start at 0, not at the ones given", "A cached decode rotates token t at its "
                                       "absolute position: pass torch.arange(start, start + n).",
                                       lambda tail=tail, start=start: rotate(tail, torch.arange(seq - start), theta))]
                     + apply_mistakes(tail, torch.arange(start, seq), theta))


LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def llama3_variant(inv, scaling, two_pi=True, shares_swapped=False):
    """The docstring's three cases written out, with a mistake: the wavelength without 2 pi, or
    the blend's shares swapped (s on the slowed frequency, 1 - s on the kept one)."""
    f, low, high, original = (scaling[k] for k in LLAMA3_KEYS)
    inv = inv.double()
    wavelength = (2 * torch.pi if two_pi else 1.0) / inv
    s = (original / wavelength - low) / (high - low)
    blended = s * inv / f + (1 - s) * inv if shares_swapped else (1 - s) * inv / f + s * inv
    return torch.where(wavelength > original / low, inv / f, torch.where(wavelength < original / high, inv, blended))


def llama3_mistakes(inv, scaling):
    f, low, high, original = (scaling[k] for k in LLAMA3_KEYS)
    wavelength = 2 * torch.pi / inv.double()
    s = ((original / wavelength - low) / (high - low)).clamp(0, 1)
    return [
        Mistake("the slow pairs multiplied by factor instead of divided", "Slow pairs (wavelength > original / low_freq_factor) turn "
                "factor times slower: inv_freq / factor.", lambda: s * inv + (1 - s) * inv * f),
        Mistake("the blend reversed: the fast pairs slowed and the slow ones kept", "Pairs whose wavelength is under original / "
                "high_freq_factor are unchanged; those over original / low_freq_factor are divided by factor.",
                lambda: (1 - s) * inv + s * inv / f),
        Mistake("the pairs in between not blended (only the two ends scaled)", "Between the two wavelengths, use (1 - s) * inv_freq / "
                "factor + s * inv_freq with s = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor).",
                lambda: torch.where(wavelength > original / low, inv / f, inv)),
        Mistake("the wavelength taken as 1 / inv_freq, without 2 pi", "A pair turns once in 2 * pi / inv_freq positions: "
                "wavelength = 2 * math.pi / inv_freq.", lambda: llama3_variant(inv, scaling, two_pi=False)),
        Mistake("the blend's shares swapped", "In between, keep the share s of inv_freq: (1 - s) * inv_freq / factor + "
                "s * inv_freq.", lambda: llama3_variant(inv, scaling, shares_swapped=True)),
    ]


def test_llama3_frequencies_match_transformers(impl, gen):
    ref = {k: torch.from_numpy(v) for k, v in load_reference("21_llama3_rope").items()}
    cases = sorted({k.split("/")[0] for k in ref})
    case_ = cases[n(gen, 0, len(cases) - 1)]
    scaling = {k: float(ref[f"{case_}/{k}"].reshape(-1)[0]) for k in LLAMA3_KEYS}
    scaling["original_max_position_embeddings"] = int(scaling["original_max_position_embeddings"])
    for key in sorted({k.rsplit("/", 1)[0] for k in ref if k.startswith(case_ + "/d")}):
        d, theta = int(key.split("/d")[1]), float(ref[f"{key}/theta"].reshape(-1)[0])
        base = inv_freq(d, theta).float()
        got = impl.call("rope.llama3_frequencies", base, **scaling).out
        assert_close_alone(got, ref[f"{key}/inv_freq"], f"llama3_frequencies(rope_frequencies({d}, {theta:g}), {scaling})",
                     oracle="transformers' llama3 RoPE initialisation", rtol=1e-5, atol=1e-9, mistakes=llama3_mistakes(base, scaling))


def random_scaling(gen):
    low = [0.5, 1.0][n(gen, 0, 1)]
    return {"factor": [2.0, 8.0, 32.0][n(gen, 0, 2)], "low_freq_factor": low, "high_freq_factor": low * [2.0, 4.0][n(gen, 0, 1)],
            "original_max_position_embeddings": n(gen, 16, 4096)}


def test_llama3_frequencies_match_oracle(impl, gen):
    d, theta, scaling = 2 * n(gen, 4, 64), [10_000.0, 500_000.0][n(gen, 0, 1)], random_scaling(gen)
    base = inv_freq(d, theta).float()
    got = impl.call("rope.llama3_frequencies", base, **scaling).out
    assert_close_alone(got, llama3_inv_freq(base, **scaling).float(), f"llama3_frequencies(rope_frequencies({d}, {theta:g}), {scaling})",
                 oracle="each pair keeping the share clamp((original / wavelength - low) / (high - low), 0, 1) of its frequency",
                 rtol=1e-5, atol=1e-9, mistakes=llama3_mistakes(base, scaling))
    assert_true(got.dtype == torch.float32, f"llama3_frequencies of float32 frequencies returned {got.dtype}; expected float32")


def test_rope_cos_sin_with_llama3_scaling(impl, gen):
    d, start, seq = 2 * n(gen, 4, 16), n(gen, 0, 50), n(gen, 1, 10)
    theta, scaling = [10_000.0, 500_000.0][n(gen, 0, 1)], random_scaling(gen)
    scaling["original_max_position_embeddings"] = n(gen, 8, 64)  # the scaling shows at these positions
    positions = torch.arange(start, start + seq)
    like = torch.randn(1, seq, d, generator=gen)
    res = impl.call("rope.rope_cos_sin", like, positions, theta, scaling, returns="data").out
    assert_true(isinstance(res, (tuple, list)) and len(res) == 2, f"rope_cos_sin returned {type(res).__name__}; expected (cos, sin)")
    want, plain = cos_sin(d, positions, theta, scaling), cos_sin(d, positions, theta)
    what = f"rope_cos_sin(x with head_dim {d}, positions {start} .. {start + seq - 1}, theta={theta:g}, scaling={scaling})"
    for name, got, w, p in (("cos", res[0], want[0], plain[0]), ("sin", res[1], want[1], plain[1])):
        assert_close_alone(got, w.float(), f"{what}: its {name}", oracle="the angles of the scaled frequencies", atol=1e-5, rtol=1e-5,
                     mistakes=[Mistake("the scaling ignored", "With scaling, inv_freq = llama3_frequencies(inv_freq, **scaling) before the "
                                       "angles.", lambda p=p: p.float())])
