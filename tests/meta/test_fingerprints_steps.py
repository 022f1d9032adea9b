"""Exercises 15 and 16 (training.py): each known mistake, put into a copy of solutions/, fails the
check that should catch it, with a message that names it, for several seeds."""

import pytest
from helpers import SOLUTIONS, assert_checks_pass, assert_mistake_named, impl_for, run_check

from harness.failures import NotStarted

F = "training.py"
T15, T16 = "test_15_train_step", "test_16_grad_checkpoint"
UNSCALE = "    if scaler is not None:\n        scaler.unscale_(optimizer)\n"
TOTAL_NORM = "torch.nn.utils.get_total_norm([p.grad for g in optimizer.param_groups for p in g['params'] if p.grad is not None])"
ZERO_GRAD = "    optimizer.zero_grad(set_to_none=True)\n"  # the code's, not the docstring's
CKPT = "x = checkpoint(block, x, use_reentrant=False)"

CASES = [
    # (words the failure must contain, file, [(old, new)], graded test module, check)
    ("the loss is not divided by G", F, [(" / accumulate\n", "\n")], T15, "test_accumulation_equals_one_batch_g_times_larger"),
    ("the norm taken before unscale_", F, [(UNSCALE, f"    pre = {TOTAL_NORM}\n" + UNSCALE), ("return total, float(norm)", "return total, float(pre)")],
     T15, "test_grad_scaler_step_is_unscaled"),
    ("clipping before unscale_", F, [(UNSCALE, "")], T15, "test_grad_scaler_step_is_unscaled"),
    ("zero_grad was not called", F, [(ZERO_GRAD, "    pass\n")], T15, "test_one_micro_batch_is_a_plain_step"),
    ("zero_grad was not called", F, [(ZERO_GRAD, "    pass\n")], T15,
     "test_adamw_two_steps_clear_the_gradients"),
    ("zero_grad(set_to_none=False)", F, [(ZERO_GRAD, ZERO_GRAD.replace("True", "False"))], T15,
     "test_one_micro_batch_is_a_plain_step"),
    ("the model was cast to bfloat16", F, [("    accumulate = len(micro_batches)\n",
                                            "    accumulate = len(micro_batches)\n    if amp_dtype is not None:\n        model.to(amp_dtype)\n")],
     T15, "test_bf16_autocast_keeps_float32_parameters"),
    ("did not run under autocast", F, [("enabled=amp_dtype is not None", "enabled=False")], T15, "test_bf16_autocast_keeps_float32_parameters"),
    ("optimizer.step() instead of scaler.step(optimizer)", F, [("        scaler.step(optimizer)\n", "        optimizer.step()\n")], T15,
     "test_grad_scaler_skips_a_step_with_inf"),
    ("Call scaler.update()", F, [("        scaler.update()\n", "")], T15, "test_grad_scaler_skips_a_step_with_inf"),
    ("the gradients were not clipped", F, [("max_norm if max_norm is not None else float(\"inf\")", "float(\"inf\")")], T15,
     "test_clipping_to_max_norm"),
    ("the norm after clipping", F, [("    if scaler is not None:\n        scaler.step", f"    norm = {TOTAL_NORM}\n    if scaler is not None:\n        scaler.step")],
     T15, "test_clipping_to_max_norm"),
    ("the sum of the micro-batch losses instead of their mean", F, [("total += float(loss.detach())", "total += float(loss.detach()) * accumulate")],
     T15, "test_accumulation_equals_one_batch_g_times_larger"),
    ("the scaled loss", F, [("total += float(loss.detach())", "total += float(scaler.scale(loss.detach())) if scaler is not None else float(loss)")],
     T15, "test_grad_scaler_step_is_unscaled"),
    ("returned instead of raising ValueError", F, [("    if len(micro_batches) == 0:\n", "    if False:\n")], T15,
     "test_empty_micro_batches_raise_value_error"),
    ("raised RuntimeError", F, [("raise ValueError(", "raise RuntimeError(")], T15, "test_empty_micro_batches_raise_value_error"),
    ("preserve_rng_state=False", F, [(CKPT, "x = checkpoint(block, x, use_reentrant=False, preserve_rng_state=False)")], T16,
     "test_checkpointed_blocks_match_the_plain_run"),
    ("the blocks are not checkpointed at all", F, [(CKPT, "x = block(x)")], T16, "test_checkpointing_saves_activation_memory"),
    ("one checkpoint around several blocks", F, [("    for block in blocks:\n        " + CKPT + "\n", "    x = checkpoint(blocks, x, use_reentrant=False)\n")],
     T16, "test_checkpointing_saves_activation_memory"),
    ("only the first block is checkpointed", F, [("    for block in blocks:\n        " + CKPT,
                                                  "    for i, block in enumerate(blocks):\n        x = checkpoint(block, x, use_reentrant=False) if i == 0 else block(x)")],
     T16, "test_checkpointing_saves_activation_memory"),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", CASES, ids=[c[0] for c in CASES])
def test_the_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check)


def test_the_correct_solution_names_no_mistake(tmp_path):
    assert_checks_pass(tmp_path, CASES)


def test_every_check_of_15_and_16_runs_on_the_stubs_as_not_started():
    """On the generated stubs every check ends in NotStarted, not in a harness error."""
    exercises = SOLUTIONS.parent / "exercises"
    for module in (T15, T16):
        tests, impl = impl_for(exercises, module)
        for name in [k for k in vars(tests) if k.startswith("test_")]:
            with pytest.raises(NotStarted):
                run_check(getattr(tests, name), impl, 1)

