"""DPO (34): each known mistake, made as a small edit of solutions/dpo.py, is caught by the check
that should catch it and named in its failure; and a broken GPTModel (exercise 09) or a broken
instruct.py (exercise 31) costs 34 nothing.
"""

import pytest
from helpers import SEEDS, assert_checks_pass, assert_mistake_named, assert_not_named, impl_for, make_tree, run_check

DPO = "dpo.py"
MODULE = "test_34_dpo"
SUM = "return picked.masked_fill(~counted, 0.0).sum(dim=-1)"
LOG_SOFTMAX = "torch.log_softmax(logits, dim=-1)"
CHOSEN = "chosen_rewards = beta * (policy_chosen_logprobs - reference_chosen_logprobs)"
REJECTED = "rejected_rewards = beta * (policy_rejected_logprobs - reference_rejected_logprobs)"
LOSS = "loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()"
RETURN = "return loss, chosen_rewards.detach(), rejected_rewards.detach()"
NO_GRAD = "    with torch.no_grad():\n"
EVAL = "    reference.eval()\n"
BATCH_RETURN = "return dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)"

SUMS = "test_sequence_logprobs_sums_the_counted_targets"
STABLE = "test_sequence_logprobs_is_stable_on_logits_far_apart"
FORMULA = "test_dpo_loss_matches_the_formula"
BATCH = "test_dpo_batch_loss_runs_the_reference_frozen_and_in_eval_mode"
TRAIN = "test_two_adamw_steps_raise_the_chosen_reward_above_the_rejected"

IGNORED = [(SUM, "return picked.sum(dim=-1)")]
MEAN = [(SUM, SUM + " / counted.sum(dim=-1).clamp(min=1)")]
FLIPPED = [(LOSS, LOSS.replace("chosen_rewards - rejected_rewards", "rejected_rewards - chosen_rewards"))]
NO_BETA = [(CHOSEN, CHOSEN.replace("beta * ", "")), (REJECTED, REJECTED.replace("beta * ", ""))]
SWAPPED = [(CHOSEN, "chosen_rewards = beta * (reference_chosen_logprobs - policy_chosen_logprobs)"),
           (REJECTED, "rejected_rewards = beta * (reference_rejected_logprobs - policy_rejected_logprobs)")]
ATTACHED = [(RETURN, "return loss, chosen_rewards, rejected_rewards")]
NOT_FROZEN = [(NO_GRAD, "    if True:\n")]
NO_EVAL = [(EVAL, "")]

# (the words the failure must say after "This looks like: ", file, [(old, new)], module, check)
CASES = [
    ("the ignored targets counted", DPO, IGNORED, MODULE, SUMS),
    ("the ignored targets counted", DPO, IGNORED, MODULE, BATCH),
    ("a mean over the tokens instead of their sum", DPO, MEAN, MODULE, SUMS),
    ("a mean over the tokens instead of their sum", DPO, [(SUM, SUM + " / counted.sum(dim=-1)")], MODULE, SUMS),  # 0 / 0 in an empty row
    ("a mean over the tokens instead of their sum", DPO, [(SUM, "return picked.masked_fill(~counted, 0.0).mean(dim=-1)")], MODULE, SUMS),
    ("a mean over the tokens instead of their sum", DPO, MEAN, MODULE, BATCH),
    ("the log of the softmax", DPO, [(LOG_SOFTMAX, "torch.softmax(logits, dim=-1).log()")], MODULE, STABLE),
    ("the log of the softmax", DPO, [(LOG_SOFTMAX, "torch.softmax(logits.double(), dim=-1).log().to(logits.dtype)")], MODULE, STABLE),
    ("the log of the softmax", DPO, [(LOG_SOFTMAX, "(logits - logits.exp().sum(dim=-1, keepdim=True).log())")], MODULE, STABLE),
    ("the margin's sign flipped", DPO, FLIPPED, MODULE, FORMULA),
    ("the margin's sign flipped", DPO, FLIPPED, MODULE, BATCH),
    ("the margin's sign flipped", DPO, FLIPPED, MODULE, TRAIN),
    ("beta left out, of the rewards and of the loss", DPO, NO_BETA, MODULE, FORMULA),
    ("beta left out, of the rewards and of the loss", DPO, NO_BETA, MODULE, BATCH),
    ("beta missing from the loss (the rewards have it)", DPO,
     [(LOSS, LOSS.replace("(chosen_rewards - rejected_rewards)", "((chosen_rewards - rejected_rewards) / beta)"))],
     MODULE, FORMULA),
    ("beta missing from rejected_rewards only (chosen_rewards have it)", DPO, [(REJECTED, REJECTED.replace("beta * ", ""))],
     MODULE, FORMULA),
    ("beta missing from rejected_rewards only (chosen_rewards have it)", DPO, [(REJECTED, REJECTED.replace("beta * ", ""))],
     MODULE, BATCH),
    ("beta missing from chosen_rewards only (rejected_rewards have it)", DPO, [(CHOSEN, CHOSEN.replace("beta * ", ""))],
     MODULE, FORMULA),
    ("the log-ratio subtracted the wrong way: reference minus policy", DPO, SWAPPED, MODULE, FORMULA),
    ("the log-ratio subtracted the wrong way: reference minus policy", DPO, SWAPPED, MODULE, BATCH),
    ("the reference's log-ratio added instead of subtracted", DPO,
     [(LOSS, "loss = -F.logsigmoid(beta * ((policy_chosen_logprobs - policy_rejected_logprobs) + (reference_chosen_logprobs - "
             "reference_rejected_logprobs))).mean()")], MODULE, FORMULA),
    ("the sum over the batch, not the mean", DPO, [(LOSS, LOSS.replace(".mean()", ".sum()"))], MODULE, FORMULA),
    ("the rewards not detached", DPO, ATTACHED, MODULE, FORMULA),
    ("the rewards not detached", DPO, ATTACHED, MODULE, BATCH),
    ("the reference not frozen: the loss's gradients reach it", DPO, NOT_FROZEN, MODULE, BATCH),
    ("the reference not in eval mode: its dropout is on", DPO, NO_EVAL, MODULE, BATCH),
    ("the policy used as its own reference", DPO,
     [(f"reference_{s} = sequence_logprobs(reference(", f"reference_{s} = sequence_logprobs(policy(") for s in ("chosen", "rejected")],
     MODULE, BATCH),
]

# (a name, a near miss that must not get it): beta missing from both rewards is not missing from one only
NEAR = [
    ("only (", DPO, NO_BETA, MODULE, FORMULA),
    ("only (", DPO, [(CHOSEN, CHOSEN.replace("beta * ", "")), (REJECTED, REJECTED.replace("beta * ", "")),
                     (LOSS, LOSS.replace("(chosen_rewards - rejected_rewards)", "(beta * (chosen_rewards - rejected_rewards))"))],
     MODULE, FORMULA),
]

# Mistakes without a name, whose failure must still say what was expected: (words, file, edits, module, check)
PLAIN = [
    ("expected it under torch.no_grad()", DPO,
     [(NO_GRAD, "    with torch.enable_grad():\n"),
      (BATCH_RETURN, "return dpo_loss(policy_chosen, policy_rejected, reference_chosen.detach(), reference_rejected.detach(), beta)")],
     MODULE, BATCH),
    ("expected it left in eval mode", DPO, [(BATCH_RETURN, "reference.train()\n    " + BATCH_RETURN)], MODULE, BATCH),
    ("does not call policy.train() or policy.eval()", DPO, [(EVAL, "    policy.eval()\n" + EVAL)], MODULE, BATCH),
    ("does not call policy.train() or policy.eval()", DPO, [(EVAL, "    policy.train()\n" + EVAL)], MODULE, BATCH),
    ("the loss has no autograd graph", DPO, [(LOSS, LOSS.replace(".mean()", ".mean().detach()"))], MODULE, FORMULA),
    ("the loss has no autograd graph", DPO, [(LOSS, LOSS.replace(".mean()", ".mean().detach()"))], MODULE, BATCH),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", CASES, ids=[f"{c[0]} ({c[4]})" for c in CASES])
def test_the_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, named=True)


@pytest.mark.parametrize("words, file, edits, module, check", PLAIN, ids=[f"{c[0]} ({c[4]})" for c in PLAIN])
def test_the_failure_says_what_was_expected(tmp_path, words, file, edits, module, check):
    assert_mistake_named(tmp_path, words, file, edits, module, check)


@pytest.mark.parametrize("name, file, edits, module, check", NEAR, ids=[f"not {c[0]} ({c[4]}) {i}" for i, c in enumerate(NEAR)])
def test_a_near_miss_is_not_given_the_name(tmp_path, name, file, edits, module, check):
    assert_not_named(tmp_path, name, file, edits, module, check)


def test_the_checks_pass_on_the_solution(tmp_path):
    assert_checks_pass(tmp_path, CASES + PLAIN)


def test_mistakes_in_09_and_31_cost_dpo_nothing(tmp_path):
    """34 runs the learner's functions on the reference GPTModel and imports exercise 31's code only
    in its given data functions: a GPTModel without position embeddings or final norm, untied, and
    an instruct.py that does not even import, change nothing."""
    tree = make_tree(tmp_path, {"model.py": [
        ("x = self.tok_emb(in_idx) + self.pos_emb(positions)", "x = self.tok_emb(in_idx)"),
        ("        x = self.final_norm(x)\n", ""),
        ("        if cfg.tie_weights:\n            self.out_head.weight = self.tok_emb.weight\n", ""),
    ], "instruct.py": [("", "this line is not Python\n")]})
    tests, impl = impl_for(tree, MODULE)
    for name in [k for k in vars(tests) if k.startswith("test_")]:
        for seed in SEEDS:
            run_check(getattr(tests, name), impl, seed)
