"""Exercise 29: FlashAttention's backward, an ``autograd.Function`` that recomputes its tiles.

Oracle: autograd in the grading process through attention written plainly in float64 (the scores,
``torch.softmax``, the product with ``v``), on the same inputs and output gradient. In float64 the
gradients must agree within 1e-9: what ``torch.autograd.gradcheck`` would accept, checked against
the exact derivative instead of finite differences. Named mistakes come from FlashAttention-2's
backward written here with the whole matrices, in float64, with the mistake in it. Memory: the
verdict is the kernel's, read by the process that forked the worker (``compare.check_resources``);
the scenario (parts/flash_run.py) also follows the tensors the forward leaves held and those the
backward makes, to name an honest mistake precisely.
The learner's flash_grad.py is imported with the reference tiled forward (parts/flash.py).
"""

import math

import torch

from harness.compare import Mistake, assert_close, assert_true, check_resources
from harness.draw import n
from harness.failures import Mismatch

EXERCISE = "29"
PARTS = ("flash",)
ORACLE = "autograd through plain attention (float64)"


def allowed(L, S, is_causal):
    return torch.arange(S)[None, :] <= torch.arange(L)[:, None] if is_causal else torch.ones(L, S, dtype=torch.bool)


def plain(q, k, v, is_causal):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~allowed(q.shape[-2], k.shape[-2], is_causal), -math.inf)
    return torch.softmax(s, dim=-1) @ v


def oracle(q, k, v, is_causal, grad_out):
    qq, kk, vv = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    out = plain(qq, kk, vv, is_causal)
    return out.detach(), torch.autograd.grad(out, (qq, kk, vv), grad_out.double())


def backward_variant(q, k, v, is_causal, grad_out, variant, block_k=None, block_q=None):
    """FlashAttention-2's backward with whole matrices, float64, with one known mistake
    (``block_k``, ``block_q``: the tiles, for the mistakes that depend on them)."""
    q, k, v, do = (t.double() for t in (q, k, v, grad_out))
    scale = 1 / math.sqrt(q.shape[-1])
    mask = allowed(q.shape[-2], k.shape[-2], is_causal)
    s = q @ k.transpose(-2, -1) * scale
    lse = torch.logsumexp(s.masked_fill(~mask, -math.inf), dim=-1)
    remade = mask & ~torch.eye(*mask.shape, dtype=torch.bool) if variant == "diagonal_masked" else mask
    p = torch.exp((s if variant == "mask_missing" else s.masked_fill(~remade, -math.inf)) - lse[..., None])
    if variant == "tile_softmax":  # each key tile's probabilities normalised over that tile alone (without causal masks)
        p = torch.cat([torch.softmax(s[..., j:j + block_k], dim=-1) for j in range(0, k.shape[-2], block_k)], -1)
    out = torch.softmax(s.masked_fill(~mask, -math.inf), dim=-1) @ v
    dv = p.transpose(-2, -1) @ do
    dp = do @ v.transpose(-2, -1)
    D = (do * out).sum(-1)
    if variant == "no_D":
        ds = p * dp
    elif variant == "D_without_out":  # D = rowsum(dO), the output left out of it
        ds = p * (dp - do.sum(-1)[..., None])
    elif variant == "D_per_tile":  # D taken as rowsum(p * dp) over each key tile only
        ds = torch.cat([p[..., j:j + block_k] * (dp[..., j:j + block_k] - (p[..., j:j + block_k] * dp[...,
                                                                                                      j:j + block_k])
                        .sum(-1, keepdim=True)) for j in range(0, k.shape[-2], block_k)], -1)
    else:
        ds = p * (dp - D[..., None])
    if variant == "overwritten":  # "=" for "+=": dq keeps its last key tile's share, dk and dv their last query tile's
        L, S = q.shape[-2], k.shape[-2]
        dq = torch.zeros_like(q)
        for i0 in range(0, L, block_q):
            j0 = (min(i0 + block_q, L, S) - 1 if is_causal else S - 1) // block_k * block_k
            dq[..., i0:i0 + block_q, :] = ds[..., i0:i0 + block_q, j0:j0 + block_k] @ k[..., j0:j0 + block_k, :] * scale
        i0 = (L - 1) // block_q * block_q
        return dq, ds[..., i0:, :].transpose(-2, -1) @ q[..., i0:, :] * scale, p[..., i0:, :].transpose(-2,
                                                                                                        -1) @ do[...,
                                                                                                                 i0:, :]
    return ds @ k * scale, ds.transpose(-2, -1) @ q * scale, dv


def mistakes(q, k, v, is_causal, grad_out, index, block_k, got=None, block_q=None):
    """The known mistakes for gradient ``index`` (0: dq, 1: dk, 2: dv). ``got``: the learner's three
    gradients, so that a factor missing from dq or dk is named for those it is missing from."""
    def wrong(variant):
        return lambda: backward_variant(q, k, v, is_causal, grad_out, variant, block_k, block_q)[index]

    grads = ("dq", "dk", "dv")
    scale = 1 / math.sqrt(q.shape[-1])
    want = oracle(q, k, v, is_causal, grad_out)[1]
    out = []
    if index < 2:
        out += [Mistake("D = rowsum(dO * out) left out of ds", "ds = p * (dp - D), D = (grad_out * out).sum(-1): the softmax's "
                        "backward subtracts each row's sum of p * dp, which D equals.", wrong("no_D")),
                Mistake("D = rowsum(dO) without out", "D = rowsum(dO * out): the sum over the row of the output "
                        "gradient times the output.", wrong("D_without_out")),
                Mistake("D summed over one key tile only",
                        "D = rowsum(dO * out), once per query row before the loops: the softmax's "
                        "backward needs the sum of p * dp over all the row's keys, "
                        "not the current tile's.", wrong("D_per_tile"))]
        for factor, words, fix in ((1 / scale, "the scale left out of", "dq = ds @ k * scale and dk = ds^T @ q * scale "
                                    "(s = q k^T * scale)."),
                                   (scale, "the scale applied twice to", "multiply by scale once: dq = ds @ k * scale, "
                                    "dk = ds^T @ q * scale.")):
            same = [grads[i] for i in (0, 1) if got is not None and got[i] is not None
                    and Mistake("", "", (want[i] * factor).to(got[i].dtype)).matches(got[i], 1e-3,
                                                                                     1e-4)] or [grads[index]]
            out.append(Mistake(f"{words} {' and '.join(same)}", fix, lambda f=factor: want[index] * f))
    else:
        out.append(Mistake("dv scaled: only dq and dk carry the scale",
                           "dv = p^T @ dO: the values enter the output unscaled.",
                           lambda: want[2] * scale))
    if not is_causal:
        out.append(Mistake("each key tile's probabilities normalised over that tile alone (a softmax per tile), not exp(s - lse)",
                           "Remake p = exp(s - lse) with the lse the forward saved: a tile's probabilities are shares of the "
                           "whole row's sum, which only lse knows.", wrong("tile_softmax")))
    tile = ("key", "query", "query")[index]
    out.append(Mistake(f"{grads[index]} overwritten by each {tile} tile, not accumulated",
                       f"{grads[index]}[...] += ...: every {tile} tile adds its share; with = only the last one's is "
                       "left.",
                       wrong("overwritten")))
    if is_causal:
        out.append(Mistake("the causal mask left out of the backward",
                           "Remake p exactly as the forward made it: the masked scores (-inf after each query's position), then exp(s - lse).",
                           wrong("mask_missing")))
        out.append(Mistake("each query's own key masked in the backward",
                           "Mask keys j > i only (cols > rows), as the forward does: "
                           "query i sees itself.", wrong("diagonal_masked")))
    if q.shape == k.shape and index < 2:
        out.append(Mistake("dq and dk swapped", "Return (dq, dk, dv) in the order of forward's inputs (q, k, v).",
                           lambda: want[1 - index]))
    return out


def describe(q, k, v, is_causal, bq, bk):
    return (f"TiledAttention.apply(q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, is_causal={is_causal}, "
            f"block_q={bq}, block_k={bk}) ({q.dtype})")


def case(gen, dtype, is_causal, largest=40):
    lead = [n(gen, 1, 2), n(gen, 1, 3)]
    L = n(gen, 1, largest)
    S = L if is_causal and n(gen, 0, 1) else n(gen, 1, largest)
    d, dv = n(gen, 2, 12), n(gen, 1, 10)
    q, k = (torch.randn(*lead, m, d, generator=gen, dtype=dtype) for m in (L, S))
    v = torch.randn(*lead, S, dv, generator=gen, dtype=dtype)
    return q, k, v, torch.randn(*lead, L, dv, generator=gen, dtype=dtype), n(gen, 1, 16), n(gen, 1, 16)


def run(impl, q, k, v, is_causal, bq, bk, grad_out, track=False):
    return impl.scenario("flash_run.backward", q, k, v, is_causal, bq, bk, grad_out, track=track, substitute=PARTS).out


def check_gradients(impl, gen, dtype, atol):
    for is_causal in (False, True):
        q, k, v, g, bq, bk = case(gen, dtype, is_causal)
        res = run(impl, q, k, v, is_causal, bq, bk, g)
        what = describe(q, k, v, is_causal, bq, bk)
        want_out, want = oracle(q, k, v, is_causal, g)
        assert_close(res["out"], want_out.to(dtype), f"{what}: the output", oracle=ORACLE, atol=atol, rtol=atol)
        for i, name in enumerate(("q", "k", "v")):
            got = res["grads"][i]
            assert_true(got is not None, f"{what}: backward returned None for the gradient of {name}")
            assert_true(got.dtype == dtype, f"{what}: the gradient of {name} is {got.dtype}, expected {dtype} (the input's)")
            assert_close(got, want[i].to(dtype), f"{what}: the gradient of {name}", oracle=ORACLE, atol=atol, rtol=atol,
                         mistakes=mistakes(q, k, v, is_causal, g, i, bk, res["grads"], bq))


def test_gradients_float64_exact(impl, gen):
    check_gradients(impl, gen, torch.float64, 1e-9)


def test_gradients_float32_ragged_tiles(impl, gen):
    check_gradients(impl, gen, torch.float32, 1e-4)


def test_keeps_only_q_k_v_out_lse(impl, gen):
    """What the graph holds after the forward: the output and lse (q, k and v are the caller's)."""
    is_causal = bool(n(gen, 0, 1))
    L = 512 + n(gen, 0, 64)
    q, k, v = (torch.randn(1, 2, L, 16, generator=gen) for _ in range(3))
    g = torch.randn(1, 2, L, 16, generator=gen)
    bq, bk = 32 * n(gen, 1, 2), 32 * n(gen, 1, 2)
    res = run(impl, q, k, v, is_causal, bq, bk, g)
    what = describe(q, k, v, is_causal, bq, bk)
    if res["node"] is None:
        raise Mismatch(f"{what} returned a tensor with no grad_fn: forward's output must be the node's output, so that backward runs")
    if res["saved"] is None or sorted(res["saved"]) != sorted([tuple(q.shape)] * 4 + [tuple(q.shape[:-1])]):
        raise Mismatch(f"{what} saved tensors of shapes {res['saved']}; expected exactly q, k, v, out and lse "
                       f"({[tuple(q.shape)] * 4 + [tuple(q.shape[:-1])]}) with ctx.save_for_backward")
    out_bytes, lse_bytes = q.numel() * 4, q.numel() // 16 * 4
    allowed_bytes = out_bytes + 2 * lse_bytes + 4096
    if res["held"] > allowed_bytes:
        raise Mismatch(f"{what}: after the forward, {res['held'] / 2**10:.0f} KiB of new tensors are still held; out and lse are "
                       f"{(out_bytes + lse_bytes) / 2**10:.0f} KiB, and the probabilities of the whole matrix would be "
                       f"{2 * L * L * 4 / 2**10:.0f} KiB. Keep nothing else on ctx: backward remakes each tile from q, k and lse.")


def test_backward_memory_grows_with_the_tile(impl, gen):
    """2,048 queries and keys, two heads: the probabilities of the whole matrix take 32 MiB."""
    is_causal = bool(n(gen, 0, 1))
    L = 2048
    q, k, v, g = (torch.randn(1, 2, L, 16, generator=gen) for _ in range(4))
    bq, bk = 128 * n(gen, 1, 2), 128  # few tiles: the dispatch mode costs per operator
    impl.scenario("flash_run.warm", q, bq, bk, grad=True, fresh=True)
    result = impl.scenario("flash_run.backward", q, k, v, is_causal, bq, bk, g, track=True, substitute=PARTS, measure=True)
    res = result.out
    what = describe(q, k, v, is_causal, bq, bk) + ", backward"
    want_out, want = oracle(q, k, v, is_causal, g)
    for i, name in enumerate(("q", "k", "v")):
        assert_true(res["grads"][i] is not None, f"{what}: backward returned None for the gradient of {name}")
        assert_close(res["grads"][i], want[i].float(), f"{what}: the gradient of {name}", oracle=ORACLE, atol=1e-4, rtol=1e-3)
    io = q.numel() * 4
    tile = 2 * bq * bk * 4
    full = 2 * L * L * 4
    check_resources(result.resources, what + " (the forward and the backward)",
                    f"the whole matrix's probabilities are {full / 2**20:.0f} MiB", growth=full // 2)
    largest_allowed = max(io, 4 * tile)
    if res["forward_largest"] > largest_allowed:
        raise Mismatch(f"{what}: the forward made a tensor of {res['forward_largest'] / 2**20:.2f} MiB; the largest allowed is "
                       f"{largest_allowed / 2**20:.2f} MiB. The whole matrix is {full / 2**20:.0f} MiB: let tiled_attention (28) make "
                       "the output and lse, one tile at a time.")
    if res["largest"] > largest_allowed:
        raise Mismatch(f"{what} made a tensor of {res['largest'] / 2**20:.2f} MiB; the largest allowed is {largest_allowed / 2**20:.2f} MiB "
                       f"(q's size, or 4 tiles). The whole matrix is {full / 2**20:.0f} MiB: remake p one block_q x block_k tile at a time.")
    allowed_bytes = 8 * io + 32 * tile
    if res["peak"] > allowed_bytes:
        raise Mismatch(f"{what} held {res['peak'] / 2**20:.2f} MiB of tensors at its peak; allowed: {allowed_bytes / 2**20:.2f} MiB "
                       f"(8 times q's size, for dq, dk, dv and their float32 copies, plus 32 tiles), against {full / 2**20:.0f} MiB for the "
                       "whole matrix's probabilities.")
