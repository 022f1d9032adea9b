"""The speed track's tiled attention and fast path (28-30): each known mistake is named by the
check that should catch it, the shortcuts that give the right numbers without the tiling (the whole
score matrix, a row of tiles, NumPy, probabilities kept for the backward, autograd through plain
attention) are caught by the memory checks, and a broken 28 costs 29 nothing. The shortcuts out of
the in-process tracker's sight (NumPy, another thread, another process) are caught by what the
kernel says, read from outside the worker: those are graded in a worker process.
"""

import sys

import pytest
from helpers import SEEDS, assert_checks_pass, assert_mistake_named, impl_for, make_tree, run_check

from harness.failures import GradingFailure

L_UPDATE = "l = rescale * l + p.sum(dim=-1)"
ACC_UPDATE = "acc = rescale[..., None] * acc + p @ v[..., j0:j1, :].to(work)"
FWD = "flash.py"
BWD = "flash_grad.py"
FAST = "fast.py"

CASES = [
    ("the running sum and output not rescaled when the maximum grows", FWD,
     [(L_UPDATE, "l = l + p.sum(dim=-1)"), (ACC_UPDATE, "acc = acc + p @ v[..., j0:j1, :].to(work)")],
     "test_28_flash_forward", "test_tiled_attention_matches_sdpa"),
    ("the running output not rescaled when the maximum grows", FWD, [(ACC_UPDATE, "acc = acc + p @ v[..., j0:j1, :].to(work)")],
     "test_28_flash_forward", "test_tiled_attention_matches_sdpa"),
    ("lse is the running maximum only", FWD, [("lse[..., i0:i1] = m + torch.log(l)", "lse[..., i0:i1] = m")],
     "test_28_flash_forward", "test_tiled_attention_causal"),
    ("the scores not scaled", FWD, [("q_i = q[..., i0:i1, :].to(work) * scale", "q_i = q[..., i0:i1, :].to(work)")],
     "test_28_flash_forward", "test_tiled_attention_matches_sdpa"),
    ("D = rowsum(dO * out) left out of ds", BWD, [("ds = p * (dp - D[..., i0:i1, None])", "ds = p * dp")],
     "test_29_flash_backward", "test_gradients_float64_exact"),
    ("the scale left out of dq and dk", BWD, [("dq[..., i0:i1, :] += ds @ k_j * scale", "dq[..., i0:i1, :] += ds @ k_j"),
                                              ("dk[..., j0:j1, :] += ds.transpose(-2, -1) @ q_i * scale", "dk[..., j0:j1, :] += ds.transpose(-2, -1) @ q_i")],
     "test_29_flash_backward", "test_gradients_float32_ragged_tiles"),
    ("the causal mask left out of the backward", BWD, [("first = j0 if ctx.is_causal else 0", "first = 0"),
                                                       ("s = s.masked_fill(cols > rows, -math.inf)", "pass")],
     "test_29_flash_backward", "test_gradients_float64_exact"),
    ("the padded logits are not masked", FAST, [("return F.linear(x, self.out_head.weight, self.logit_mask.to(x.dtype))",
                                                 "return F.linear(x, self.out_head.weight)")],
     "test_30_fast_gpt", "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("attention without the causal mask", FAST, [("is_causal=True, dropout_p=self.dropout", "is_causal=False, dropout_p=self.dropout")],
     "test_30_fast_gpt", "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("the padded logits are masked with a finite number", FAST,
     [('logit_mask[cfg.vocab_size:] = -math.inf', 'logit_mask[cfg.vocab_size:] = -1e4')],
     "test_30_fast_gpt", "test_fast_gpt_runs_fused_kernels"),
]

# Shortcuts that compute the right numbers without the tiling: (words the failure must say, file, edits, module, check)
WHOLE_MATRIX = ("    if block_q < 1 or block_k < 1:",
                "    if block_q >= 1 and block_k >= 1:\n"
                "        work = torch.promote_types(q.dtype, torch.float32)\n"
                "        s = q.to(work) @ k.to(work).transpose(-2, -1) / math.sqrt(q.shape[-1]) if scale is None else q.to(work) @ k.to(work).transpose(-2, -1) * scale\n"
                "        if is_causal:\n"
                "            s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)\n"
                "        lse = torch.logsumexp(s, -1)\n"
                "        return (torch.exp(s - lse[..., None]) @ v.to(work)).to(q.dtype), lse\n"
                "    if block_q < 1 or block_k < 1:")
ROW_OF_TILES = ("    for i0 in range(0, L, block_q):", "    block_k = S\n    for i0 in range(0, L, block_q):")
NUMPY = ("    if block_q < 1 or block_k < 1:",
         "    if block_q >= 64 and q.dtype == torch.float32:\n"
         "        np = __import__('numpy')\n"
         "        a, b, c = q.numpy(), k.numpy(), v.numpy()\n"
         "        s = a @ b.swapaxes(-1, -2) / math.sqrt(q.shape[-1])\n"
         "        if is_causal:\n"
         "            s = s + np.triu(np.full(s.shape[-2:], -np.inf, dtype=s.dtype), 1)\n"
         "        m = s.max(-1, keepdims=True)\n"
         "        e = np.exp(s - m)\n"
         "        total = e.sum(-1, keepdims=True)\n"
         "        return torch.from_numpy((e / total) @ c), torch.from_numpy((m + np.log(total))[..., 0])\n"
         "    if block_q < 1 or block_k < 1:")
THREAD = ("    if block_q < 1 or block_k < 1:",
          "    if block_q >= 64 and q.dtype == torch.float32:\n"
          "        import threading\n"
          "        box = []\n"
          "        def whole():\n"
          "            s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
          "            if is_causal:\n"
          "                s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)\n"
          "            lse = torch.logsumexp(s, -1)\n"
          "            box.append((torch.exp(s - lse[..., None]) @ v, lse))\n"
          "        worker = threading.Thread(target=whole)\n"
          "        worker.start()\n"
          "        worker.join()\n"
          "        return box[0]\n"
          "    if block_q < 1 or block_k < 1:")
PROCESS = ("    if block_q < 1 or block_k < 1:",
           "    if block_q >= 64 and q.dtype == torch.float32 and q.shape == k.shape:\n"
           "        import subprocess, sys\n"
           "        import numpy as np\n"
           "        code = ('import sys, numpy as np\\n'\n"
           "                'q, k, v = np.frombuffer(sys.stdin.buffer.read(), dtype=np.float32).reshape(3, *%r)\\n'\n"
           "                's = q @ k.swapaxes(-1, -2) / %r\\n'\n"
           "                's = s + np.triu(np.full(s.shape[-2:], -np.inf, dtype=s.dtype), 1) if %r else s\\n'\n"
           "                'm = s.max(-1, keepdims=True)\\n'\n"
           "                'e = np.exp(s - m)\\n'\n"
           "                't = e.sum(-1, keepdims=True)\\n'\n"
           "                'sys.stdout.buffer.write(((e / t) @ v).astype(np.float32).tobytes() + (m + np.log(t))[..., 0].astype(np.float32).tobytes())\\n'\n"
           "                ) % (tuple(q.shape), math.sqrt(q.shape[-1]), is_causal)\n"
           "        raw = subprocess.run([sys.executable, '-c', code], input=torch.stack([q, k, v]).numpy().tobytes(), capture_output=True, check=True).stdout\n"
           "        flat = torch.from_numpy(np.frombuffer(raw, dtype=np.float32).copy())\n"
           "        return flat[:q.numel()].reshape(q.shape), flat[q.numel():].reshape(q.shape[:-1])\n"
           "    if block_q < 1 or block_k < 1:")
KEEP_P = ("        ctx.is_causal, ctx.block_q, ctx.block_k = is_causal, block_q, block_k",
          "        ctx.is_causal, ctx.block_q, ctx.block_k = is_causal, block_q, block_k\n"
          "        ctx.p = torch.exp(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) - lse[..., None])")
AUTOGRAD = ("        q, k, v, out, lse = ctx.saved_tensors\n",
            "        q, k, v, out, lse = ctx.saved_tensors\n"
            "        with torch.enable_grad():\n"
            "            qq, kk, vv = (t.detach().requires_grad_(True) for t in (q, k, v))\n"
            "            s = qq @ kk.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
            "            if ctx.is_causal:\n"
            "                s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)\n"
            "            o = torch.exp(s - torch.logsumexp(s, -1, keepdim=True)) @ vv\n"
            "            return (*torch.autograd.grad(o, (qq, kk, vv), grad_out), None, None, None)\n")
FULL_FORWARD = ("        out, lse = tiled_attention(q, k, v, is_causal=is_causal, block_q=block_q, block_k=block_k)\n",
                "        s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
                "        if is_causal:\n"
                "            s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)\n"
                "        lse = torch.logsumexp(s, -1)\n"
                "        out = torch.exp(s - lse[..., None]) @ v\n")
OP_BY_OP = ("context = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)",
            "s = (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).masked_fill(torch.ones(num_tokens, num_tokens, dtype=torch.bool).triu(1), -math.inf)\n"
            "        context = torch.softmax(s, -1) @ v")

SHORTCUTS = [
    ("whole score matrix would be", FWD, [WHOLE_MATRIX], "test_28_flash_forward", "test_tiled_attention_memory_grows_with_the_tile"),
    ("one row of tiles", FWD, [ROW_OF_TILES], "test_28_flash_forward", "test_tiled_attention_memory_grows_with_the_tile"),
    ("Keep nothing else on ctx", BWD, [KEEP_P], "test_29_flash_backward", "test_keeps_only_q_k_v_out_lse"),
    ("let tiled_attention (28) make the output", BWD, [FULL_FORWARD], "test_29_flash_backward", "test_backward_memory_grows_with_the_tile"),
    ("remake p one block_q x block_k tile at a time", BWD, [AUTOGRAD], "test_29_flash_backward", "test_backward_memory_grows_with_the_tile"),
    ("did not run F.scaled_dot_product_attention", FAST, [OP_BY_OP], "test_30_fast_gpt", "test_fast_gpt_runs_fused_kernels"),
]


# Caught by what the kernel says, read from outside the worker: graded in a worker process (Linux).
KERNEL_SHORTCUTS = [
    ("Memory made outside PyTorch", FWD, [NUMPY], "test_28_flash_forward", "test_tiled_attention_memory_grows_with_the_tile"),
    ("resident memory rose", FWD, [THREAD], "test_28_flash_forward", "test_tiled_attention_memory_grows_with_the_tile"),
    ("started another process", FWD, [PROCESS], "test_28_flash_forward", "test_tiled_attention_memory_grows_with_the_tile"),
]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's numbers are read from Linux's /proc")
@pytest.mark.parametrize("words, file, edits, module, check", KERNEL_SHORTCUTS, ids=[c[0] for c in KERNEL_SHORTCUTS])
def test_shortcuts_out_of_the_trackers_sight_are_caught_by_the_kernel(tmp_path, words, file, edits, module, check):
    assert_mistake_named(tmp_path, words, file, edits, module, check, seeds=SEEDS[:2], worker=True)


@pytest.mark.parametrize("mistake, file, edits, module, check", CASES, ids=[c[0] for c in CASES])
def test_the_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check)


@pytest.mark.parametrize("words, file, edits, module, check", SHORTCUTS, ids=[c[0] for c in SHORTCUTS])
def test_shortcuts_around_the_tiling_are_caught(tmp_path, words, file, edits, module, check):
    assert_mistake_named(tmp_path, words, file, edits, module, check, seeds=SEEDS[:2])


def test_the_checks_pass_on_the_solution(tmp_path):
    assert_checks_pass(tmp_path, CASES + SHORTCUTS + KERNEL_SHORTCUTS)


def test_a_broken_forward_costs_the_backward_nothing(tmp_path):
    """29 is graded with the reference tiled forward: a 28 without the rescale changes nothing."""
    tree = make_tree(tmp_path, {FWD: [(L_UPDATE, "l = l + p.sum(dim=-1)"), (ACC_UPDATE, "acc = acc + p @ v[..., j0:j1, :].to(work)")]})
    tests, impl = impl_for(tree, "test_28_flash_forward")
    with pytest.raises(GradingFailure):
        run_check(tests.test_tiled_attention_matches_sdpa, impl, SEEDS[0])
    tests, impl = impl_for(tree, "test_29_flash_backward")
    for name in [k for k in vars(tests) if k.startswith("test_")]:
        for seed in SEEDS[:2]:
            run_check(getattr(tests, name), impl, seed)
