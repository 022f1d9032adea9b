"""Known mistakes in exercises 17 (resume) and 18 (ddp), fed to the checks that should catch them:
the failure names the mistake. As in test_fingerprints.py, helpers.py's ``assert_mistake_named``
runs a check on a copy of solutions/ with the mistake, in this process, for several seeds.

The ddp checks launch two processes with torchrun (a few seconds each), so they run for one seed.
"""

import pytest
from helpers import assert_checks_pass, assert_mistake_named

NUMPY_SET = "np.random.set_state(("
RESUME_CASES = [
    ("torch's random state was not restored", "resume.py", [('torch.set_rng_state(rng["torch"].cpu())', "pass")], "test_17_resume", "test_resume_is_bit_for_bit"),
    ("Python's random state was not restored", "resume.py", [('random.setstate((version, tuple(internal), gauss))', "pass")], "test_17_resume", "test_resume_is_bit_for_bit"),
    ("numpy's random state was not restored", "resume.py", [(NUMPY_SET, "((")], "test_17_resume", "test_resume_is_bit_for_bit"),
    ("the optimizer state was not restored", "resume.py", [('optimizer.load_state_dict(state["optimizer"])', "pass")], "test_17_resume", "test_resume_is_bit_for_bit"),
    ("the optimizer state was not restored", "resume.py", [('"optimizer": optimizer.state_dict(),', '"optimizer": None,'), ('optimizer.load_state_dict(state["optimizer"])', "pass")], "test_17_resume", "test_resume_is_bit_for_bit"),
    ("the step was not restored", "resume.py", [('return {"step": state["step"],', 'return {"step": 0,')], "test_17_resume", "test_resume_is_bit_for_bit"),
    ("the data position was not restored", "resume.py", [('"data_state": state["data_state"]', '"data_state": None')], "test_17_resume", "test_resume_is_bit_for_bit"),
    ("the GradScaler state was not restored", "resume.py", [('scaler.load_state_dict(state["scaler"])', "pass")], "test_17_resume", "test_resume_is_bit_for_bit"),
    ("scaler.load_state_dict", "resume.py", [('scaler.load_state_dict(state["scaler"])', "pass")], "test_17_resume", "test_scaler_state_is_restored"),
    ("The write is not atomic", "resume.py", [('tmp = path.with_name(path.name + ".tmp")', "tmp = path")], "test_17_resume", "test_a_crash_while_saving_keeps_the_previous_checkpoint"),
    ("does not load with torch.load(path, weights_only=True)", "resume.py", [('"keys": torch.from_numpy(keys.astype(np.int64))', '"keys": keys')], "test_17_resume", "test_load_returns_step_data_state_and_extra_as_saved"),
    ("Create them first", "resume.py", [("path.parent.mkdir(parents=True, exist_ok=True)", "pass")], "test_17_resume", "test_parent_directories_are_created"),
    ("expected FileNotFoundError", "resume.py", [("raise FileNotFoundError(f\"no checkpoint at {path}\")", "raise OSError('missing')")], "test_17_resume", "test_missing_file_raises_file_not_found"),
    ("expected ValueError", "resume.py", [('if not isinstance(state, dict) or state.get("format") != FORMAT:', "if not isinstance(state, dict):")], "test_17_resume", "test_not_a_checkpoint_raises_value_error"),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_resume_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    # in the bit-for-bit check the state that was not brought back is the named mistake
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, named=check == "test_resume_is_bit_for_bit")


def test_resume_checks_pass_on_the_solution(tmp_path):
    assert_checks_pass(tmp_path, RESUME_CASES)


# ------------------------------------------------------------------------- 18: data-parallel training

DDP_CASES = [
    ("Their gradients were not averaged", "distributed.py", [("    return DistributedDataParallel(model)\n", "    return model\n")], "test_18_ddp", "test_two_processes_train_like_one"),
    ("the whole batch, not sharded", "distributed.py", [("return batch[info.rank * n : (info.rank + 1) * n]", "return batch")], "test_18_ddp", "test_each_process_sees_its_contiguous_half"),
    ("interleaved rows", "distributed.py", [("return batch[info.rank * n : (info.rank + 1) * n]", "return batch[info.rank :: info.world_size]")], "test_18_ddp", "test_each_process_sees_its_contiguous_half"),
    ("the same half on both", "distributed.py", [("return batch[info.rank * n : (info.rank + 1) * n]", "return batch[:n]")], "test_18_ddp", "test_each_process_sees_its_contiguous_half"),
    ("both processes trained on the same half", "distributed.py", [("return batch[info.rank * n : (info.rank + 1) * n]", "return batch[:n]")], "test_18_ddp", "test_two_processes_train_like_one"),
    ("not divided by world_size", "distributed.py", [("return float(t.item()) / info.world_size", "return float(t.item())")], "test_18_ddp", "test_dist_info_and_mean_over_processes"),
    ("returned this process's own value", "distributed.py", [("    t = torch.tensor([float(value)], dtype=torch.float64, device=info.device)\n", "    return float(value)\n")], "test_18_ddp", "test_dist_info_and_mean_over_processes"),
    ("interleaved rows", "distributed.py", [("return batch[info.rank * n : (info.rank + 1) * n]", "return batch[info.rank :: info.world_size]")], "test_18_ddp", "test_shard_takes_contiguous_slices"),
    ("expected ValueError", "distributed.py", [("    if len(batch) % info.world_size:\n", "    if False:\n")], "test_18_ddp", "test_shard_refuses_an_indivisible_batch"),
    ("created a process group", "distributed.py", [('    if "WORLD_SIZE" not in os.environ:\n        return DistInfo(0, 0, 1, torch.device("cuda" if use_cuda else "cpu"))\n', '    if "WORLD_SIZE" not in os.environ:\n        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)\n        return DistInfo(0, 0, 1, torch.device("cuda" if use_cuda else "cpu"))\n')], "test_18_ddp", "test_running_alone_without_torchrun"),
    ("expected ValueError", "distributed.py", [('    if device not in ("auto", "cpu", "cuda"):\n', "    if False:\n")], "test_18_ddp", "test_setup_distributed_refuses_unknown_devices"),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", DDP_CASES, ids=[f"{c[4]}: {c[0]}" for c in DDP_CASES])
def test_ddp_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    # one seed: each of 18's checks launches processes
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, seeds=(1,))


def test_ddp_checks_pass_on_the_solution(tmp_path):
    assert_checks_pass(tmp_path, DDP_CASES, seeds=(2,))
