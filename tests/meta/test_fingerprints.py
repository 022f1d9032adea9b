"""Each known mistake, fed to the check that should catch it: the failure names the mistake.

A copy of solutions/ gets the mistake; the check runs on it in this process (the same probes
as the worker, without the process boundary) for several seeds.
"""

import importlib

import pytest
import torch
from helpers import make_tree

from harness.failures import Mismatch
from harness.impl import Impl, InProcessBackend
from harness.manifest import lookup

SEEDS = (1, 2, 3)

ATT_SCORES = "scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))"
CAUSAL = "allowed = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()"
MASK_FN = "return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()"
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
    ("eps outside the square root", "layers.py", [("torch.sqrt(var + self.eps)", "(torch.sqrt(var) + self.eps)")], "test_02_layernorm", "test_layernorm_eps_inside_the_root"),
    ("the standard deviation is missing its square root", "layers.py", [("torch.sqrt(var + self.eps)", "(var + self.eps)")], "test_02_layernorm", "test_layernorm_forward_matches_builtin"),
    ("scale and shift are not applied", "layers.py", [("return (y * self.scale.float() + self.shift.float()).to(x.dtype)", "return y.to(x.dtype)")], "test_02_layernorm", "test_layernorm_forward_matches_builtin"),
    ("the exact (erf) GELU instead of the tanh approximation", "layers.py", [(GELU, "return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))")], "test_02_layernorm", "test_gelu_matches_builtin"),
    ("the sigmoid approximation", "layers.py", [(GELU, "return x * torch.sigmoid(1.702 * x)")], "test_02_layernorm", "test_gelu_matches_builtin"),
    ("the cubic term is missing", "layers.py", [(GELU, "return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * x))")], "test_02_layernorm", "test_gelu_matches_builtin"),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", CASES, ids=[c[0] for c in CASES])
def test_the_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    tree = make_tree(tmp_path, {file: edits})
    tests = importlib.import_module(module)
    impl = Impl(InProcessBackend(tree), lookup(tests.EXERCISE), {})
    for seed in SEEDS:
        with pytest.raises(Mismatch) as failure:
            getattr(tests, check)(impl, torch.Generator().manual_seed(seed))
        assert f"This looks like: {mistake}" in str(failure.value), f"seed {seed}: {failure.value}"


def test_the_correct_solution_names_no_mistake(tmp_path):
    """The fingerprints must not fire on the reference: every check above passes on solutions/."""
    tree = make_tree(tmp_path)
    for module, check in sorted({(c[3], c[4]) for c in CASES}):
        tests = importlib.import_module(module)
        impl = Impl(InProcessBackend(tree), lookup(tests.EXERCISE), {})
        for seed in SEEDS:
            getattr(tests, check)(impl, torch.Generator().manual_seed(seed))
