"""GRPO (38): each named mistake, made as a small edit of solutions/grpo.py, is caught by the check
that should catch it and named in its failure; a near miss, a different mistake that could be taken
for it, is not given its name; and the checks pass on solutions/. Graded in-process.
"""

import pytest
from helpers import assert_checks_pass, assert_mistake_named, assert_not_named

G, M = "grpo.py", "test_38_grpo"
GROUPED = "grouped = rewards.view(-1, group_size)  # (B, G): one row per prompt"
CENTERED = "centered = grouped - grouped.mean(dim=1, keepdim=True)  # (B, G)"
STD = "std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(centered)  # (B, 1)"
SCALED = "return (centered / (std + eps)).view(-1)  # (B * G,)"
LOGP = "logp = logprobs.masked_fill(~keep, 0.0)"
OLD = "old = old_logprobs.detach().masked_fill(~keep, 0.0)"
ADV = "adv = advantages.detach().unsqueeze(1)"
RATIO = "ratio = torch.exp(logp - old)  # (N, T)"
OBJECTIVE = "per_token = -torch.min(ratio * adv, clipped * adv)  # (N, T)"
REF = "log_ref_ratio = ref_logprobs.detach().masked_fill(~keep, 0.0) - logp"
K3 = "kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1  # (N, T), k3"
PENALTY = "per_token = per_token + beta * kl"
MASKED = "per_token = per_token.masked_fill(~keep, 0.0)"
COUNTS = "counts = keep.sum(dim=1).to(per_token.dtype)  # (N,) tokens per completion"
SEQUENCE = "loss = (per_token.sum(dim=1) / counts.clamp(min=1)).mean()"
TOKEN = "loss = per_token.sum() / total"
CONSTANT = "loss = per_token.sum() / (shape[0] * width)"

BATCH_STD = [(STD, "std = rewards.std() if group_size > 1 else torch.zeros_like(centered)")]
BIASED = [(STD, STD.replace("keepdim=True)", "keepdim=True, unbiased=False)"))]
NO_EPS = [(SCALED, "return (centered / std).view(-1)")]
EPS_INSIDE = [(SCALED, "return (centered / (std ** 2 + eps).sqrt()).view(-1)")]
STRIDED = [(GROUPED, "grouped = rewards.view(group_size, -1).T"), (SCALED, "return (centered / (std + eps)).T.reshape(-1)"),
           ("        return centered.view(-1)", "        return centered.T.reshape(-1)")]
BATCH_MEAN = [(CENTERED, "centered = grouped - rewards.mean()")]
QUOTIENT = [(RATIO, "ratio = logp / old")]
NO_EXP = [(RATIO, "ratio = logp - old")]
MAX = [(OBJECTIVE, OBJECTIVE.replace("torch.min", "torch.max"))]
CLIP_ONLY = [(OBJECTIVE, "per_token = -(clipped * adv)")]
KL_REVERSED = [(REF, "log_ref_ratio = logp - ref_logprobs.detach().masked_fill(~keep, 0.0)")]
KL_LOG_RATIO = [(K3, "kl = -log_ref_ratio")]
KL_SIGN = [(PENALTY, "per_token = per_token - beta * kl")]
MASKED_COUNTED = [(COUNTS, "counts = torch.full((shape[0],), float(shape[1]), dtype=per_token.dtype)")]
MASK_NOT_APPLIED = [(MASKED, "pass")]
TOKEN_FOR_SEQUENCE = [(SEQUENCE, TOKEN)]
SEQUENCE_FOR_TOKEN = [(TOKEN, SEQUENCE)]
WIDTH_FOR_MAX = [(CONSTANT, "loss = per_token.sum() / (shape[0] * shape[1])")]
UNFILLED = [(LOGP, "logp = logprobs"), (OLD, "old = old_logprobs.detach()"), (REF, "log_ref_ratio = ref_logprobs.detach() - logp")]
TIMES_MASK = UNFILLED + [(MASKED, "per_token = per_token * keep")]
WHERE_AFTER = UNFILLED + [(MASKED, "per_token = torch.where(keep, per_token, 0.0)")]
ADVANTAGES_ATTACHED = [(ADV, "adv = advantages.unsqueeze(1)")]
OLD_ATTACHED = [(OLD, "old = old_logprobs.masked_fill(~keep, 0.0)")]
REF_ATTACHED = [(REF, "log_ref_ratio = ref_logprobs.masked_fill(~keep, 0.0) - logp")]

ADVANTAGES = "test_group_advantages_match_the_formula"
EQUAL = "test_group_advantages_of_equal_rewards_and_of_groups_of_one"
FORMULA = "test_grpo_loss_matches_the_formula_for_each_loss_type"
TRL = "test_grpo_loss_matches_trl"
TRL_ADVANTAGES = "test_group_advantages_match_trl"
MASKING = "test_grpo_loss_ignores_what_is_masked"
ONLY_POLICY = "test_grpo_loss_trains_only_the_policy"

# (the words that must follow "This looks like: ", edits of grpo.py, check)
NAMED = [
    ("the standard deviation of the whole batch instead of each group's", BATCH_STD, ADVANTAGES),
    ("the biased standard deviation (divided by G)", BIASED, ADVANTAGES),
    ("no eps in the denominator", NO_EPS, ADVANTAGES),
    ("no eps in the denominator", NO_EPS, EQUAL),
    ("no eps in the denominator", NO_EPS, TRL_ADVANTAGES),
    ("the biased standard deviation (divided by G)", BIASED, TRL_ADVANTAGES),
    ("the standard deviation of the whole batch instead of each group's", BATCH_STD, TRL_ADVANTAGES),
    ("the groups read as every B-th reward", STRIDED, ADVANTAGES),
    ("the mean of the whole batch subtracted instead of each group's", BATCH_MEAN, ADVANTAGES),
    ("the ratio as logprobs / old_logprobs", QUOTIENT, FORMULA),
    ("the ratio without exp", NO_EXP, FORMULA),
    ("max instead of min", MAX, FORMULA),
    ("the clipped term alone", CLIP_ONLY, FORMULA),
    ("k3 of logprobs - ref instead of ref - logprobs", KL_REVERSED, FORMULA),
    ("the plain log-ratio logprobs - ref used as the KL", KL_LOG_RATIO, FORMULA),
    ("the KL penalty's sign flipped", KL_SIGN, FORMULA),
    ("the masked tokens counted in the mean", MASKED_COUNTED, FORMULA),
    ("the masked tokens' losses added in", MASK_NOT_APPLIED, FORMULA),
    ("the per-token mean over the batch ('bnpo') where loss_type 'grpo' asks", TOKEN_FOR_SEQUENCE, FORMULA),
    ("the mean per sequence ('grpo') where loss_type 'bnpo' asks", SEQUENCE_FOR_TOKEN, FORMULA),
    ("T (the width of the tensors) used where Dr. GRPO divides", WIDTH_FOR_MAX, FORMULA),
    ("the mask applied by multiplying", TIMES_MASK, MASKING),
    ("the mask applied after exp", WHERE_AFTER, MASKING),
    ("the advantages not detached", ADVANTAGES_ATTACHED, FORMULA),
    ("the advantages not detached", ADVANTAGES_ATTACHED, ONLY_POLICY),
    ("old_logprobs not detached", OLD_ATTACHED, FORMULA),
    ("old_logprobs not detached", OLD_ATTACHED, ONLY_POLICY),
    ("ref_logprobs not detached", REF_ATTACHED, FORMULA),
]

# (a name, the edits of a near miss that must not get it, check)
NEAR = [
    ("the standard deviation of the whole batch", BIASED, ADVANTAGES),
    ("the biased standard deviation", BATCH_STD, ADVANTAGES),
    ("the biased standard deviation", EPS_INSIDE, ADVANTAGES),
    ("the biased standard deviation", BATCH_STD, TRL_ADVANTAGES),
    ("the standard deviation of the whole batch", BIASED, TRL_ADVANTAGES),
    ("no eps in the denominator", EPS_INSIDE, ADVANTAGES),
    ("no eps in the denominator", EPS_INSIDE, EQUAL),
    ("the groups read as every B-th reward", BATCH_MEAN, ADVANTAGES),
    ("the mean of the whole batch subtracted", STRIDED, ADVANTAGES),
    ("the ratio as logprobs / old_logprobs", NO_EXP, FORMULA),
    ("the ratio without exp", QUOTIENT, FORMULA),
    ("max instead of min", CLIP_ONLY, FORMULA),
    ("the clipped term alone", MAX, FORMULA),
    ("k3 of logprobs - ref", KL_SIGN, FORMULA),
    ("k3 of logprobs - ref", KL_LOG_RATIO, FORMULA),
    ("the plain log-ratio", KL_REVERSED, FORMULA),
    ("the KL penalty's sign flipped", KL_REVERSED, FORMULA),
    ("the masked tokens counted in the mean", MASK_NOT_APPLIED, FORMULA),
    ("the masked tokens counted in the mean", TOKEN_FOR_SEQUENCE, FORMULA),
    ("the masked tokens' losses added in", MASKED_COUNTED, FORMULA),
    ("the per-token mean over the batch", MASKED_COUNTED, FORMULA),
    ("the per-token mean over the batch", SEQUENCE_FOR_TOKEN, FORMULA),
    ("the mean per sequence ('grpo')", TOKEN_FOR_SEQUENCE, FORMULA),
    ("T (the width of the tensors)", MASKED_COUNTED, FORMULA),
    ("the mask applied by multiplying", MASK_NOT_APPLIED, MASKING),
    ("the mask applied by multiplying", WHERE_AFTER, MASKING),
    ("the mask applied after exp", TIMES_MASK, MASKING),
    ("the mask applied after exp", MASK_NOT_APPLIED, MASKING),
    ("old_logprobs not detached", ADVANTAGES_ATTACHED, ONLY_POLICY),
    ("old_logprobs not detached", REF_ATTACHED, FORMULA),
    ("the advantages not detached", OLD_ATTACHED, ONLY_POLICY),
    ("ref_logprobs not detached", OLD_ATTACHED, FORMULA),
]

# Caught without a name: the failure still says what was expected. (words, edits, check)
PLAIN = [
    ("a group of one has nothing to be compared with", [(STD, STD.replace("if group_size > 1", "if True"))], EQUAL),
    ("the loss", MAX, TRL),
    ("the loss", MASKED_COUNTED, TRL),
]


@pytest.mark.parametrize("mistake, edits, check", NAMED, ids=[f"{c[0][:60]} ({c[2]})" for c in NAMED])
def test_the_mistake_is_named(tmp_path, mistake, edits, check):
    assert_mistake_named(tmp_path, mistake, G, edits, M, check, named=True)


@pytest.mark.parametrize("name, edits, check", NEAR, ids=[f"not {c[0][:60]} ({c[2]})" for c in NEAR])
def test_a_near_miss_is_not_given_the_name(tmp_path, name, edits, check):
    assert_not_named(tmp_path, name, G, edits, M, check)


@pytest.mark.parametrize("words, edits, check", PLAIN, ids=[f"{c[0][:50]} ({c[2]})" for c in PLAIN])
def test_the_failure_says_what_was_expected(tmp_path, words, edits, check):
    assert_mistake_named(tmp_path, words, G, edits, M, check)


def test_the_checks_pass_on_the_solutions(tmp_path):
    assert_checks_pass(tmp_path, [(None, None, None, M, check) for _, _, check in NAMED + NEAR + PLAIN])
