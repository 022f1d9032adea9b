"""Each known mistake, fed to the check that should catch it: the failure names the mistake.

A copy of solutions/ gets the mistake; the check runs on it in this process (the same probes
as the worker, without the process boundary) for several seeds.
"""

import pytest
from helpers import SEEDS, assert_checks_pass, assert_mistake_named, impl_for, make_tree, run_check

from harness.failures import Mismatch

ATT_SCORES = "scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))"
CAUSAL = "allowed = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()"
MASK_FN = "return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()"
RMS_Y = "y = xf * torch.rsqrt(mean_square + self.eps)"
RMS_SCALE = "scale = 1.0 + self.weight.float() if self.offset else self.weight.float()"
SWIGLU_H = "hidden = silu(self.gate(x)) * self.up(x)"
ROPE_OUT = "return (xf * cos.float() + rotated * sin.float()).to(x.dtype)"
GELU = "return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))"

CASES = [
    # (mistake named in the message, file, [(old, new)], graded test module, check)
    ("no 1/sqrt(d_k) scaling", "attention.py", [(ATT_SCORES, "scores = q @ k.transpose(-2, -1)")], "test_01_attention", "test_attention_3d_matches_builtin"),
    ("scaling by 1/d_k instead of 1/sqrt(d_k)", "attention.py", [(ATT_SCORES, "scores = q @ k.transpose(-2, -1) / q.size(-1)")], "test_01_attention", "test_attention_3d_matches_builtin"),
    ("softmax over the wrong axis", "attention.py", [("return softmax(scores, dim=-1) @ v", "return softmax(scores, dim=-2) @ v")], "test_01_attention", "test_attention_3d_matches_builtin"),
    ("causal mask off by one: the diagonal is masked", "attention.py", [(CAUSAL, CAUSAL.replace(".tril()", ".tril(-1)"))], "test_01_attention", "test_attention_4d_causal_matches_builtin"),
    ("causal mask off by one: one future key is visible", "attention.py", [(CAUSAL, CAUSAL.replace(".tril()", ".tril(1)"))], "test_01_attention", "test_attention_4d_causal_matches_builtin"),
    ("causal mask inverted", "attention.py", [(CAUSAL, CAUSAL.replace(".tril()", ".triu()"))], "test_01_attention", "test_attention_4d_causal_matches_builtin"),
    ("the causal mask is not applied", "attention.py", [("    if is_causal:\n", "    if False:\n")], "test_01_attention", "test_attention_4d_causal_matches_builtin"),
    ("the boolean mask is read backwards", "attention.py", [("scores.masked_fill(~attn_mask,", "scores.masked_fill(attn_mask,")], "test_01_attention", "test_attention_bool_mask"),
    ("the float mask was ignored", "attention.py", [("scores = scores + attn_mask", "scores = scores")], "test_01_attention", "test_attention_additive_float_mask"),
    ("exp overflowed", "attention.py", [("e = torch.exp(x - m)", "e = torch.exp(x)")], "test_01_attention", "test_softmax_stable_for_large_logits"),
    ("an all -inf row gives NaN", "attention.py", [("m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))", "m = m")], "test_01_attention", "test_softmax_all_masked_row_gives_zeros"),
    ("the mask is inverted", "attention.py", [(MASK_FN, MASK_FN.replace(".tril()", ".triu(1)"))], "test_01_attention", "test_causal_mask"),
    ("the diagonal is excluded", "attention.py", [(MASK_FN, MASK_FN.replace(".tril()", ".tril(-1)"))], "test_01_attention", "test_causal_mask"),
    ("unbiased variance", "layers.py", [("unbiased=False)", "unbiased=True)")], "test_02_layernorm", "test_layernorm_forward_matches_builtin"),
    ("the mean and variance computed in bfloat16", "layers.py", [("        xf = x.float()", "        xf = x")], "test_02_layernorm", "test_layernorm_bfloat16_statistics_keep_a_large_mean"),
    ("eps outside the square root", "layers.py", [("torch.sqrt(var + self.eps)", "(torch.sqrt(var) + self.eps)")], "test_02_layernorm", "test_layernorm_eps_inside_the_root"),
    ("the standard deviation is missing its square root", "layers.py", [("torch.sqrt(var + self.eps)", "(var + self.eps)")], "test_02_layernorm", "test_layernorm_forward_matches_builtin"),
    ("scale and shift are not applied", "layers.py", [("return (y * self.scale.float() + self.shift.float()).to(x.dtype)", "return y.to(x.dtype)")], "test_02_layernorm", "test_layernorm_forward_matches_builtin"),
    ("the exact (erf) GELU instead of the tanh approximation", "layers.py", [(GELU, "return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))")], "test_02_layernorm", "test_gelu_matches_builtin"),
    ("the sigmoid approximation", "layers.py", [(GELU, "return x * torch.sigmoid(1.702 * x)")], "test_02_layernorm", "test_gelu_matches_builtin"),
    ("the cubic term is missing", "layers.py", [(GELU, "return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * x))")], "test_02_layernorm", "test_gelu_matches_builtin"),
    # 19: RMSNorm
    ("the mean was subtracted", "rmsnorm.py", [(RMS_Y, "y = (xf - xf.mean(-1, keepdim=True)) * torch.rsqrt(xf.var(-1, keepdim=True, unbiased=False) + self.eps)")], "test_19_rmsnorm", "test_rmsnorm_matches_builtin"),
    ("eps outside the square root", "rmsnorm.py", [(RMS_Y, "y = xf / (torch.sqrt(mean_square) + self.eps)")], "test_19_rmsnorm", "test_rmsnorm_eps_inside_the_root"),
    ("the root is missing", "rmsnorm.py", [(RMS_Y, "y = xf / (mean_square + self.eps)")], "test_19_rmsnorm", "test_rmsnorm_matches_builtin"),
    ("Gemma's offset: the weight applied as it is", "rmsnorm.py", [(RMS_SCALE, "scale = self.weight.float()")], "test_19_rmsnorm", "test_rmsnorm_gemma_offset"),
    ("the offset applied without offset=True", "rmsnorm.py", [(RMS_SCALE, "scale = 1.0 + self.weight.float()")], "test_19_rmsnorm", "test_rmsnorm_matches_builtin"),
    ("the statistics computed in bfloat16", "rmsnorm.py", [("        xf = x.float()", "        xf = x")], "test_19_rmsnorm", "test_rmsnorm_bfloat16_statistics_in_float32"),
    # 20: SwiGLU
    ("SiLU on the up projection instead of the gate", "swiglu.py", [(SWIGLU_H, "hidden = self.gate(x) * silu(self.up(x))")], "test_20_swiglu", "test_swiglu_matches_oracle"),
    ("a sigmoid gate (GLU), not SiLU", "swiglu.py", [(SWIGLU_H, "hidden = torch.sigmoid(self.gate(x)) * self.up(x)")], "test_20_swiglu", "test_swiglu_matches_oracle"),
    ("the gate added to the up projection, not multiplied", "swiglu.py", [(SWIGLU_H, "hidden = silu(self.gate(x)) + self.up(x)")], "test_20_swiglu", "test_swiglu_backward_matches_autograd"),
    ("SiLU applied after the product", "swiglu.py", [(SWIGLU_H, "hidden = silu(self.gate(x) * self.up(x))")], "test_20_swiglu", "test_swiglu_matches_oracle"),
    ("the sigmoid alone", "swiglu.py", [("    return x * torch.sigmoid(x)", "    return torch.sigmoid(x)")], "test_20_swiglu", "test_silu_matches_builtin"),
    # 21: RoPE
    ("the exponent is i / head_dim, not 2i / head_dim", "rope.py", [("torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim", "torch.arange(0, head_dim // 2, dtype=torch.float32) / head_dim")], "test_21_rope", "test_rope_frequencies"),
    ("the positions start at 0, not at the ones given", "rope.py", [("angles = positions.to(torch.float32)[:, None]", "angles = torch.arange(len(positions), dtype=torch.float32)[:, None]")], "test_21_rope", "test_rope_cos_sin_at_absolute_positions"),
    ("the positions start at 0, not at the ones given", "rope.py", [("angles = positions.to(torch.float32)[:, None]", "angles = torch.arange(len(positions), dtype=torch.float32)[:, None]")], "test_21_rope", "test_a_cached_decode_rotates_as_the_full_pass"),
    ("the halves interleaved, not repeated", "rope.py", [("angles = torch.cat([angles, angles], dim=-1)", "angles = torch.stack([angles, angles], dim=-1).flatten(-2)")], "test_21_rope", "test_rope_cos_sin_at_absolute_positions"),
    ("neighbours paired (interleaved), not the two halves", "rope.py", [(ROPE_OUT, "c, s = cos.float()[..., :half], sin.float()[..., :half]\n    x1, x2 = xf[..., 0::2], xf[..., 1::2]\n    return torch.stack([x1 * c - x2 * s, x2 * c + x1 * s], -1).flatten(-2).to(x.dtype)")], "test_21_rope", "test_apply_rope_matches_the_complex_rotation"),
    ("rotated the wrong way", "rope.py", [("rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)", "rotated = torch.cat([xf[..., half:], -xf[..., :half]], dim=-1)")], "test_21_rope", "test_apply_rope_matches_the_complex_rotation"),
    # 22: grouped-query attention
    ("the kv heads repeated in the wrong order", "gqa.py", [("k = k.repeat_interleave(group, dim=1)", "k = k.repeat(1, group, 1, 1)"), ("v = v.repeat_interleave(group, dim=1)", "v = v.repeat(1, group, 1, 1)")], "test_22_gqa", "test_gqa_matches_oracle"),
    ("the window one token too wide", "gqa.py", [("allowed = allowed & (j > i - self.window)", "allowed = allowed & (j >= i - self.window)")], "test_22_gqa", "test_gqa_sliding_window"),
    ("the QK-norm applied after RoPE", "gqa.py", [("        if self.q_norm is not None:  # Qwen3 normalises each head's queries and keys before rotating them\n            q, k = self.q_norm(q), self.k_norm(k)\n", ""), ("        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # positions enter here, in q and k only\n", "        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # positions enter here, in q and k only\n        if self.q_norm is not None:  # Qwen3 normalises each head's queries and keys before rotating them\n            q, k = self.q_norm(q), self.k_norm(k)\n")], "test_22_gqa", "test_gqa_with_qk_norm_as_qwen3"),
    ("RoPE not applied to the keys", "gqa.py", [("q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)", "q = apply_rope(q, cos, sin)")], "test_22_gqa", "test_gqa_matches_oracle"),
    ("no 1/sqrt(head_dim) scaling", "gqa.py", [("scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)", "scores = q @ k.transpose(2, 3)")], "test_22_gqa", "test_gqa_matches_oracle"),
]


# ------------------------------------------------------------------------- tokenization and data

TOKEN_CASES = [
    ("a pre-tokenizer pattern without the contractions", "pretokenize.py", [("'s|'t|'re|'ve|'m|'ll|'d| ?", " ?")], "test_05_tokenizer", "test_encode_stress_corpus_like_tiktoken"),
    ("overlapping pairs merged", "bpe.py", [("            i += 2\n", "            i += 1\n")], "test_03_bpe_merge", "test_merge_overlapping_runs_left_to_right"),
    ("ties broken by the least pair", "bpe.py", [("            return self.key > other.key", "            return self.key < other.key")], "test_04_bpe_train", "test_ties_go_to_the_greatest_pair"),
    ("ties broken by the token ids", "bpe.py", [("Greatest((vocab[a], vocab[b]))", "Greatest((a, b))"), ("Greatest((vocab[p[0]], vocab[p[1]]))", "Greatest(p)")], "test_04_bpe_train", "test_ties_go_to_the_greatest_pair"),
    ("targets not shifted by one", "data.py", [("self.target_ids.append(ids[i + 1 : i + max_length + 1])", "self.target_ids.append(ids[i : i + max_length])")], "test_06_dataloader", "test_dataset_windows_overlapping"),
]


# ------------------------------------------------------------------------- the KV cache (12)

CACHE_CASES = [
    ("the cache is not reset", "kv_cache.py", [("    cache.reset()\n    finished", "    finished")], "test_12_kv_cache", "test_greedy_cached_equals_uncached"),
    ("missing position offset", "kv_cache.py", [("positions = torch.arange(start, start + num_tokens, device=in_idx.device)", "positions = torch.arange(0, num_tokens, device=in_idx.device)")], "test_12_kv_cache", "test_chunk_after_prefill"),
    ("the causal mask is not aligned to absolute positions", "kv_cache.py", [("~att.mask[start:start + num_tokens, :start + num_tokens]", "~att.mask[:num_tokens, :start + num_tokens]")], "test_12_kv_cache", "test_chunk_after_prefill"),
]


# ------------------------------------------------------------------------- the model track (07-11)

SPLIT = "return t.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)"
MERGE = "context = context.transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)"
SCORES = "scores = queries @ keys.transpose(2, 3) / math.sqrt(self.head_dim)"
MASKFILL = "scores.masked_fill_(~self.mask[:num_tokens, :num_tokens], float(\"-inf\"))"
WEIGHTS = "weights = self.dropout(softmax(scores, dim=-1))"
ATT = "x = x + self.drop_shortcut(self.att(self.norm1(x)))"
FF = "x = x + self.drop_shortcut(self.ff(self.norm2(x)))"
EMB = "x = self.tok_emb(in_idx) + self.pos_emb(positions)"
DROP_EMB = "        x = self.drop_emb(x)\n"
TRAIN_07 = "test_multihead_training_dropout_falls_on_the_attention_weights"
TRAIN_08 = "test_block_training_dropout_on_each_branch_output"
TRAIN_09 = "test_gpt_training_dropout_on_the_embeddings_and_in_the_blocks"
MODEL_CASES = [
 ("heads split with a reshape but no transpose", "multihead.py", [(SPLIT, "return t.reshape(b, self.num_heads, num_tokens, self.head_dim)")], "test_07_multihead", "test_multihead_matches_builtin_attention"),
 ("heads merged with a reshape but no transpose", "multihead.py", [(MERGE, "context = context.reshape(b, num_tokens, self.d_out)")], "test_07_multihead", "test_multihead_matches_builtin_attention"),
 ("no causal mask", "multihead.py", [(MASKFILL, "pass")], "test_07_multihead", "test_multihead_matches_nn_multiheadattention"),
 ("no 1/sqrt(head_dim) scaling", "multihead.py", [(SCORES, "scores = queries @ keys.transpose(2, 3)")], "test_07_multihead", "test_multihead_matches_builtin_attention"),
 ("scaled by 1/sqrt(d_out)", "multihead.py", [(SCORES, SCORES.replace("self.head_dim", "self.d_out"))], "test_07_multihead", "test_multihead_backward_matches_autograd"),
 ("out_proj is not applied", "multihead.py", [("return self.out_proj(context)", "return context")], "test_07_multihead", "test_multihead_matches_builtin_attention"),
 ("dropout is active in eval", "multihead.py", [(WEIGHTS, "weights = torch.nn.functional.dropout(softmax(scores, dim=-1), self.dropout.p, training=True)")], "test_07_multihead", "test_multihead_eval_mode_has_no_dropout"),
 ("dropout on the module's output", "multihead.py", [(WEIGHTS, "weights = softmax(scores, dim=-1)"), ("return self.out_proj(context)", "return self.dropout(self.out_proj(context))")], "test_07_multihead", TRAIN_07),
 ("dropout is not applied in training mode", "multihead.py", [(WEIGHTS, "weights = softmax(scores, dim=-1)")], "test_07_multihead", TRAIN_07),
 ("dropout on the scores before the softmax", "multihead.py", [(SCORES, "scores = self.dropout(queries @ keys.transpose(2, 3) / math.sqrt(self.head_dim))"), (WEIGHTS, "weights = softmax(scores, dim=-1)")], "test_07_multihead", TRAIN_07),
 ("the book's", "multihead.py", [('self.register_buffer("mask", causal_mask(context_length), persistent=False)', 'self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))'), ("~self.mask[:num_tokens, :num_tokens]", "self.mask.bool()[:num_tokens, :num_tokens]")], "test_07_multihead", "test_multihead_mask_is_a_causal_buffer"),
 ("expected a ValueError", "multihead.py", [("        if d_out % num_heads != 0:\n", "        if False:\n")], "test_07_multihead", "test_multihead_rejects_d_out_not_divisible_by_num_heads"),
 ("post-norm instead of pre-norm", "block.py", [(ATT, "x = self.norm1(x + self.drop_shortcut(self.att(x)))"), (FF, "x = self.norm2(x + self.drop_shortcut(self.ff(x)))")], "test_08_block", "test_block_matches_oracle"),
 ("missing residual connections", "block.py", [(ATT, "x = self.drop_shortcut(self.att(self.norm1(x)))"), (FF, "x = self.drop_shortcut(self.ff(self.norm2(x)))")], "test_08_block", "test_block_matches_oracle"),
 ("the attention branch has no residual", "block.py", [(ATT, "x = self.drop_shortcut(self.att(self.norm1(x)))")], "test_08_block", "test_block_backward_matches_autograd"),
 ("the shortcut carries norm(x)", "block.py", [(ATT, "x = self.norm1(x)\n        x = x + self.drop_shortcut(self.att(x))"), (FF, "x = self.norm2(x)\n        x = x + self.drop_shortcut(self.ff(x))")], "test_08_block", "test_block_matches_oracle"),
 ("dropout is active in eval", "block.py", [(ATT, "x = x + torch.nn.functional.dropout(self.att(self.norm1(x)), self.drop_shortcut.p, training=True)")], "test_08_block", "test_block_eval_mode_has_no_dropout"),
 ("the shortcut dropout is never applied", "block.py", [(ATT, "x = x + self.att(self.norm1(x))"), (FF, "x = x + self.ff(self.norm2(x))")], "test_08_block", TRAIN_08),
 ("dropout on the sum x + branch", "block.py", [(ATT, "x = self.drop_shortcut(x + self.att(self.norm1(x)))"), (FF, "x = self.drop_shortcut(x + self.ff(self.norm2(x)))")], "test_08_block", TRAIN_08),
 ("dropout on the branch's input", "block.py", [(ATT, "x = x + self.att(self.drop_shortcut(self.norm1(x)))"), (FF, "x = x + self.ff(self.drop_shortcut(self.norm2(x)))")], "test_08_block", TRAIN_08),
 ("the embedding dropout is missing", "model.py", [(DROP_EMB, "")], "test_09_gpt", TRAIN_09),
 ("dropout on the token embeddings before the positions", "model.py", [(EMB, "x = self.drop_emb(self.tok_emb(in_idx)) + self.pos_emb(positions)"), (DROP_EMB, "")], "test_09_gpt", TRAIN_09),
 ("ReLU instead of GELU", "block.py", [("            GELU(),\n", "            nn.ReLU(),\n")], "test_08_block", "test_feedforward_matches_oracle"),
 ("the position embeddings are missing", "model.py", [(EMB, "x = self.tok_emb(in_idx)")], "test_09_gpt", "test_gpt_forward_matches_oracle"),
 ("the final LayerNorm is missing", "model.py", [("        x = self.final_norm(x)\n", "")], "test_09_gpt", "test_gpt_forward_matches_oracle"),
 ("That is the untied count", "model.py", [("        if cfg.tie_weights:\n            self.out_head.weight = self.tok_emb.weight\n", "")], "test_09_gpt", "test_gpt2_small_parameter_counts"),
 ("the output head is not tied to the token embedding", "model.py", [("        if cfg.tie_weights:\n            self.out_head.weight = self.tok_emb.weight\n", "")], "test_09_gpt", "test_gpt_parameters_are_named_and_shaped"),
 ("the output head is tied although tie_weights is False", "model.py", [("        if cfg.tie_weights:\n            self.out_head.weight = self.tok_emb.weight\n", "        self.out_head.weight = self.tok_emb.weight\n")], "test_09_gpt", "test_gpt_parameters_are_named_and_shaped"),
 ("raised IndexError", "model.py", [("        if num_tokens > self.cfg.context_length:\n", "        if False:\n")], "test_09_gpt", "test_gpt_rejects_input_longer_than_context"),
 ("the window keeps the FIRST", "generate.py", [("model(idx[:, -context_size:])", "model(idx[:, :context_size])")], "test_10_generate", "test_greedy_is_argmax_and_crops_to_the_context"),
 ("multiplied by the temperature", "generate.py", [("logits = logits / temperature", "logits = logits * temperature")], "test_10_generate", "test_temperature_sampling_matches_softmax"),
 ("the temperature is ignored", "generate.py", [("logits = logits / temperature", "logits = logits")], "test_10_generate", "test_temperature_sampling_matches_softmax"),
 ("greedy decoding although temperature > 0", "generate.py", [("if temperature == 0:", "if True:")], "test_10_generate", "test_temperature_sampling_matches_softmax"),
 ("the token that crosses top_p is dropped", "generate.py", [("masked_fill(before >= top_p,", "masked_fill(probs.cumsum(dim=-1) > top_p,")], "test_10_generate", "test_top_p_keeps_the_nucleus"),
 ("top_k is not applied", "generate.py", [("logits = logits.masked_fill(logits < kth, float(\"-inf\"))", "logits = logits")], "test_10_generate", "test_top_k_never_leaves_the_top_k"),
 ("top-k keeps k + 1 tokens", "generate.py", [("torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]", "torch.topk(logits, min(top_k + 1, logits.size(-1)), dim=-1).values[:, -1:]")], "test_10_generate", "test_top_k_never_leaves_the_top_k"),
 ("eos_id is ignored", "generate.py", [("        if eos_id is not None:\n            idx_next", "        if False:\n            idx_next"), ("if eos_id is not None and bool(finished.all()):", "if False:")], "test_10_generate", "test_eos_stops_generation"),
 ("pass generator=generator", "generate.py", [("idx_next = torch.multinomial(probs, 1, generator=generator)", "idx_next = torch.multinomial(probs, 1)")], "test_10_generate", "test_sampling_is_reproducible_with_a_generator"),
 ("(c_attn and attn.c_proj) were not transposed", "weights.py", [("copy(linear.weight, w.T)", "copy(linear.weight, w)"), ("conv1d(att.out_proj, h + \"attn.c_proj\")", "copy(att.out_proj.weight, take(h + 'attn.c_proj.weight', att.out_proj.weight.shape)); copy(att.out_proj.bias, take(h + 'attn.c_proj.bias', att.out_proj.bias.shape))")], "test_11_gpt2_weights", "test_logits_match_transformers"),
 ("query, key and value weights were not transposed", "weights.py", [("copy(linear.weight, w.T)", "copy(linear.weight, w)")], "test_11_gpt2_weights", "test_random_checkpoint_matches_gpt2_forward"),
 ("wrong order", "weights.py", [("(att.W_query, att.W_key, att.W_value), (q, k, v)):\n            copy(linear.weight", "(att.W_key, att.W_query, att.W_value), (q, k, v)):\n            copy(linear.weight"), ("(att.W_query, att.W_key, att.W_value), (q, k, v)):\n                copy(linear.bias", "(att.W_key, att.W_query, att.W_value), (q, k, v)):\n                copy(linear.bias")], "test_11_gpt2_weights", "test_random_checkpoint_matches_gpt2_forward"),
 ("LayerNorm weight and bias swapped", "weights.py", [('copy(module.scale, take(key + ".weight"', 'copy(module.scale, take(key + ".bias"'), ('copy(module.shift, take(key + ".bias"', 'copy(module.shift, take(key + ".weight"')], "test_11_gpt2_weights", "test_hub_layout_with_mask_buffers"),
 ("does not name", "weights.py", [("        if tuple(t.shape) != tuple(shape):\n", "        if False:\n")], "test_11_gpt2_weights", "test_shape_mismatch_names_the_key"),
]


# ------------------------------------------------------------------------- the modern decoder (23, 24)

M_ATT = "x = x + self.att(self.norm1(x))  # (batch, num_tokens, emb_dim): the branch reads a normalised copy"
M_FF = "return x + self.ff(self.norm2(x))  # the residual stream itself is never normalised inside a block"
M_TIE = "        if cfg.tie_weights:\n            self.out_head.weight = self.tok_emb.weight  # one matrix reads tokens in and writes them out\n"
M_EMB = "x = self.tok_emb(in_idx)  # (batch"
M_GATE_UP = '("gate_proj", block.ff.gate), ("up_proj", block.ff.up)'
M_KV = '("k_proj", att.W_key), ("v_proj", att.W_value)'
MODERN_CASES = [
    ("the residual connections are missing", "modern.py", [(M_ATT, "x = self.att(self.norm1(x))"), (M_FF, "return self.ff(self.norm2(x))")], "test_23_modern_model", "test_modern_block_matches_oracle"),
    ("post-norm", "modern.py", [(M_ATT, "x = self.norm1(x + self.att(x))"), (M_FF, "return self.norm2(x + self.ff(x))")], "test_23_modern_model", "test_modern_block_matches_oracle"),
    ("norm1 used before both branches", "modern.py", [(M_FF, "return x + self.ff(self.norm1(x))")], "test_23_modern_model", "test_modern_block_matches_oracle"),
    ("parallel branches", "modern.py", [(M_ATT, "pass"), (M_FF, "return x + self.att(self.norm1(x)) + self.ff(self.norm2(x))")], "test_23_modern_model", "test_modern_model_matches_oracle"),
    ("the final RMSNorm is missing", "modern.py", [("return self.out_head(self.final_norm(x))", "return self.out_head(x)")], "test_23_modern_model", "test_modern_model_matches_oracle"),
    ("the embeddings scaled by sqrt(emb_dim)", "modern.py", [(M_EMB, "x = self.tok_emb(in_idx) * math.sqrt(self.cfg.emb_dim)  # (batch")], "test_23_modern_model", "test_modern_backward_reaches_every_parameter"),
    ("the output head is not tied to the token embedding", "modern.py", [(M_TIE, "")], "test_23_modern_model", "test_modern_parameters_are_named_and_shaped"),
    ("the head is not tied to the embedding", "modern.py", [(M_TIE, "")], "test_23_modern_model", "test_presets_have_the_published_parameter_counts"),
    ("qk_norm was not passed", "modern.py", [("cfg.head_dim, cfg.qk_norm, cfg.window", "cfg.head_dim, False, cfg.window")], "test_23_modern_model", "test_modern_parameters_are_named_and_shaped"),
    ("gate_proj and up_proj swapped", "hf_weights.py", [(M_GATE_UP, '("gate_proj", block.ff.up), ("up_proj", block.ff.gate)')], "test_24_hf_weights", "test_random_checkpoint_matches_oracle"),
    ("input_layernorm and post_attention_layernorm swapped", "hf_weights.py", [('"input_layernorm.weight", block.norm1.weight', '"input_layernorm.weight", block.norm2.weight'), ('"post_attention_layernorm.weight", block.norm2.weight', '"post_attention_layernorm.weight", block.norm1.weight')], "test_24_hf_weights", "test_llama_logits_match_transformers"),
    ("k_proj and v_proj swapped", "hf_weights.py", [(M_KV, '("k_proj", att.W_value), ("v_proj", att.W_key)')], "test_24_hf_weights", "test_qwen3_logits_match_transformers"),
    ("q_norm and k_norm swapped", "hf_weights.py", [('"self_attn.q_norm.weight", att.q_norm.weight', '"self_attn.q_norm.weight", att.k_norm.weight'), ('"self_attn.k_norm.weight", att.k_norm.weight', '"self_attn.k_norm.weight", att.q_norm.weight')], "test_24_hf_weights", "test_qwen3_logits_match_transformers"),
    ("lm_head.weight ignored", "hf_weights.py", [('take("lm_head.weight", model.out_head.weight, key_prefix="")', 'used.add("lm_head.weight"); take("embed_tokens.weight", model.out_head.weight)')], "test_24_hf_weights", "test_llama_logits_match_transformers"),
    ("RoPE at positions 0, 1, ... in every chunk", "modern_cache.py", [("cos, sin = rope_cos_sin(q, positions, att.theta, att.rope_scaling)", "cos, sin = rope_cos_sin(q, positions - start, att.theta, att.rope_scaling)")], "test_25_modern_cache", "test_cached_logits_equal_the_full_pass"),
    ("the QK-norm skipped in the cached attention", "modern_cache.py", [("    if att.q_norm is not None:\n        q, k = att.q_norm(q), att.k_norm(k)\n", "")], "test_25_modern_cache", "test_cached_logits_equal_the_full_pass"),
    ("the window one token too wide", "modern_cache.py", [("(key_positions[None, :] > positions[:, None] - att.window)", "(key_positions[None, :] >= positions[:, None] - att.window)")], "test_25_modern_cache", "test_sliding_window_cache_keeps_only_the_window"),
    ("every expert ran on every token, weighted by its full softmax", "moe.py", [("weights, chosen = probs.topk(self.top_k, dim=-1)  # (tokens, top_k) each", "weights, chosen = probs, torch.arange(self.num_experts).expand(probs.shape)")], "test_26_moe", "test_moe_matches_oracle"),
    ("every expert ran on every token. Gather", "moe.py", [("y = self.experts[e](tokens[token_idx]) * weights[token_idx, slot, None]\n            out.index_add_(0, token_idx, y)", "y = self.experts[e](tokens)\n            out.index_add_(0, token_idx, (y[token_idx] * weights[token_idx, slot, None]))"), ("for e in chosen.unique().tolist():", "for e in range(self.num_experts):")], "test_26_moe", "test_moe_dispatches_tokens_to_their_experts_only"),
    ("the top-k probabilities were not renormalised", "moe.py", [("        if self.norm_topk_prob:\n            weights = weights / weights.sum(dim=-1, keepdim=True)\n", "")], "test_26_moe", "test_moe_matches_transformers"),
    ("the router's logits used as weights", "moe.py", [("probs = torch.softmax(logits.float(), dim=-1)\n        weights", "probs = logits.float()\n        weights")], "test_26_moe", "test_moe_backward_reaches_the_router_and_the_chosen_experts"),
    ("the num_experts factor is missing", "moe.py", [("return num_experts * (f * p).sum()", "return (f * p).sum()")], "test_26_moe", "test_load_balancing_loss_matches_transformers"),
    ("f_e divided by top_k", "moe.py", [("return num_experts * (f * p).sum()", "return num_experts * (f / top_k * p).sum()")], "test_26_moe", "test_load_balancing_loss_matches_transformers"),
    ("rope_scaling not passed to the attention", "modern.py", [("cfg.theta, cfg.eps, cfg.rope_scaling)", "cfg.theta, cfg.eps)")], "test_23_modern_model", "test_modern_model_matches_oracle"),
    ("rope_scaling not passed to rope_cos_sin", "gqa.py", [("self.theta, self.rope_scaling)  # (t, head_dim) each", "self.theta)  # (t, head_dim) each")], "test_22_gqa", "test_gqa_with_llama3_rope_scaling"),
    ("the slow pairs multiplied by factor instead of divided", "rope.py", [("blended = (1 - s) * f / factor + s * f", "blended = (1 - s) * f * factor + s * f"), ("torch.where(wavelength > low_wavelength, f / factor,", "torch.where(wavelength > low_wavelength, f * factor,")], "test_21_rope", "test_llama3_frequencies_match_oracle"),
    ("the pairs in between not blended", "rope.py", [("torch.where(wavelength < high_wavelength, f, blended)", "f")], "test_21_rope", "test_llama3_frequencies_match_transformers"),
    ("the scaling ignored", "rope.py", [("    if scaling is not None:\n        inv_freq = llama3_frequencies(inv_freq, **scaling)\n", "")], "test_21_rope", "test_rope_cos_sin_with_llama3_scaling"),
    ("L2 regularisation", "adamw.py", [("p.mul_(1 - lr * decay)  # decoupled weight decay, before the Adam update", "g = g.add(p, alpha=decay)")], "test_27_adamw", "test_adamw_matches_torch"),
    ("no bias correction", "adamw.py", [("denom = (v / (1 - beta2 ** t)).sqrt_().add_(eps)", "denom = v.sqrt().add_(eps)"), ("value=-lr / (1 - beta1 ** t))", "value=-lr)")], "test_27_adamw", "test_adamw_matches_torch"),
    ("eps inside the square root", "adamw.py", [("denom = (v / (1 - beta2 ** t)).sqrt_().add_(eps)", "denom = (v / (1 - beta2 ** t)).add_(eps).sqrt_()")], "test_27_adamw", "test_adamw_state_dict_round_trip"),
    ("the decay multiplied by lr squared", "adamw.py", [("p.mul_(1 - lr * decay)", "p.mul_(1 - lr * lr * decay)")], "test_27_adamw", "test_adamw_matches_torch"),
    ("rope_theta is at the top level", "hf_weights.py", [('theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))', 'theta=float(hf.get("rope_theta", 10_000.0))')], "test_24_hf_weights", "test_config_from_hf"),
]

ROPE_LATER = [
    ("compute the angles in float32", "rope.py", [("angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]",
                                                 "angles = positions.to(x.dtype)[:, None] * inv_freq.to(x.dtype)[None, :]")],
     "test_21_rope", "test_rope_angles_stay_float32_in_bfloat16"),
    ("return x's dtype", "rope.py", [(ROPE_OUT, "return xf * cos.float() + rotated * sin.float()")], "test_21_rope", "test_apply_rope_keeps_bfloat16"),
]

ALL_LATER = TOKEN_CASES + MODEL_CASES + CACHE_CASES + ROPE_LATER + MODERN_CASES


@pytest.mark.parametrize("mistake, file, edits, module, check", CASES, ids=[c[0] for c in CASES])
def test_the_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, exact=True)


@pytest.mark.parametrize("mistake, file, edits, module, check", ALL_LATER, ids=[c[0] for c in ALL_LATER])
def test_the_failure_names_the_mistake_in_later_tracks(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check)


def test_the_correct_solution_names_no_mistake(tmp_path):
    """The fingerprints must not fire on the reference: every check above passes on solutions/."""
    assert_checks_pass(tmp_path, CASES + ALL_LATER)


def test_ties_broken_by_the_first_pair_met_are_named(tmp_path):
    """The naive trainer's own "first pair met" variant, as a learner's train_bpe: named."""
    from harness.manifest import ROOT

    naive = (ROOT / "reference" / "naive_bpe.py").read_text().replace("from __future__ import annotations\n", "")
    tree = make_tree(tmp_path)
    bpe = tree / "bpe.py"
    bpe.write_text(bpe.read_text() + "\n" + naive + "\n\ndef train_bpe(text, vocab_size, special_tokens):\n"
                   "    return train(text, vocab_size, special_tokens, tie='first')\n")
    tests, impl = impl_for(tree, "test_04_bpe_train")
    named = 0
    for seed in SEEDS:
        try:
            run_check(tests.test_ties_go_to_the_greatest_pair, impl, seed)
        except Mismatch as failure:
            assert "This looks like: ties broken by the first pair met" in str(failure), f"seed {seed}: {failure}"
            named += 1
    assert named, "the mistake went unseen for every seed"


def test_mistakes_in_19_and_21_cost_grouped_query_attention_nothing(tmp_path):
    """22 builds on RMSNorm and RoPE, graded with the reference parts: broken ones change nothing."""
    tree = make_tree(tmp_path, {"rope.py": [("rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)",
                                             "rotated = torch.cat([xf[..., half:], -xf[..., :half]], dim=-1)")],
                                "rmsnorm.py": [("        xf = x.float()", "        xf = x.float() - x.float().mean(-1, keepdim=True)")]})
    tests, impl = impl_for(tree, "test_22_gqa")
    for name in [k for k in vars(tests) if k.startswith("test_")]:
        for seed in SEEDS:
            run_check(getattr(tests, name), impl, seed)


def test_mistakes_in_19_to_22_cost_the_modern_model_nothing(tmp_path):
    """23 builds on RMSNorm, SwiGLU, RoPE and grouped-query attention, graded with the reference
    parts: broken ones change nothing."""
    tree = make_tree(tmp_path, {"rmsnorm.py": [("        xf = x.float()", "        xf = x.float() - x.float().mean(-1, keepdim=True)")],
                                "swiglu.py": [("hidden = silu(self.gate(x)) * self.up(x)", "hidden = silu(self.up(x)) * self.gate(x)")],
                                "rope.py": [("rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)",
                                             "rotated = torch.cat([xf[..., half:], -xf[..., :half]], dim=-1)")],
                                "gqa.py": [("k = k.repeat_interleave(group, dim=1)", "k = k.repeat(1, group, 1, 1)")]})
    tests, impl = impl_for(tree, "test_23_modern_model")
    for name in [k for k in vars(tests) if k.startswith("test_")]:
        for seed in SEEDS:
            run_check(getattr(tests, name), impl, seed)


def test_mistakes_in_23_cost_loading_checkpoints_nothing(tmp_path):
    """24 loads into the reference ModernModel: a post-norm, untied learner model changes nothing."""
    tree = make_tree(tmp_path, {"modern.py": [(M_ATT, "x = self.norm1(x + self.att(x))"), (M_FF, "return self.norm2(x + self.ff(x))"),
                                              (M_TIE, "")]})
    tests, impl = impl_for(tree, "test_24_hf_weights")
    for name in [k for k in vars(tests) if k.startswith("test_")]:
        for seed in SEEDS:
            run_check(getattr(tests, name), impl, seed)


def test_mistakes_in_21_to_23_cost_the_modern_cache_nothing(tmp_path):
    """25 drives the reference ModernModel with the reference RoPE: broken 21, 22 and 23 change nothing."""
    tree = make_tree(tmp_path, {"rope.py": [("rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)",
                                             "rotated = torch.cat([xf[..., half:], -xf[..., :half]], dim=-1)")],
                                "gqa.py": [("allowed = allowed & (j > i - self.window)", "allowed = allowed & (j >= i - self.window)")],
                                "modern.py": [(M_ATT, "x = self.norm1(x + self.att(x))")]})
    tests, impl = impl_for(tree, "test_25_modern_cache")
    for name in [k for k in vars(tests) if k.startswith("test_")]:
        for seed in SEEDS:
            run_check(getattr(tests, name), impl, seed)


def test_a_mistake_in_20_costs_the_mixture_of_experts_nothing(tmp_path):
    """26's experts are the reference SwiGLU: a broken 20 changes nothing."""
    tree = make_tree(tmp_path, {"swiglu.py": [("hidden = silu(self.gate(x)) * self.up(x)", "hidden = silu(self.up(x)) * self.gate(x)")]})
    tests, impl = impl_for(tree, "test_26_moe")
    for name in [k for k in vars(tests) if k.startswith("test_")]:
        for seed in SEEDS:
            run_check(getattr(tests, name), impl, seed)


RECOMPUTE = [("    x = model.tok_emb(in_idx)  # (batch, num_tokens, emb_dim)\n",
              "    full = torch.cat([cache.history, in_idx], 1) if cache.length else in_idx\n"
              "    cache.history, real, n = full, cache, in_idx.size(1)\n"
              "    cache, in_idx = ModernKVCache.for_model(model, full.size(0)), full\n"
              "    x = model.tok_emb(in_idx)  # (batch, num_tokens, emb_dim)\n"),
             ("    return model.out_head(model.final_norm(x))\n    # END SOLUTION",
              "    real.advance(n)\n    return model.out_head(model.final_norm(x))[:, -n:]\n    # END SOLUTION")]


def test_a_cache_that_recomputes_the_whole_sequence_is_caught(tmp_path):
    """A modern_cached that keeps the token ids and runs the full model each time gives the right
    logits: the hook on the blocks' norms shows it."""
    assert_mistake_named(tmp_path, "each call runs the model on the new tokens only", "modern_cache.py", RECOMPUTE,
                         "test_25_modern_cache", "test_cached_logits_equal_the_full_pass")
