"""Known mistakes in exercises 13 (loss) and 14 (schedule), fed to the checks that should catch
them: the failure names the mistake. As in test_fingerprints.py, helpers.py's
``assert_mistake_named`` runs a check on a copy of solutions/ with the mistake, in this process,
for several seeds.
"""

import pytest
from helpers import assert_checks_pass, assert_mistake_named

MEAN = "return (per_token * keep).sum() / keep.sum()"
LSE = "torch.logsumexp(logits, dim=-1)"
PER_TOKEN = "per_token = torch.logsumexp(logits, dim=-1) - logits.gather(-1, safe[:, None]).squeeze(-1)"
LOADER_ADD = "total += float(calc_loss_batch(input_batch, target_batch, model, device))"
CLIP_LOOP = "    factor = torch.clamp(max_norm / (total + eps), max=1.0)\n    for g in grads:\n        g.detach().mul_(factor.to(g.dtype))\n"
WARMUP = "return max_lr * (step + 1) / warmup_steps"
RATIO = "ratio = (step - warmup_steps) / (total_steps - warmup_steps)"
COSINE = "return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)"

# (mistake named after "This looks like: ", file, [(old, new)], graded test module, check)
NAMED = [
    ("the mean over all tokens, ignored ones included", "loss.py", [(MEAN, "return (per_token * keep).sum() / keep.numel()")], "test_13_loss", "test_cross_entropy_3d_ignores_targets"),
    ("the mean over all tokens, ignored ones included", "loss.py", [(MEAN, "return (per_token * keep).sum() / keep.numel()")], "test_13_loss", "test_cross_entropy_gradient_matches_autograd"),
    ("the sum instead of the mean", "loss.py", [(MEAN, "return (per_token * keep).sum()")], "test_13_loss", "test_cross_entropy_3d_ignores_targets"),
    ("the sum instead of the mean", "loss.py", [(MEAN, "return (per_token * keep).sum()")], "test_13_loss", "test_cross_entropy_gradient_matches_autograd"),
    ("the ignored positions were counted (as token 0)", "loss.py", [(MEAN, "return per_token.sum() / keep.sum()")], "test_13_loss", "test_cross_entropy_3d_ignores_targets"),
    ("ignore_index was not used", "loss.py", [("keep = targets != ignore_index", "keep = targets != -100")], "test_13_loss", "test_cross_entropy_2d_custom_ignore_index"),
    ("exp overflowed (no maximum subtracted)", "loss.py", [(LSE, "torch.log(torch.exp(logits).sum(-1))")], "test_13_loss", "test_cross_entropy_stable_for_large_logits"),
    ("exp overflowed (no maximum subtracted), or a softmax underflowed to 0 before its log", "loss.py", [(PER_TOKEN, "per_token = -torch.log(torch.softmax(logits, -1)).gather(-1, safe[:, None]).squeeze(-1)")], "test_13_loss", "test_cross_entropy_stable_for_large_logits"),
    ("the loss weighted by tokens, not the mean of the batch means", "loss.py",
     [("    total = 0.0\n", "    total, tokens = 0.0, 0\n"), (LOADER_ADD, LOADER_ADD + " * target_batch.numel()\n            tokens += target_batch.numel()"),
      ("return total / limit", "return total / tokens")], "test_13_loss", "test_calc_loss_loader_is_the_mean_of_the_batch_means"),
    ("the parameters were iterated twice", "schedule.py", [("    for g in grads:\n        g.detach().mul_(factor.to(g.dtype))\n",
                                                             "    for p in parameters:\n        if p.grad is not None:\n            p.grad.detach().mul_(factor.to(p.grad.dtype))\n")],
     "test_14_schedule", "test_clip_grad_norm_above_max_norm"),
    ("divided by len(data_loader)", "loss.py", [("return total / limit", "return total / len(data_loader)")], "test_13_loss", "test_calc_loss_loader_num_batches"),
    ("the warmup starts at 0", "schedule.py", [(WARMUP, "return max_lr * step / warmup_steps")], "test_14_schedule", "test_learning_rate_warmup_then_cosine"),
    ("the cosine's ratio is taken over total_steps", "schedule.py", [(RATIO, "ratio = (step - warmup_steps) / total_steps")], "test_14_schedule", "test_learning_rate_warmup_then_cosine"),
    ("the cosine decays to 0 instead of min_lr", "schedule.py", [(COSINE, "return 0.5 * (1.0 + math.cos(math.pi * ratio)) * max_lr")], "test_14_schedule", "test_learning_rate_warmup_then_cosine"),
    ("each parameter clipped by its own norm", "schedule.py",
     [(CLIP_LOOP, "    for g, n in zip(grads, norms):\n        g.detach().mul_(torch.clamp(max_norm / (n + eps), max=1.0))\n")], "test_14_schedule", "test_clip_grad_norm_above_max_norm"),
    ("the norm after clipping is returned", "schedule.py", [("    return total\n", "    return torch.stack([g.detach().float().norm(2) for g in grads]).norm(2)\n")], "test_14_schedule", "test_clip_grad_norm_above_max_norm"),
    ("the factor is not capped at 1", "schedule.py", [("factor = torch.clamp(max_norm / (total + eps), max=1.0)", "factor = max_norm / (total + eps)")], "test_14_schedule", "test_clip_grad_norm_below_max_norm"),
]

# (words the failure must contain, file, [(old, new)], graded test module, check)
EXPLAINED = [
    ("asks you to write this yourself", "loss.py",
     [("    vocab = logits.size(-1)\n", "    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=ignore_index)\n")],
     "test_13_loss", "test_cross_entropy_3d_ignores_targets"),
    ("compute the loss in float32", "loss.py", [("logits = logits.float()", "logits = logits")], "test_13_loss", "test_cross_entropy_bfloat16_logits_give_float32"),
    ("expected nan, as F.cross_entropy", "loss.py", [(MEAN, "return (per_token * keep).sum() / keep.sum().clamp(min=1)")], "test_13_loss", "test_cross_entropy_all_targets_ignored_is_nan"),
    ("does not name", "loss.py", [('raise ValueError(f"target {int(targets[bad][0])} is not', 'raise ValueError(f"target is not')], "test_13_loss", "test_cross_entropy_rejects_targets_outside_the_vocabulary"),
    ("expected a ValueError", "loss.py", [("    if bool(bad.any()):\n", "    if False:\n")], "test_13_loss", "test_cross_entropy_rejects_targets_outside_the_vocabulary"),
    ("expected a ValueError", "loss.py", [("    if logits.shape[:-1] != targets.shape:\n", "    if False:\n")], "test_13_loss", "test_cross_entropy_rejects_mismatched_shapes"),
    ("expected a 0-dim", "loss.py", [("return cross_entropy(model(input_batch), target_batch)", "return cross_entropy(model(input_batch), target_batch).item()")], "test_13_loss", "test_calc_loss_batch_matches_and_gradients_flow"),
    ("inputs and targets swapped", "loss.py", [("return cross_entropy(model(input_batch), target_batch)", "return cross_entropy(model(target_batch), input_batch)")], "test_13_loss", "test_calc_loss_batch_matches_and_gradients_flow"),
    ("does not require grad", "loss.py", [("return cross_entropy(model(input_batch), target_batch)", "return cross_entropy(model(input_batch), target_batch).detach()")], "test_13_loss", "test_calc_loss_batch_matches_and_gradients_flow"),
    ("torch.no_grad()", "loss.py", [("    with torch.no_grad():\n", "    with torch.enable_grad():\n")], "test_13_loss", "test_calc_loss_loader_is_the_mean_of_the_batch_means"),
    ("left the model in eval mode", "loss.py", [("    total = 0.0\n", "    model.eval()\n    total = 0.0\n")], "test_13_loss", "test_calc_loss_loader_is_the_mean_of_the_batch_means"),
    ("expected a Python float", "loss.py", [("    return total / limit\n", "    return torch.tensor(total / limit)\n")], "test_13_loss", "test_calc_loss_loader_is_the_mean_of_the_batch_means"),
    ("divided by num_batches although the loader has fewer batches", "loss.py",
     [("limit = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))", "limit = len(data_loader) if num_batches is None else num_batches")],
     "test_13_loss", "test_calc_loss_loader_num_batches"),
    ("num_batches must be at least 1", "loss.py", [("    if num_batches is not None and num_batches < 1:\n", "    if False:\n")], "test_13_loss", "test_calc_loss_loader_rejects_no_batches"),
    ("the loader is empty", "loss.py", [("    if len(data_loader) == 0:\n", "    if False:\n")], "test_13_loss", "test_calc_loss_loader_rejects_no_batches"),
    ("expected inf", "loss.py", [("        return math.inf\n", "        return 1e308\n")], "test_13_loss", "test_perplexity"),
    ("the loss itself, not exp(loss)", "loss.py", [("return math.exp(float(loss))", "return float(loss)")], "test_13_loss", "test_perplexity"),
    ("expected a Python float", "loss.py", [("    try:\n        return math.exp(float(loss))", "    try:\n        return torch.exp(torch.as_tensor(loss, dtype=torch.float64))")], "test_13_loss", "test_perplexity"),
    ("expected a ValueError", "schedule.py", [("    if min_lr > max_lr:\n", "    if False:\n")], "test_14_schedule", "test_learning_rate_rejects_bad_arguments"),
    ("expected a ValueError", "schedule.py", [("    if step < 0:\n", "    if False:\n")], "test_14_schedule", "test_learning_rate_rejects_bad_arguments"),
    ("the parameters were iterated twice", "schedule.py", [("    grads = [p.grad for p in parameters if p.grad is not None]\n", "    count = sum(1 for _ in parameters)\n    grads = [p.grad for p in parameters if p.grad is not None]\n")],
     "test_14_schedule", "test_clip_grad_norm_above_max_norm"),
    ("is a new tensor after clipping", "schedule.py", [(CLIP_LOOP, "    factor = torch.clamp(max_norm / (total + eps), max=1.0)\n    for p in parameters:\n        if p.grad is not None:\n            p.grad = p.grad * factor\n")],
     "test_14_schedule", "test_clip_grad_norm_single_tensor"),
    ("expected the total norm as a 0-dim float32 tensor", "schedule.py", [("    return total\n", "    return float(total)\n")], "test_14_schedule", "test_clip_grad_norm_above_max_norm"),
    ("clip_grad_norm_ leaves nan there", "schedule.py", [("factor = torch.clamp(max_norm / (total + eps), max=1.0)", "factor = torch.nan_to_num(torch.clamp(max_norm / (total + eps), max=1.0))")],
     "test_14_schedule", "test_clip_grad_norm_non_finite_gradients"),
    ("expected the total norm as a 0-dim float32 tensor", "schedule.py", [("        return torch.tensor(0.0)\n", "        return 0.0\n")], "test_14_schedule", "test_clip_grad_norm_without_gradients"),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", NAMED, ids=[f"{c[4]}: {c[0]}" for c in NAMED])
def test_the_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, exact=True)


@pytest.mark.parametrize("words, file, edits, module, check", EXPLAINED, ids=[f"{c[4]}: {c[0]}" for c in EXPLAINED])
def test_the_failure_explains(tmp_path, words, file, edits, module, check):
    assert_mistake_named(tmp_path, words, file, edits, module, check)


def test_the_checks_pass_on_the_solution(tmp_path):
    """The fingerprints must not fire on the reference: every check above passes on solutions/."""
    assert_checks_pass(tmp_path, NAMED + EXPLAINED)
