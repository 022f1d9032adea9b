"""Exercise 28: tiled attention with an online softmax (FlashAttention's forward).

Oracle: ``F.scaled_dot_product_attention`` in float64 in the grading process, and
``torch.logsumexp`` of the scaled (masked) scores for ``lse``. Named mistakes come from the tiled
loop written here in float64 with the mistake in it. Memory, on 2,048 queries and keys, where the
scores of the whole matrix would take 32 MiB: the verdict is the kernel's, read by the process that
forked the worker (its peak resident memory over the scenario, the processes it started:
``compare.check_resources``); the scenario (parts/flash_run.py) also follows every tensor the
learner's call makes, to name an honest mistake (a row of tiles) more precisely.
"""

import math

import torch
import torch.nn.functional as F

from harness.compare import Imprecise, Mistake, assert_close, assert_true, check_resources, expect_value_error
from harness.draw import n
from harness.failures import Mismatch

EXERCISE = "28"
ORACLE = "F.scaled_dot_product_attention (float64)"


def scores(q, k, scale, is_causal, align="top_left"):
    s = q.double() @ k.double().transpose(-2, -1) * scale
    if is_causal:
        L, S = s.shape[-2:]
        shift = S - L if align == "bottom_right" else 0
        s = s.masked_fill(torch.arange(S)[None, :] > torch.arange(L)[:, None] + shift, -math.inf)
    return s


def oracle(q, k, v, is_causal, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=is_causal, scale=scale)
    return out, torch.logsumexp(scores(q, k, scale, is_causal), dim=-1)


def tiled(q, k, v, is_causal, block_q, block_k, scale=None, variant=""):
    """The online softmax in float64, with one known mistake (``variant``)."""
    given = scale
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    if variant == "no_scale":
        scale = 1.0
    elif variant == "scale_by_d":
        scale = 1 / q.shape[-1]
    elif variant == "scale_ignored" and given is not None:
        scale = 1 / math.sqrt(q.shape[-1])
    s_all = scores(q, k, scale, is_causal, "bottom_right" if variant == "bottom_right" else "top_left")
    if variant == "diagonal_masked" and is_causal:
        L, S = s_all.shape[-2:]
        s_all = s_all.masked_fill(torch.arange(S)[None, :] == torch.arange(L)[:, None], -math.inf)
    L, S = q.shape[-2], k.shape[-2]
    if variant in ("tile_mask", "tile_mask_everywhere") and is_causal:  # the mask made from the tile's own indices
        i, j = torch.arange(L)[:, None], torch.arange(S)[None, :]
        i0, j0 = i // block_q * block_q, j // block_k * block_k
        local = j - j0 > i - i0
        if variant == "tile_mask":  # only on the tiles that reach past a row's position (else on every tile)
            local = local & (torch.clamp(j0 + block_k, max=S) - 1 > i0)
        local = local | (j0 >= torch.clamp(i0 + block_q, max=L).clamp(max=S))  # the tiles after the query tile: skipped
        s_all = scores(q, k, scale, False).masked_fill(local, -math.inf)
    if variant.startswith("straddling_") and is_causal:  # the tiles after the query tile skipped, but the mask put on too few
        i, j = torch.arange(L)[:, None], torch.arange(S)[None, :]
        i0, j0 = i // block_q * block_q, j // block_k * block_k
        j1 = torch.clamp(j0 + block_k, max=S)
        masked = {"straddling_after_start": j0 > i0, "straddling_same_start": j0 == i0,
                  "straddling_never": torch.zeros_like(j0 > i0)}[variant]  # which tiles the learner's test masks
        skipped = j0 >= torch.clamp(i0 + block_q, max=L).clamp(max=S)
        s_all = scores(q, k, scale, False).masked_fill(skipped | ((j > i) & masked & (j1 - 1 > i0)), -math.inf)
    if variant == "last_key_tile_skipped":  # the keys of the last, shorter tile never seen
        s_all = s_all.masked_fill(torch.arange(S) >= S - S % block_k, -math.inf)
    if variant == "diagonal_tiles_skipped" and is_causal:  # only key tiles starting before the query tile's first row
        first = torch.arange(L)[:, None] // block_q * block_q
        s_all = s_all.masked_fill(torch.arange(S)[None, :] >= (first + block_k - 1) // block_k * block_k, -math.inf)
    outs, lses = [], []
    for i0 in range(0, L, block_q):
        s_i = s_all[..., i0:i0 + block_q, :]
        m = torch.full(s_i.shape[:-1], -math.inf, dtype=torch.float64)
        l = torch.zeros_like(m)
        acc = torch.zeros(*s_i.shape[:-1], v.shape[-1], dtype=torch.float64)
        for j0 in range(0, S, block_k):
            s = s_i[..., j0:j0 + block_k]
            m_new = torch.maximum(m, s.amax(-1))
            safe = torch.where(torch.isinf(m_new), 0.0, m_new)
            if variant in ("last_key_tile_skipped", "diagonal_tiles_skipped", "tile_mask", "tile_mask_everywhere") \
                    or variant.startswith("straddling_"):
                safe = m_new  # rows that see no key at all: NaN, as the loop that skipped their keys gives
            p = torch.exp(s - safe[..., None])
            r = torch.exp(m - safe) if variant != "rescale_inverted" else torch.exp(safe - m).nan_to_num(posinf=0.0)
            if variant == "no_rescale":
                l, acc = l + p.sum(-1), acc + p @ v[..., j0:j0 + block_k, :].double()
            elif variant == "acc_not_rescaled":
                l, acc = r * l + p.sum(-1), acc + p @ v[..., j0:j0 + block_k, :].double()
            else:
                l, acc = r * l + p.sum(-1), r[..., None] * acc + p @ v[..., j0:j0 + block_k, :].double()
            m = m_new
        outs.append(acc if variant == "not_normalised" else acc / l[..., None])
        lses.append({"lse_is_max": m, "lse_no_max": torch.log(l)}.get(variant, m + torch.log(l)))
    return torch.cat(outs, -2), torch.cat(lses, -1)


def mistakes(q, k, v, is_causal, block_q, block_k, scale, which):
    index = 0 if which == "out" else 1

    def wrong(variant):
        return lambda: tiled(q, k, v, is_causal, block_q, block_k, scale, variant)[index]

    out = [Mistake("the running sum and output not rescaled when the maximum grows",
                   "When a tile raises the row maximum from m to m_new, multiply l and acc by exp(m - m_new) before adding the tile.",
                   wrong("no_rescale")),
           Mistake("the running output not rescaled when the maximum grows",
                   "acc = exp(m - m_new) * acc + p @ v_j: the output summed so far was weighted by exp(s - m), the old maximum.",
                   wrong("acc_not_rescaled")),
           Mistake("the scores not scaled", "s = q_i @ k_j^T * scale, with scale = 1 / sqrt(d) unless given.",
                   wrong("no_scale")),
           Mistake("the scores scaled by 1 / d, not 1 / sqrt(d)",
                   "scale = 1 / math.sqrt(d) (d = q.shape[-1]) unless given.",
                   wrong("scale_by_d")),
           Mistake("the running sums rescaled by exp(m_new - m), the inverse",
                   "rescale = exp(m - m_new): at most 1, it shrinks "
                   "what was summed under the smaller, old maximum.", wrong("rescale_inverted"))]
    if k.shape[-2] % block_k:
        out.append(Mistake("the last, shorter key tile skipped",
                           "Walk range(0, S, block_k) and slice k[..., j0:min(j0 + block_k, S)]: "
                           "the last tile may hold fewer than block_k keys.", wrong("last_key_tile_skipped")))
    if scale is not None:
        out.append(Mistake("the scale argument ignored (1 / sqrt(d) used)",
                           "Use scale when it is given; 1 / sqrt(d) only when it is None.",
                           wrong("scale_ignored")))
    if which == "out":
        out.append(Mistake("the output not divided by l",
                           "out_i = acc / l after the last key tile: acc is a sum weighted by exp(s - m), "
                           "l the sum of those weights.", wrong("not_normalised")))
    if which == "lse":
        out.append(Mistake("lse is the running maximum only", "lse = m + log(l): the log of the sum of exp(s) over the row.",
                           wrong("lse_is_max")))
        out.append(Mistake("lse is log(l) without the running maximum",
                           "lse = m + log(l): l sums exp(s - m), so log(l) lacks m.",
                           wrong("lse_no_max")))
    if q.dtype in (torch.float16, torch.bfloat16):
        want = oracle(q, k, v, is_causal, scale)[index]
        out.append(Imprecise(f"part of the computation done in {str(q.dtype).removeprefix('torch.')}, not float32",
                             "Cast each tile of q, k and v to float32 (q_i.to(work)) before the products: the scores, "
                             "m, l and acc "
                             "are float32 whatever the inputs' precision; only out is cast back.", want, q.dtype))
    if is_causal:
        out.append(Mistake("each query's own key masked too", "Mask keys j > i only: query i sees keys 0..i, itself included.",
                           wrong("diagonal_masked")))
        for variant in ("tile_mask", "tile_mask_everywhere"):
            out.append(Mistake("the causal mask made from the tile's own indices, not the absolute positions",
                               "Compare absolute positions: mask where j0 + c > i0 + r (cols = torch.arange(j0, j1), "
                               "rows = torch.arange(i0, i1)), not c > r within the tile.", wrong(variant)))
        for variant in ("straddling_after_start", "straddling_same_start", "straddling_never"):
            out.append(Mistake("the causal mask left off a tile that straddles the diagonal (the test of which tiles to mask "
                               "is wrong)", "Mask every tile that reaches past some row's own position: if j1 - 1 > i0, "
                               "masked_fill(cols > rows, -inf) with absolute rows and cols; only tiles wholly after the query "
                               "tile (j0 >= i1) are skipped.", wrong(variant)))
        out.append(Mistake("the key tiles on the diagonal skipped",
                           "Skip only the key tiles wholly after the query tile's last "
                           "row (keys j > i1 - 1); the tile that holds the diagonal is needed, masked where j > i.",
                           wrong("diagonal_tiles_skipped")))
        if q.shape[-2] != k.shape[-2]:
            out.append(Mistake("the causal mask aligned to the bottom right",
                               "PyTorch's is_causal aligns to the top left: query i sees keys 0..i, whatever S - L is.",
                               wrong("bottom_right")))
    return out


def describe(q, k, v, is_causal, block_q, block_k, scale=None):
    return (f"tiled_attention(q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, is_causal={is_causal}, "
            f"block_q={block_q}, block_k={block_k}{'' if scale is None else f', scale={scale:.4g}'}) ({q.dtype})")


def block(gen, length, larger=False):
    """A block size for ``length`` rows: larger than them with ``larger``; else one that leaves a
    ragged last tile (``length % block != 0``) wherever a block from 2 to 24 can, so that the
    boundary is never left to the draw."""
    if larger:
        return n(gen, length + 1, length + 24)
    ragged = [b for b in range(2, 25) if length % b]
    return ragged[n(gen, 0, len(ragged) - 1)] if ragged else n(gen, 1, 24)


def case(gen, is_causal, dtype=torch.float32, same_length=None, larger=False):
    """Random q, k, v and blocks: ragged last tiles in both directions, or with ``larger`` blocks
    larger than the sequences; ``same_length`` False makes S differ from L."""
    lead = [n(gen, 1, 2), n(gen, 1, 3)]
    L = n(gen, 3, 70)
    same = same_length if same_length is not None else bool(n(gen, 0, 1))
    S = L if same else L + [-1, 1][n(gen, 0, 1)] * n(gen, 1, min(L - 1, 20))
    d, dv = n(gen, 2, 16), n(gen, 1, 12)
    q, k = (torch.randn(*lead, m, d, generator=gen, dtype=dtype) * 1.5 for m in (L, S))
    v = torch.randn(*lead, S, dv, generator=gen, dtype=dtype)
    return q, k, v, block(gen, L, larger), block(gen, S, larger)


def check(impl, q, k, v, is_causal, block_q, block_k, scale=None, atol=1e-5, out_atol=None):
    """One call against the oracle: ``out`` within ``out_atol`` (default ``atol``; a half dtype's
    rounding for half inputs), ``lse`` within ``atol``."""
    kwargs = {"is_causal": is_causal, "block_q": block_q, "block_k": block_k}
    if scale is not None:
        kwargs["scale"] = scale
    got = impl.call("flash.tiled_attention", q, k, v, returns="data", **kwargs).out
    what = describe(q, k, v, is_causal, block_q, block_k, scale)
    assert_true(isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got),
                f"{what} returned {type(got).__name__}; expected a tuple (out, lse) of two tensors")
    out, lse = got
    want_out, want_lse = oracle(q, k, v, is_causal, scale)
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    assert_true(out.dtype == q.dtype, f"{what}: out is {out.dtype}, expected q's dtype {q.dtype}")
    half = lse.dtype == q.dtype != work  # lse in the inputs' half dtype: the statistics were kept in it
    assert_true(lse.dtype == work, f"{what}: lse is {lse.dtype}, expected {work} (float32, or float64 for float64 "
                                   "inputs)"
                + (f"\nThis looks like: the statistics (m, l, lse) kept in {lse.dtype}, not float32. Compute in "
                   "torch.promote_types(q.dtype, torch.float32) and cast only out back to q's dtype." if half else ""))
    out_atol, out_rtol = (atol, atol * 10) if out_atol is None else (out_atol, out_atol)
    assert_close(out, want_out.to(q.dtype), f"{what}: out", oracle=ORACLE, atol=out_atol, rtol=out_rtol,
                 check_dtype=False,
                 mistakes=mistakes(q, k, v, is_causal, block_q, block_k, scale, "out"))
    assert_close(lse, want_lse.to(work), f"{what}: lse", oracle="torch.logsumexp of the scaled, masked scores", atol=atol,
                 rtol=atol * 10, check_dtype=False, mistakes=mistakes(q, k, v, is_causal, block_q, block_k, scale, "lse"))


def test_tiled_attention_matches_sdpa(impl, gen):
    for larger in (False, True):  # ragged last tiles, then blocks larger than the sequences
        q, k, v, bq, bk = case(gen, False, larger=larger)
        check(impl, q, k, v, False, bq, bk)
    # Rows whose every score is far below zero (about -800 or lower, where exp underflows even in float64):
    # the softmax is the same as near zero once the row's maximum is subtracted, a maximum that must
    # start at -inf (started at 0, exp(s - 0) is 0 for every key and l is 0).
    q, k, v, bq, bk = case(gen, False, dtype=torch.float64)
    rows = torch.randperm(q.size(-2), generator=gen)[: n(gen, 1, q.size(-2))]
    k[..., 0] += 60.0
    q[..., rows, 0] = -60.0
    try:
        check(impl, q, k, v, False, bq, bk, atol=1e-10)
    except Mismatch as e:
        e.message += (f"\n(in this call every score of the query rows {sorted(rows.tolist())} is hundreds below zero, where exp "
                      "underflows to 0; the output there is a softmax-weighted mean of v all the same)")
        raise


def test_tiled_attention_causal(impl, gen):
    for same in (True, False):
        q, k, v, bq, bk = case(gen, True, same_length=same)
        check(impl, q, k, v, True, bq, bk)


def test_tiled_attention_scale_and_float64(impl, gen):
    is_causal = bool(n(gen, 0, 1))
    q, k, v, bq, bk = case(gen, is_causal, dtype=torch.float64)
    check(impl, q, k, v, is_causal, bq, bk, scale=0.05 + float(torch.rand(1, generator=gen)), atol=1e-10)


def test_tiled_attention_half_inputs(impl, gen):
    """float16 and bfloat16 inputs (the docstring: out in q's dtype, lse in float32, the statistics
    and sums in float32 whatever the inputs' precision): out within the half dtype's rounding of the
    exact answer, lse as close as float32 work gives. Both dtypes, causal and not, every run."""
    for dtype, is_causal in ((torch.float16, False), (torch.bfloat16, True)):
        q, k, v, bq, bk = case(gen, is_causal, dtype=dtype)
        check(impl, q, k, v, is_causal, bq, bk, atol=1e-5, out_atol=torch.finfo(dtype).eps)


def test_tiled_attention_memory_grows_with_the_tile(impl, gen):
    """2,048 queries and keys, two heads: the whole score matrix is 32 MiB (16 MiB a head). The
    tiles are 128 or 256 by 128; a row of tiles (block_q x 2,048) is already larger than four tiles."""
    is_causal = bool(n(gen, 0, 1))
    L = 2048
    d = 16
    q, k, v = (torch.randn(1, 2, L, d, generator=gen) for _ in range(3))
    bq, bk = 128 * n(gen, 1, 2), 128  # few tiles: the dispatch mode costs per operator
    impl.scenario("flash_run.warm", q, bq, bk, fresh=True)
    result = impl.scenario("flash_run.forward", q, k, v, is_causal, bq, bk, measure=True)
    res = result.out
    what = describe(q, k, v, is_causal, bq, bk)
    out = res["out"]
    assert_true(isinstance(out, torch.Tensor), f"{what} did not return (out, lse)")
    assert_close(out, oracle(q, k, v, is_causal)[0].float(), f"{what}: out", oracle=ORACLE, atol=1e-4, rtol=1e-3)
    full = q.shape[0] * q.shape[1] * L * L * 4
    check_resources(result.resources, what, f"the whole score matrix is {full / 2**20:.0f} MiB", growth=full // 2)
    io = 4 * q.numel() * q.element_size()  # q, k, v and out
    tile = q.shape[0] * q.shape[1] * bq * bk * 4
    largest_allowed = max(q.numel() * 4, 4 * tile)
    if res["largest"] > largest_allowed:
        raise Mismatch(f"{what} made a tensor of {res['largest'] / 2**20:.2f} MiB; the largest allowed is {largest_allowed / 2**20:.2f} MiB "
                       f"(q's size, or 4 tiles of block_q x block_k per head). The whole score matrix would be {full / 2**20:.0f} MiB"
                       + (" and one row of tiles (block_q x S) " f"{q.shape[1] * bq * L * 4 / 2**20:.1f} MiB" if res["largest"] < full else "")
                       + ": compute the scores one block_q x block_k tile at a time, never a whole row or the whole matrix.")
    allowed = 2 * io + 32 * tile
    if res["peak"] > allowed:
        raise Mismatch(f"{what} held {res['peak'] / 2**20:.2f} MiB of tensors at its peak; allowed: {allowed / 2**20:.2f} MiB (twice q, k, v "
                       f"and out, plus 32 tiles), against {full / 2**20:.0f} MiB for the whole score matrix. Do not keep the tiles' "
                       "scores or probabilities: only the running m, l and acc of the current block of queries.")


def test_tiled_attention_refuses_bad_blocks(impl, gen):
    q, k, v, _, _ = case(gen, False)
    bad = -n(gen, 0, 3)
    expect_value_error(lambda: impl.call("flash.tiled_attention", q, k, v, returns="data", block_q=bad, block_k=8),
                       f"tiled_attention(..., block_q={bad})", needles=(bad,))
