"""Issue 25, exercises 25-30: each name a planted mistake earns, and the near misses that must not
earn it (a name is given only when the evidence fits that mistake alone). Every mistake here is a
one-line edit of solutions/, graded in-process; the memory checks of 28 and 29 (measured by the
worker) are tested in test_fingerprints_speed.py.
"""

import pytest
from helpers import assert_checks_pass, assert_mistake_named, assert_not_named

CACHE, MOE, ADAMW, FWD, BWD, FAST = "modern_cache.py", "moe.py", "adamw.py", "flash.py", "flash_grad.py", "fast.py"
T25, T26, T27, T28, T29, T30 = ("test_25_modern_cache", "test_26_moe", "test_27_adamw", "test_28_flash_forward",
                                "test_29_flash_backward", "test_30_fast_gpt")

# the solution's lines the mistakes edit
QK_NORM = "    if att.q_norm is not None:\n        q, k = att.q_norm(q), att.k_norm(k)\n"
ROPE = "q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)"
REPEAT = "keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)"
SOFTMAX = "probs = torch.softmax(logits.float(), dim=-1)\n        weights"
EXPERT = "y = self.experts[e](tokens[token_idx]) * weights[token_idx, slot, None]"
F_E = "f = F.one_hot(chosen, num_experts).float().sum(dim=1).mean(dim=0)"
P_E = "p = probs.mean(dim=0)  # (num_experts,): mean probability"
GROUP = 'lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]'
DECAY = "                p.mul_(1 - lr * decay)  # decoupled weight decay, before the Adam update\n"
UPDATE = "p.addcdiv_(m, denom, value=-lr / (1 - beta1 ** t))  # - lr * m_hat / denom"
SCORES = "s = q_i @ k[..., j0:j1, :].to(work).transpose(-2, -1)"
LAST = "last = min(S, i1) if is_causal else S"
KEYS = "for j0 in range(0, last, block_k):"
MASK = "s = s.masked_fill(cols > rows, -math.inf)"
DQ = "dq[..., i0:i1, :] += ds @ k_j * scale"
DK = "dk[..., j0:j1, :] += ds.transpose(-2, -1) @ q_i * scale"
DV = "dv[..., j0:j1, :] += p.transpose(-2, -1) @ do_i"
DS = "ds = p * (dp - D[..., i0:i1, None])"
QKV = "weight = torch.cat([self.W_query.weight, self.W_key.weight, self.W_value.weight])"
SDPA_P = "dropout_p=self.dropout if self.training else 0.0"
PAD = "logit_mask[cfg.vocab_size:] = -math.inf"
BRANCHES = ("x = x + self.drop_shortcut(self.att(self.norm1(x)))\n"
            "        return x + self.drop_shortcut(self.ff(self.norm2(x)))",
            "x = x + self.att(self.norm1(x))\n        return x + self.ff(self.norm2(x))")

# (the name, file, edits, graded module, check): the check fails on the edit and gives that name
NAMED = [
    # 25
    ("the QK-norm applied after RoPE, not before", CACHE, [(QK_NORM, ""), (ROPE, ROPE + "\n" + QK_NORM.rstrip("\n"))],
     T25, "test_cached_logits_equal_the_full_pass"),
    ("the key/value heads repeated in the wrong order", CACHE, [(REPEAT, "keys, values = keys.repeat(1, group, 1, 1), "
                                                                         "values.repeat(1, group, 1, 1)")],
     T25, "test_cache_stores_only_the_kv_heads"),
    ("RoPE left off the cached keys", CACHE, [(ROPE, "q = apply_rope(q, cos, sin)")],
     T25, "test_cached_logits_equal_the_full_pass"),
    ("the scores not scaled by 1 / sqrt(head_dim)", CACHE, [(" / math.sqrt(att.head_dim)", "")], T25,
     "test_cached_logits_equal_the_full_pass"),
    # 26
    ("the router's softmax computed in bfloat16, not float32",
     MOE, [(SOFTMAX, SOFTMAX.replace("logits.float()", "logits"))],
     T26,
     "test_moe_router_softmax_in_float32_for_bfloat16"),
    ("the softmax taken over the tokens (dim=0)", MOE, [(SOFTMAX, SOFTMAX.replace("dim=-1", "dim=0"))],
     T26, "test_moe_matches_oracle"),
    # (checked on the committed layer, top_k 2: with one expert per token and no renormalisation, the right weight of an
    # unweighted output is the renormalised one, 1, so the random draws of test_moe_matches_oracle may not tell them apart)
    ("the chosen experts' outputs added without their weights",
     MOE, [(EXPERT, "y = self.experts[e](tokens[token_idx])")],
     T26,
     "test_moe_matches_transformers"),
    ("every chosen expert weighted by the first choice's probability", MOE, [(EXPERT, EXPERT.replace("slot", "0"))],
     T26,
     "test_moe_matches_transformers"),
    ("the softmax taken over the chosen logits only", MOE,
     [("weights, chosen = probs.topk(self.top_k, dim=-1)  # (tokens, top_k) each\n        if self.norm_topk_prob:\n"
       "            weights = weights / weights.sum(dim=-1, keepdim=True)",
       "top, chosen = logits.float().topk(self.top_k, dim=-1)\n        weights = torch.softmax(top, dim=-1)")],
     T26, "test_moe_matches_transformers"),
    ("a sum over the tokens where the mean is meant", MOE, [(P_E, "p = probs.sum(dim=0)")],
     T26, "test_load_balancing_loss_and_its_gradient"),
    ("a sum over the tokens where the mean is meant", MOE, [(F_E, F_E.replace(".mean(dim=0)", ".sum(dim=0)"))], T26,
     "test_load_balancing_loss_matches_transformers"),
    ("f_e taken as the mean probability", MOE, [(F_E, "f = probs.mean(dim=0)")],
     T26, "test_load_balancing_loss_matches_transformers"),
    ("router_logits holds the probabilities",
     MOE, [("self.router_logits = logits", "self.router_logits = torch.softmax(logits, -1)")],
     T26, "test_moe_dispatches_tokens_to_their_experts_only"),
    # 27
    ("beta1 and beta2 swapped", ADAMW, [(GROUP, GROUP.replace("(beta1, beta2)", "(beta2, beta1)"))],
     T27, "test_adamw_matches_torch"),
    ("beta1 and 1 - beta1 swapped in m", ADAMW, [("m.lerp_(g, 1 - beta1)", "m.lerp_(g, beta1)")],
     T27, "test_adamw_matches_torch"),
    ("v averages |g|, not g squared", ADAMW, [("v.mul_(beta2).addcmul_(g, g, value=1 - beta2)",
                                               "v.mul_(beta2).add_(g.abs(), alpha=1 - beta2)")],
                                                T27, "test_adamw_matches_torch"),
    ("the bias correction left off m only", ADAMW, [(UPDATE, "p.addcdiv_(m, denom, value=-lr)")],
     T27, "test_adamw_matches_torch"),
    ("the bias correction left off v only", ADAMW, [("denom = (v / (1 - beta2 ** t)).sqrt_()", "denom = v.sqrt()")],
     T27,
     "test_adamw_matches_torch"),
    ("the decay not multiplied by lr", ADAMW, [("p.mul_(1 - lr * decay)", "p.mul_(1 - decay)")],
     T27, "test_adamw_matches_torch"),
    ("the decay applied after the update instead of before",
     ADAMW, [(DECAY, ""), (UPDATE, UPDATE + "\n                p.mul_(1 - lr * decay)")],
     T27, "test_adamw_matches_torch"),
    ("one step count for the whole optimizer", ADAMW,
     [('t = state["step"].item()', "self._t = getattr(self, '_t', 0) + 1\n                t = self._t")],
     T27, "test_adamw_skips_parameters_without_a_gradient"),
    ("the optimizer's defaults used for every group", ADAMW, [(GROUP, GROUP.replace("group[", "self.defaults["))], T27,
     "test_adamw_matches_torch"),
    ("a parameter without a gradient stepped as if its gradient were 0", ADAMW,
     [("                if p.grad is None:\n                    continue\n                g = p.grad",
       "                g = p.grad if p.grad is not None else torch.zeros_like(p)")],
        T27, "test_adamw_skips_parameters_without_a_gradient"),
    # 28
    ("part of the computation done in float16, not float32", FWD,
     [(SCORES, "s = (q[..., i0:i1, :] @ k[..., j0:j1, :].transpose(-2, -1)).to(work) * scale")],
      T28, "test_tiled_attention_half_inputs"),
    ("the output not divided by l", FWD, [("(acc / l[..., None]).to(out.dtype)", "acc.to(out.dtype)")], T28,
     "test_tiled_attention_matches_sdpa"),
    ("lse is log(l) without the running maximum",
     FWD, [("lse[..., i0:i1] = m + torch.log(l)", "lse[..., i0:i1] = torch.log(l)")],
     T28,
     "test_tiled_attention_matches_sdpa"),
    ("the running sums rescaled by exp(m_new - m), the inverse", FWD,
     [("rescale = torch.exp(m - m_new)", "rescale = torch.exp(m_new - m).nan_to_num(posinf=0.0)")],
      T28, "test_tiled_attention_matches_sdpa"),
    ("the scale argument ignored",
     FWD, [("1.0 / math.sqrt(q.shape[-1]) if scale is None else scale", "1.0 / math.sqrt(q.shape[-1])")],
     T28,
     "test_tiled_attention_scale_and_float64"),
    ("the scores scaled by 1 / d, not 1 / sqrt(d)", FWD, [("1.0 / math.sqrt(q.shape[-1]) if", "1.0 / q.shape[-1] if")],
     T28,
     "test_tiled_attention_matches_sdpa"),
    ("the last, shorter key tile skipped", FWD, [(KEYS, "for j0 in range(0, last - last % block_k, block_k):")], T28,
     "test_tiled_attention_matches_sdpa"),
    ("the key tiles on the diagonal skipped", FWD, [(LAST, LAST.replace("i1", "i0"))],
     T28, "test_tiled_attention_causal"),
    ("the causal mask made from the tile's own indices", FWD,
     [(MASK, "s = s.masked_fill(cols - j0 > rows - i0, -math.inf)")], T28, "test_tiled_attention_causal"),
    ("the statistics (m, l, lse) kept in torch.float16", FWD,
     [("work = torch.promote_types(q.dtype, torch.float32)", "work = q.dtype")],
     T28, "test_tiled_attention_half_inputs"),
    ("D = rowsum(dO) without out", BWD, [("D = (d_out * out.to(work)).sum(dim=-1)", "D = d_out.sum(dim=-1)")],
     T29, "test_gradients_float64_exact"),
    # 29
    ("the scale left out of dk.", BWD, [(DK, DK.replace(" * scale", ""))], T29, "test_gradients_float64_exact"),
    ("the scale left out of dq.", BWD, [(DQ, DQ.replace(" * scale", ""))], T29, "test_gradients_float64_exact"),
    ("the scale applied twice to dq", BWD, [(DQ, DQ + " * scale")], T29, "test_gradients_float64_exact"),
    ("D summed over one key tile only", BWD, [(DS, "ds = p * (dp - (p * dp).sum(-1, keepdim=True))")],
     T29, "test_gradients_float64_exact"),
    ("each query's own key masked in the backward", BWD, [(MASK, MASK.replace(">", ">="))],
     T29, "test_gradients_float64_exact"),
    ("dq overwritten by each key tile", BWD, [(DQ, DQ.replace("+=", "="))], T29, "test_gradients_float64_exact"),
    ("dk overwritten by each query tile", BWD, [(DK, DK.replace("+=", "="))], T29, "test_gradients_float64_exact"),
    ("dv overwritten by each query tile", BWD, [(DV, DV.replace("+=", "="))],
     T29, "test_gradients_float32_ragged_tiles"),
    ("dv scaled: only dq and dk carry the scale", BWD, [(DV, DV + " * scale")], T29, "test_gradients_float64_exact"),
    # 30
    ("the attention's dropout left out in training mode", FAST, [(SDPA_P, "dropout_p=0.0")], T30,
     "test_fast_gpt_training_dropout_matches_gptmodel"),
    ("the attention's dropout left on in eval mode", FAST, [(SDPA_P, "dropout_p=self.dropout")], T30,
     "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("the residual branches' dropout (drop_shortcut) left out", FAST, [BRANCHES],
     T30, "test_fast_gpt_training_dropout_matches_gptmodel"),
    ("the embedding dropout is missing", FAST, [("self.trf_blocks(self.drop_emb(x))", "self.trf_blocks(x)")], T30,
     "test_fast_gpt_training_dropout_matches_gptmodel"),
    ("the mask starts 1 column(s) late", FAST, [(PAD, PAD.replace("vocab_size:", "vocab_size + 1:"))], T30,
     "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("the mask starts 1 column(s) early", FAST, [(PAD, PAD.replace("vocab_size:", "vocab_size - 1:"))], T30,
     "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("the queries and keys swapped",
     FAST, [(QKV, QKV.replace("W_query.weight, self.W_key", "W_key.weight, self.W_query"))],
     T30,
     "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("the joint projection split as (heads, 3, head_dim)", FAST,
     [("view(b, num_tokens, 3, self.num_heads, self.head_dim)",
       "view(b, num_tokens, self.num_heads, 3, self.head_dim)"),
      ("q, k, v = qkv.permute(2, 0, 3, 1, 4)", "q, k, v = qkv.permute(3, 0, 2, 1, 4)")],
     T30, "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("the heads merged without moving them back", FAST, [("context.transpose(1, 2).reshape(b, num_tokens, self.d_out)",
                                                          "context.reshape(b, num_tokens, self.d_out)")],
     T30, "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("the position embeddings left out",
     FAST, [(" + self.pos_emb(torch.arange(num_tokens, device=in_idx.device))", "")],
     T30,
     "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("the final LayerNorm left out", FAST, [("x = self.final_norm(self.trf_blocks(", "x = (self.trf_blocks(")], T30,
     "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("each key tile's probabilities normalised over that tile alone", BWD,
     [("p = torch.exp(s - lse[..., i0:i1, None])", "p = torch.exp(s - s.amax(dim=-1, keepdim=True)); p = p / p.sum(dim=-1, keepdim=True)")],
     T29, "test_gradients_float64_exact"),
    ("the chosen probabilities renormalised although norm_topk_prob is False", MOE,
     [("        if self.norm_topk_prob:\n            weights = weights /", "        if True:\n            weights = weights /")],
     T26, "test_moe_matches_transformers"),
    ("a size that is already a multiple padded by one more multiple", FAST,
     [("return -(-vocab_size // multiple) * multiple", "return (vocab_size // multiple + 1) * multiple")], T30, "test_padded_vocab_size"),
    ("the causal mask left off a tile that straddles the diagonal", FWD, [("if is_causal and j1 - 1 > i0:", "if is_causal and j0 > i0:")],
     T28, "test_tiled_attention_causal"),
    ("the causal mask left off a tile that straddles the diagonal", FWD, [("if is_causal and j1 - 1 > i0:", "if False:")],
     T28, "test_tiled_attention_causal"),
]

# (a name, and a different mistake plausibly confused with it that must not get it)
NEAR_MISSES = [
    ("the QK-norm applied after RoPE", CACHE, [(QK_NORM, "")], T25, "test_cached_logits_equal_the_full_pass"),
    ("the router's softmax computed in bfloat16", MOE, [(SOFTMAX, SOFTMAX.replace("dim=-1", "dim=0"))], T26,
     "test_moe_router_softmax_in_float32_for_bfloat16"),
    ("a sum over the tokens where the mean is meant",
     MOE, [("return num_experts * (f * p).sum()", "return (f * p).sum()")],
     T26,
     "test_load_balancing_loss_matches_transformers"),
    ("the decay applied after the update", ADAMW, [("p.mul_(1 - lr * decay)", "p.mul_(1 - lr * lr * decay)")], T27,
     "test_adamw_matches_torch"),
    ("beta1 and 1 - beta1 swapped in m", ADAMW, [("addcmul_(g, g, value=1 - beta2)", "addcmul_(g, g, value=beta2)")],
     T27,
     "test_adamw_matches_torch"),
    ("part of the computation done in",
     FWD, [("q_i = q[..., i0:i1, :].to(work) * scale", "q_i = q[..., i0:i1, :].to(work)")],
     T28,
     "test_tiled_attention_half_inputs"),
    ("the key tiles on the diagonal skipped", FWD, [(MASK, MASK.replace(">", ">="))],
     T28, "test_tiled_attention_causal"),
    ("the causal mask made from the tile's own indices", FWD, [(MASK, MASK.replace(">", ">="))], T28,
     "test_tiled_attention_causal"),
    ("D = rowsum(dO) without out", BWD, [(DS, "ds = p * dp")], T29, "test_gradients_float64_exact"),
    ("the scale left out of dq and dk", BWD, [(DK, DK.replace(" * scale", ""))],
     T29, "test_gradients_float32_ragged_tiles"),
    ("the scale left out of dq", BWD, [(DK, DK.replace(" * scale", ""))], T29, "test_gradients_float64_exact"),
    ("D summed over one key tile only", BWD, [(DS, "ds = p * dp")], T29, "test_gradients_float64_exact"),
    ("dq overwritten", BWD, [(DK, DK.replace("+=", "="))], T29, "test_gradients_float64_exact"),
    ("the attention's dropout left out", FAST, [BRANCHES], T30, "test_fast_gpt_training_dropout_matches_gptmodel"),
    ("the padded logits are not masked", FAST, [(PAD, PAD.replace("vocab_size:", "vocab_size + 1:"))], T30,
     "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("the mask starts", FAST, [("return F.linear(x, self.out_head.weight, self.logit_mask.to(x.dtype))",
                                "return F.linear(x, self.out_head.weight)")],
                                 T30, "test_fast_gpt_logits_match_and_padding_is_masked"),
    ("each key tile's probabilities normalised over that tile alone", BWD,
     [("p = torch.exp(s - lse[..., i0:i1, None])", "p = torch.exp(s - s.amax(dim=-1, keepdim=True))")],
     T29, "test_gradients_float64_exact"),
    ("added without their weights", MOE,
     [("probs = torch.softmax(logits.float(), dim=-1)\n        weights, chosen = probs.topk(self.top_k, dim=-1)",
       "top_logits, chosen = logits.float().topk(self.top_k, dim=-1)\n        weights = torch.softmax(top_logits, dim=-1)")],
     T26, "test_moe_router_softmax_in_float32_for_bfloat16"),
    ("padded by one more multiple", FAST, [("return -(-vocab_size // multiple) * multiple", "return vocab_size // multiple * multiple")],
     T30, "test_padded_vocab_size"),
    ("straddles the diagonal", FWD, [("rows = torch.arange(i0, i1, device=q.device)", "rows = torch.arange(0, i1 - i0, device=q.device)"),
                                     ("cols = torch.arange(j0, j1, device=q.device)", "cols = torch.arange(0, j1 - j0, device=q.device)")],
     T28, "test_tiled_attention_causal"),
    ("straddles the diagonal", FWD, [("s = s.masked_fill(cols > rows, -math.inf)", "s = s.masked_fill(cols >= rows, -math.inf)")],
     T28, "test_tiled_attention_causal"),
]


@pytest.mark.parametrize("case", NAMED, ids=[f"{c[3][5:7]}: {c[0]}" for c in NAMED])
def test_the_mistake_is_named(tmp_path, case):
    name, file, edits, module, check = case
    assert_mistake_named(tmp_path, name, file, edits, module, check, named=True)


@pytest.mark.parametrize("case", NEAR_MISSES, ids=[f"{c[3][5:7]}: not {c[0]}" for c in NEAR_MISSES])
def test_a_near_miss_is_not_given_the_name(tmp_path, case):
    name, file, edits, module, check = case
    assert_not_named(tmp_path, name, file, edits, module, check)


def test_the_named_checks_pass_on_the_solutions(tmp_path):
    assert_checks_pass(tmp_path, NAMED + NEAR_MISSES)
