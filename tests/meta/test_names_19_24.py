"""Mistakes of exercises 19-24, and a softmax over the wrong axis in 01, 07 and 22, named by what
their outputs show (issue 25): each name below is proven by a planted mistake that gets it, and
guarded by a near miss, a different mistake easily confused with it, that must not get it.

Each case is (the name, file, [(old, new)], graded test module, check), run as in
test_fingerprints.py on a copy of solutions/ with the edit, in this process, for several seeds.
"""

import pytest
from helpers import assert_checks_pass, assert_mistake_named, assert_not_named

AXIS = "softmax over the wrong axis"
SOFTMAX_MAX = "m = x.amax(dim=dim, keepdim=True)"
ATT_01 = "return softmax(scores, dim=-1) @ v"
ATT_07 = "weights = self.dropout(softmax(scores, dim=-1))"
ATT_22 = "weights = torch.softmax(scores, dim=-1)"
MS = "mean_square = xf.pow(2).mean(dim=-1, keepdim=True)"
RMS_Y = "y = xf * torch.rsqrt(mean_square + self.eps)"
RMS_OUT = "return (y * scale).to(x.dtype)"
SWIGLU_H = "hidden = silu(self.gate(x)) * self.up(x)"
SILU = "return x * torch.sigmoid(x)"
ROTATED = "rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)"
ANGLES = "angles = positions.to(torch.float32)[:, None]"
COS_SIN = "return angles.cos().to(x.dtype), angles.sin().to(x.dtype)"
SCORES_22 = "scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim)"
CAUSAL_22 = "allowed = j <= i  # causal"
WINDOW_22 = "allowed = allowed & (j > i - self.window)"
ROPE_22 = "q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)"
M_ATT = "x = x + self.att(self.norm1(x))  # (batch"
M_FF = "return x + self.ff(self.norm2(x))  # the residual"
QK_24 = '("q_proj", att.W_query), ("k_proj", att.W_key)'
KV_24 = '("k_proj", att.W_key), ("v_proj", att.W_value)'

T01, T07, T19, T20, T21, T22, T23, T24 = ("test_01_attention", "test_07_multihead", "test_19_rmsnorm", "test_20_swiglu",
                                          "test_21_rope", "test_22_gqa", "test_23_modern_model", "test_24_hf_weights")

NAMED = [
    # the softmax's axis: a learner's softmax that reduces over dim 0, and attention over each wrong axis
    (AXIS, "attention.py", [(SOFTMAX_MAX, "dim = 0\n    " + SOFTMAX_MAX)], T01, "test_softmax_stable_for_large_logits"),
    (AXIS, "attention.py", [(SOFTMAX_MAX, "dim = 0\n    " + SOFTMAX_MAX)], T01, "test_softmax_all_masked_row_gives_zeros"),
    (AXIS, "attention.py", [(ATT_01, "return softmax(scores, dim=-2) @ v")], T01, "test_attention_known_answer"),
    (AXIS, "attention.py", [(ATT_01, "return softmax(scores, dim=1) @ v")], T01, "test_attention_4d_causal_matches_builtin"),
    (AXIS, "attention.py", [(ATT_01, "return softmax(scores, dim=0) @ v")], T01, "test_attention_large_logits_stay_finite"),
    (AXIS, "multihead.py", [(ATT_07, "weights = self.dropout(softmax(scores, dim=-2))")], T07, "test_multihead_matches_builtin_attention"),
    (AXIS, "multihead.py", [(ATT_07, "weights = self.dropout(torch.softmax(scores, dim=1))")], T07, "test_multihead_backward_matches_autograd"),
    (AXIS, "gqa.py", [(ATT_22, "weights = torch.softmax(scores, dim=-2)")], T22, "test_gqa_matches_oracle"),
    (AXIS, "gqa.py", [(ATT_22, "weights = torch.softmax(scores, dim=1)")], T22, "test_gqa_with_qk_norm_as_qwen3"),
    # 19
    ("the sum of squares, not their mean", "rmsnorm.py", [(MS, MS.replace(".mean(", ".sum("))], T19, "test_rmsnorm_matches_builtin"),
    ("the squares summed and divided by d - 1", "rmsnorm.py", [(MS, "mean_square = xf.pow(2).sum(-1, keepdim=True) / (xf.size(-1) - 1)")],
     T19, "test_rmsnorm_matches_builtin"),
    ("eps left out", "rmsnorm.py", [(RMS_Y, "y = xf * torch.rsqrt(mean_square)")], T19, "test_rmsnorm_eps_inside_the_root"),
    ("divided by the standard deviation", "rmsnorm.py", [(RMS_Y, "y = xf / torch.sqrt(xf.var(-1, keepdim=True, unbiased=False) + self.eps)")],
     T19, "test_rmsnorm_matches_builtin"),
    ("multiplied by the root mean square instead of divided", "rmsnorm.py", [(RMS_Y, "y = xf * torch.sqrt(mean_square + self.eps)")],
     T19, "test_rmsnorm_backward_matches_autograd"),
    ("the weight added, not multiplied", "rmsnorm.py", [(RMS_OUT, "return (y + scale).to(x.dtype)")], T19, "test_rmsnorm_gemma_offset"),
    ("the mean of squares over the whole tensor", "rmsnorm.py", [(MS, "mean_square = xf.pow(2).mean()")], T19, "test_rmsnorm_eps_inside_the_root"),
    ("the mean of squares over the wrong dimension", "rmsnorm.py", [(MS, MS.replace("dim=-1", "dim=0"))], T19, "test_rmsnorm_eps_inside_the_root"),
    ("the weight starts at ones with offset", "rmsnorm.py", [("torch.zeros(emb_dim) if offset else ", "")], T19,
     "test_rmsnorm_weight_starts_at_ones_or_zeros_with_offset"),
    # 20
    ("ReLU instead of SiLU", "swiglu.py", [(SWIGLU_H, "hidden = torch.relu(self.gate(x)) * self.up(x)")], T20, "test_swiglu_matches_oracle"),
    ("no activation on the gate", "swiglu.py", [(SWIGLU_H, "hidden = self.gate(x) * self.up(x)")], T20, "test_swiglu_matches_oracle"),
    ("SiLU on both projections", "swiglu.py", [(SWIGLU_H, "hidden = silu(self.gate(x)) * silu(self.up(x))")], T20,
     "test_swiglu_backward_matches_autograd"),
    ("silu(up(x)) alone", "swiglu.py", [(SWIGLU_H, "hidden = silu(self.up(x))")], T20, "test_swiglu_matches_oracle"),
    ("silu(gate(x)) alone", "swiglu.py", [(SWIGLU_H, "hidden = silu(self.gate(x))")], T20, "test_swiglu_matches_oracle"),
    ("x * sigmoid(1.702 x)", "swiglu.py", [(SILU, "return x * torch.sigmoid(1.702 * x)")], T20, "test_silu_matches_builtin"),
    ("x * sigmoid(-x)", "swiglu.py", [(SILU, "return x / (1 + torch.exp(x))")], T20, "test_silu_matches_builtin"),
    ("tanh instead of the sigmoid", "swiglu.py", [(SILU, "return x * torch.tanh(x)")], T20, "test_silu_matches_builtin"),
    ("ReLU", "swiglu.py", [(SILU, "return torch.relu(x)")], T20, "test_silu_matches_builtin"),
    # 21
    ("rotate_half without its minus sign", "rope.py", [(ROTATED, ROTATED.replace("[-xf", "[xf"))], T21,
     "test_apply_rope_matches_the_complex_rotation"),
    ("rotate_half's halves in the wrong order", "rope.py", [(ROTATED, "rotated = torch.cat([-xf[..., :half], xf[..., half:]], dim=-1)")],
     T21, "test_a_cached_decode_rotates_as_the_full_pass"),
    ("cos and sin swapped", "rope.py", [(COS_SIN, "return angles.sin().to(x.dtype), angles.cos().to(x.dtype)")], T21,
     "test_rope_cos_sin_at_absolute_positions"),
    ("the positions off by one", "rope.py", [(ANGLES, "angles = (positions.to(torch.float32)[:, None] + 1)")], T21,
     "test_rope_cos_sin_at_absolute_positions"),
    ("the wavelength taken as 1 / inv_freq", "rope.py", [("wavelength = 2 * math.pi / f", "wavelength = 1 / f")], T21,
     "test_llama3_frequencies_match_oracle"),
    ("the blend's shares swapped", "rope.py", [("blended = (1 - s) * f / factor + s * f", "blended = s * f / factor + (1 - s) * f")], T21,
     "test_llama3_frequencies_match_transformers"),
    # 22
    ("scores scaled by 1/head_dim", "gqa.py", [(SCORES_22, "scores = q @ k.transpose(2, 3) / self.head_dim")], T22,
     "test_gqa_backward_matches_autograd"),
    ("the square root of the model's width", "gqa.py", [("/ math.sqrt(self.head_dim)", "/ math.sqrt(self.n_heads * self.head_dim)")], T22,
     "test_gqa_backward_matches_autograd"),
    ("no causal mask", "gqa.py", [(CAUSAL_22, "allowed = j >= 0")], T22, "test_gqa_matches_oracle"),
    ("causal mask off by one: the diagonal is masked", "gqa.py", [(CAUSAL_22, "allowed = j < i")], T22, "test_gqa_matches_oracle"),
    ("causal mask off by one: one future key is visible", "gqa.py", [(CAUSAL_22, "allowed = j <= i + 1")], T22, "test_gqa_matches_oracle"),
    ("the window not applied", "gqa.py", [(WINDOW_22, "allowed = allowed")], T22, "test_gqa_sliding_window"),
    ("RoPE applied to the values too", "gqa.py", [(ROPE_22, ROPE_22 + "; v = apply_rope(v, cos, sin)")], T22, "test_gqa_matches_oracle"),
    ("RoPE applied to neither queries nor keys", "gqa.py", [(ROPE_22, "pass")], T22, "test_gqa_matches_oracle"),
    ("heads merged with a reshape but no transpose", "gqa.py", [("(weights @ v).transpose(1, 2).reshape(", "(weights @ v).reshape(")], T22,
     "test_gqa_matches_oracle"),
    ("the keys not normalised", "gqa.py", [("q, k = self.q_norm(q), self.k_norm(k)", "q = self.q_norm(q)")], T22,
     "test_gqa_with_qk_norm_as_qwen3"),
    ("the keys normalised with q_norm", "gqa.py", [("self.k_norm(k)", "self.q_norm(k)")], T22, "test_gqa_with_qk_norm_as_qwen3"),
    # 23
    ("the attention's residual connection is missing", "modern.py", [(M_ATT, "x = self.att(self.norm1(x))  # (batch")], T23,
     "test_modern_block_matches_oracle"),
    ("the feed-forward's residual connection is missing", "modern.py", [(M_FF, "return self.ff(self.norm2(x))  # the residual")], T23,
     "test_modern_block_matches_oracle"),
    ("norm1 and norm2 swapped", "modern.py", [("self.att(self.norm1(x))", "self.att(self.norm2(x))"), ("self.ff(self.norm2(x))", "self.ff(self.norm1(x))")],
     T23, "test_modern_block_matches_oracle"),
    ("the residual carries the normalised x, not x", "modern.py", [(M_ATT, "x = self.norm1(x); x = x + self.att(x)  # (batch")], T23,
     "test_modern_block_matches_oracle"),
    ("the window not passed to the attention", "modern.py", [("cfg.head_dim, cfg.qk_norm, cfg.window", "cfg.head_dim, cfg.qk_norm, None")], T23,
     "test_modern_backward_reaches_every_parameter"),
    ("only the first block applied", "modern.py", [("x = self.trf_blocks(x)", "x = self.trf_blocks[0](x)")], T23,
     "test_modern_backward_reaches_every_parameter"),
    ("the context check off by one", "modern.py", [("if num_tokens > self.cfg.context_length:", "if num_tokens >= self.cfg.context_length:")], T23,
     "test_modern_rejects_input_longer_than_context"),
    ("the angles computed in bfloat16", "rope.py", [(ANGLES + " * inv_freq[None, :]",
                                                     "angles = positions.to(x.dtype)[:, None] * inv_freq.to(x.dtype)[None, :]")],
     T21, "test_rope_angles_stay_float32_in_bfloat16"),
    ("the angles computed in bfloat16", "rope.py", [(COS_SIN, "angles = angles.to(x.dtype)\n    " + COS_SIN)],
     T21, "test_rope_angles_stay_float32_in_bfloat16"),
    ("rotate_half pairs neighbours (-x[1::2], x[0::2]) while cos and sin repeat in halves", "rope.py",
     [(ROTATED, "rotated = torch.stack([-xf[..., 1::2], xf[..., ::2]], dim=-1).flatten(-2)")], T21,
     "test_apply_rope_matches_the_complex_rotation"),
    ("the rope_theta of rope_parameters (transformers 5's files) not read", "hf_weights.py",
     [('theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))', 'theta=float(hf.get("rope_theta", 10_000.0))')], T24, "test_config_from_hf"),
    ("the top-level rope_theta (older files) not read", "hf_weights.py",
     [('theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))', 'theta=float(rope.get("rope_theta", 10_000.0))')], T24, "test_config_from_hf"),
    ("rope_theta never read, in either place", "hf_weights.py", [('theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))', 'theta=10_000.0')], T24, "test_config_from_hf"),
]

# Named for seeds whose draw lets the mistake show, or tells it apart: a config whose eps or theta is the default shows
# nothing; a window of one made narrower masks every key, as a masked diagonal does (no name then); q_proj and k_proj
# swapped load only where both have n_heads heads (else the loader's own shape check refuses them).
NAMED_SEEDS = [
    ("eps not passed to the RMSNorms", "modern.py", [("RMSNorm(cfg.emb_dim, cfg.eps)", "RMSNorm(cfg.emb_dim)")] * 3, T23,
     "test_modern_block_matches_oracle", (1, 2, 10)),
    ("theta not passed to the attention", "modern.py", [("cfg.theta, cfg.eps, cfg.rope_scaling)", "10_000.0, cfg.eps, cfg.rope_scaling)")], T23,
     "test_modern_block_matches_oracle", (2, 3, 4)),
    ("the window one token too narrow", "gqa.py", [(WINDOW_22, "allowed = allowed & (j > i - self.window + 1)")], T22,
     "test_gqa_sliding_window", (1, 3, 4)),
    ("q_proj and k_proj swapped", "hf_weights.py", [(QK_24, '("q_proj", att.W_key), ("k_proj", att.W_query)')], T24,
     "test_random_checkpoint_matches_oracle", (2, 4, 5)),
]

# (a name, a near miss that must not get it)
NEAR = [
    (AXIS, "attention.py", [(ATT_01, "return softmax(scores * math.sqrt(q.size(-1)), dim=-1) @ v")], T01, "test_attention_4d_causal_matches_builtin"),
    (AXIS, "attention.py", [("total = e.sum(dim=dim, keepdim=True)", "total = e.sum(dim=dim)")], T01, "test_softmax_matches_torch"),
    (AXIS, "multihead.py", [("        scores.masked_fill_(", "        0 and scores.masked_fill_(")], T07, "test_multihead_matches_builtin_attention"),
    (AXIS, "gqa.py", [(CAUSAL_22, "allowed = j >= 0")], T22, "test_gqa_matches_oracle"),
    ("the sum of squares", "rmsnorm.py", [(MS, "mean_square = xf.pow(2).sum(-1, keepdim=True) / (xf.size(-1) - 1)")], T19, "test_rmsnorm_matches_builtin"),
    ("divided by the standard deviation", "rmsnorm.py", [(MS, "mean_square = xf.abs().mean(dim=-1, keepdim=True) ** 2")], T19,
     "test_rmsnorm_matches_builtin"),
    ("the mean of squares over the wrong dimension", "rmsnorm.py", [(MS, "mean_square = xf.pow(2).mean()")], T19, "test_rmsnorm_matches_builtin"),
    ("eps left out", "rmsnorm.py", [(RMS_Y, "y = xf / (torch.sqrt(mean_square) + self.eps)")], T19, "test_rmsnorm_eps_inside_the_root"),
    ("the weight added", "rmsnorm.py", [(RMS_OUT, "return y.to(x.dtype)")], T19, "test_rmsnorm_matches_builtin"),
    ("no activation on the gate", "swiglu.py", [(SWIGLU_H, "hidden = silu(self.gate(x) * self.up(x))")], T20, "test_swiglu_matches_oracle"),
    ("ReLU", "swiglu.py", [(SWIGLU_H, "hidden = torch.nn.functional.gelu(self.gate(x)) * self.up(x)")], T20, "test_swiglu_matches_oracle"),
    ("rotate_half without its minus sign", "rope.py", [(ROTATED, "rotated = torch.cat([xf[..., half:], -xf[..., :half]], dim=-1)")], T21,
     "test_apply_rope_matches_the_complex_rotation"),
    ("cos and sin swapped", "rope.py", [("angles = torch.cat([angles, angles], dim=-1)", "angles = torch.stack([angles, angles], dim=-1).flatten(-2)")],
     T21, "test_rope_cos_sin_at_absolute_positions"),
    ("the positions off by one", "rope.py", [(ANGLES, "angles = torch.arange(len(positions), dtype=torch.float32)[:, None]")], T21,
     "test_rope_cos_sin_at_absolute_positions"),
    ("the window not applied", "gqa.py", [(WINDOW_22, "allowed = allowed & (j >= i - self.window)")], T22, "test_gqa_sliding_window"),
    ("causal mask off by one: the diagonal is masked", "gqa.py", [(WINDOW_22, "allowed = allowed & (j > i - self.window + 1)")], T22,
     "test_gqa_sliding_window"),
    ("RoPE applied to neither", "gqa.py", [(ROPE_22, "q = apply_rope(q, cos, sin)")], T22, "test_gqa_matches_oracle"),
    ("scores scaled by 1/head_dim", "gqa.py", [(SCORES_22, "scores = q @ k.transpose(2, 3)")], T22, "test_gqa_matches_oracle"),
    ("no causal mask", "gqa.py", [(CAUSAL_22, "allowed = j <= i + 1")], T22, "test_gqa_matches_oracle"),
    ("the attention's residual connection is missing", "modern.py", [(M_ATT, "x = self.att(self.norm1(x))  # (batch"),
                                                                    (M_FF, "return self.ff(self.norm2(x))  # the residual")], T23,
     "test_modern_block_matches_oracle"),
    ("the residual connections are missing", "modern.py", [(M_FF, "return self.ff(self.norm2(x))  # the residual")], T23,
     "test_modern_block_matches_oracle"),
    ("norm1 and norm2 swapped", "modern.py", [("self.ff(self.norm2(x))", "self.ff(self.norm1(x))")], T23, "test_modern_block_matches_oracle"),
    ("the residual carries the normalised x", "modern.py", [(M_ATT, "x = self.norm1(x + self.att(x))  # (batch"),
                                                           (M_FF, "return self.norm2(x + self.ff(x))  # the residual")], T23,
     "test_modern_block_matches_oracle"),
    ("only the first block applied", "modern.py", [("x = self.trf_blocks(x)", "x = nn.Sequential(*reversed(list(self.trf_blocks)))(x)")], T23,
     "test_modern_backward_reaches_every_parameter"),
    ("q_proj and k_proj swapped", "hf_weights.py", [(KV_24, '("k_proj", att.W_value), ("v_proj", att.W_key)')], T24,
     "test_qwen3_logits_match_transformers"),
    ("the angles computed in bfloat16", "rope.py", [(ANGLES, "angles = torch.arange(len(positions), dtype=torch.float32)[:, None]")],
     T21, "test_rope_angles_stay_float32_in_bfloat16"),
    ("the angles computed in bfloat16", "rope.py", [(COS_SIN, "return angles.sin().to(x.dtype), angles.cos().to(x.dtype)")],
     T21, "test_rope_angles_stay_float32_in_bfloat16"),
    ("two conventions mixed", "rope.py", [(ROTATED, "rotated = torch.stack([-xf[..., 1::2], xf[..., ::2]], dim=-1).flatten(-2)"),
                                          ("cos.float() + rotated * sin.float()",
                                           "cos.float().view(*cos.shape[:-1], 2, -1).transpose(-1, -2).flatten(-2) + rotated * "
                                           "sin.float().view(*sin.shape[:-1], 2, -1).transpose(-1, -2).flatten(-2)")],
     T21, "test_apply_rope_matches_the_complex_rotation"),
    ("not read (the default", "hf_weights.py", [('theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))', 'theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0))) + 1')],
     T24, "test_config_from_hf"),
    ("rope_theta", "hf_weights.py", [('vocab_size=hf["vocab_size"]', 'vocab_size=hf["vocab_size"] + 1'),
                                     ('theta=float(rope.get("rope_theta", hf.get("rope_theta", 10_000.0)))', 'theta=10_000.0')], T24, "test_config_from_hf"),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", NAMED, ids=[f"{c[4]}:{c[0]}" for c in NAMED])
def test_the_mistake_is_named(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, named=True)


@pytest.mark.parametrize("mistake, file, edits, module, check, seeds", NAMED_SEEDS, ids=[c[0] for c in NAMED_SEEDS])
def test_the_mistake_is_named_where_the_draw_shows_it(tmp_path, mistake, file, edits, module, check, seeds):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, named=True, seeds=seeds)


@pytest.mark.parametrize("name, file, edits, module, check", NEAR, ids=[f"{c[4]}:not {c[0]}" for c in NEAR])
def test_a_near_miss_is_not_given_the_name(tmp_path, name, file, edits, module, check):
    assert_not_named(tmp_path, name, file, edits, module, check)


def test_the_checks_pass_on_the_solutions(tmp_path):
    """None of the names above fires on the reference."""
    assert_checks_pass(tmp_path, NAMED + NEAR + [c[:5] for c in NAMED_SEEDS])
