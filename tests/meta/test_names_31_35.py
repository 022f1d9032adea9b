"""Names of mistakes in 31-35 (and 30's padding mask), issue #25: each name added or changed is
given to a planted mistake it fits, and withheld from a near miss, a different mistake that could be
taken for it (among them the mistakes that used to get a wrong name); and the checks involved pass
on solutions/. Mistakes are short edits of solutions/, graded in-process.
"""

import pytest
from helpers import assert_checks_pass, assert_mistake_named, assert_not_named

# ------------------------------------------------------------------------------------ 31
DATA, M31 = "instruct.py", "test_31_instruction_data"
PADS = "y = [ignore_index if j >= n else t for j, t in enumerate(y)]  # every pad after the first"
PROMPT = "y = [ignore_index if j < prompt_length - 1 else t for j, t in enumerate(y)]"
WIDTH = "width = max(len(ids) for ids, _ in rows) + 1"
CUT = "inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]"
SHIFT = "x, y = seq[:-1], seq[1:]"
PADS_LATE = [(PADS, PADS.replace("j >= n", "j > n"))]
PROMPT_SLICE = [(PROMPT, "y = [ignore_index] * len(y[:prompt_length - 1]) + y[len(y[:prompt_length - 1]):]")]
NO_EOS_ROOM = [(WIDTH, "width = max(len(ids) for ids, _ in rows)")]
CUT_SHORT = [(CUT, CUT.replace(":allowed_max_length]", ":allowed_max_length - 1]"))]
CUT_INPUTS = [(CUT, "inputs = inputs[:, :allowed_max_length]")]
CUT_TARGETS = [(CUT, "targets = targets[:, :allowed_max_length]")]
PADDED_0 = [(SHIFT, "x, y = [t if j < n else 0 for j, t in enumerate(seq[:-1])], seq[1:]")]
PROMPT_LENGTH = [("len(prompt_ids)))", "len(prompt_ids) - 1))")]
NEWLINE = [('"\\n\\n### Instruction:\\n"', '"\\n### Instruction:\\n"')]
LOADER = "test_dataset_and_collate_in_a_dataloader_with_gpt2s_tokenizer"
SHIFTS = "test_collate_pads_and_shifts"
CUTS = "test_collate_cuts_to_allowed_max_length"
LONGEST = "test_collate_pads_to_the_batchs_longest_sequence"

# ------------------------------------------------------------------------------------ 32
CLS, M32 = "classify.py", "test_32_classify"
PICK = "return logits[rows, lengths.long() - 1]"
LAST = "last = list(model.trf_blocks)[n_blocks - trainable_blocks:]"
ONE_PAST = [(PICK, "return logits[rows, lengths.long().clamp(max=num_tokens - 1)]")]
ONE_BEFORE = [(PICK, "return logits[rows, lengths.long() - 2]")]
LAST_COLUMN = [(PICK, "return logits[:, -1]")]
FIRST_TOKEN = [(PICK, "return logits[:, 0]")]
SLICE_OFF = [(LAST, "last = list(model.trf_blocks)[n_blocks - trainable_blocks + 1:]")]
FIRST_BLOCKS = [(LAST, "last = list(model.trf_blocks)[:trainable_blocks]")]
PICKS = "test_last_token_logits_takes_each_rows_last_real_token"
LOSS32 = "test_classification_loss_at_the_last_real_token"
ACCURACY = "test_classification_accuracy_counts_the_right_predictions"
FREEZE = "test_freeze_trains_the_last_blocks_the_final_norm_and_the_head"

# ------------------------------------------------------------------------------------ 33
LORA, M33 = "lora.py", "test_33_lora"
SCALING = "self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank"
MERGE = "merged = weight + lora.scaling * (lora.A @ lora.B).T"
FORWARD = "return self.linear(x) + self.lora(x)"
SQRT_RANK = [(SCALING, SCALING.replace("alpha / rank", "alpha / math.sqrt(rank)"))]
ALPHA_ONLY = [(SCALING, SCALING.replace("alpha / rank", "alpha"))]
SCALED_0_7 = [(SCALING, SCALING.replace("alpha / rank", "0.7 * alpha / rank"))]
TWICE = [(MERGE, MERGE.replace("lora.scaling *", "lora.scaling * lora.scaling *"))]
UNSCALED = [(MERGE, MERGE.replace("lora.scaling * ", ""))]
SUBTRACTED = [(MERGE, MERGE.replace("weight + ", "weight - "))]
UNTRANSPOSED = [(MERGE, MERGE.replace("(lora.A @ lora.B).T", "(lora.A @ lora.B)"))]
NO_UPDATE = [(FORWARD, "return self.linear(x)")]
NO_LINEAR = [(FORWARD, "return self.lora(x)")]
FREEZE_ALL = "    for p in model.parameters():\n        p.requires_grad_(False)\n"
FROZEN_AFTER = [(FREEZE_ALL, ""), ("    replace(model)\n", "    replace(model)\n" + FREEZE_ALL)]
BASE_LEFT = [("        p.requires_grad_(False)\n", "        pass\n")]
REPLACES = "test_replace_freezes_everything_but_A_and_B_and_counts_them"
FORMULA33 = "test_lora_layer_matches_the_formula"
LINEAR33 = "test_linear_with_lora_adds_the_update_to_the_linear_layer"
MERGES = "test_merge_folds_the_update_into_the_weights"

# ------------------------------------------------------------------------------------ 34
DPO, M34 = "dpo.py", "test_34_dpo"
CHOSEN = "chosen_rewards = beta * (policy_chosen_logprobs - reference_chosen_logprobs)"
REJECTED = "rejected_rewards = beta * (policy_rejected_logprobs - reference_rejected_logprobs)"
LOSS = "loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()"
BATCH_RETURN = "return dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)"
NO_BETA = [(CHOSEN, CHOSEN.replace("beta * ", "")), (REJECTED, REJECTED.replace("beta * ", ""))]
REWARDS_NO_BETA = NO_BETA + [(LOSS, LOSS.replace("(chosen_rewards - rejected_rewards)", "(beta * (chosen_rewards - rejected_rewards))"))]
LOSS_NO_BETA = [(LOSS, LOSS.replace("(chosen_rewards - rejected_rewards)", "((chosen_rewards - rejected_rewards) / beta)"))]
BETA_TWICE = [(LOSS, LOSS.replace("(chosen_rewards - rejected_rewards)", "(beta * (chosen_rewards - rejected_rewards))"))]
NO_MINUS = [(LOSS, LOSS.replace("-F.", "F."))]
FLIPPED = [(LOSS, LOSS.replace("chosen_rewards - rejected_rewards", "rejected_rewards - chosen_rewards"))]
WRONG_AXIS = [("torch.log_softmax(logits, dim=-1)", "torch.log_softmax(logits, dim=1)")]
SHIFTED = [("    counted = targets != ignore_index\n",
            "    logits, targets = logits[:, :-1], targets[:, 1:]\n    counted = targets != ignore_index\n")]
MEAN = [("return picked.masked_fill(~counted, 0.0).sum(dim=-1)", "return picked.masked_fill(~counted, 0.0).sum(dim=-1) / "
         "counted.sum(dim=-1).clamp(min=1)")]
IGNORED = [("return picked.masked_fill(~counted, 0.0).sum(dim=-1)", "return picked.sum(dim=-1)")]
CROSSED = [(CHOSEN, CHOSEN.replace("reference_chosen_logprobs", "reference_rejected_logprobs"))]
SIDES_SWAPPED = [(BATCH_RETURN, "return dpo_loss(policy_rejected, policy_chosen, reference_rejected, reference_chosen, beta)")]
REFERENCE_FIRST = [(CHOSEN, "chosen_rewards = beta * (reference_chosen_logprobs - policy_chosen_logprobs)"),
                   (REJECTED, "rejected_rewards = beta * (reference_rejected_logprobs - policy_rejected_logprobs)")]
SUMS = "test_sequence_logprobs_sums_the_counted_targets"
FORMULA34 = "test_dpo_loss_matches_the_formula"
BATCH34 = "test_dpo_batch_loss_runs_the_reference_frozen_and_in_eval_mode"

# ------------------------------------------------------------------------------------ 35
ST, M35 = "stream.py", "test_35_chat_stream"
STOP = "            if min(found) > shown:\n                yield text[shown:min(found)]\n            return\n"
LIST_ORDER = [(STOP, STOP.replace("min(found)", "found[0]"))]
LAST_FOUND = [(STOP, STOP.replace("min(found)", "max(found)"))]
STOP_YIELDED = [(STOP, "            yield text[shown:]\n            return\n")]
STEPS = "    steps = min(max_new_tokens, context_length - prompt_length)"
ONE_SHORT = [(STEPS, STEPS + " - 1")]
UNLIMITED = [(STEPS, "    steps = max_new_tokens")]
TOP_K_MINUS = [("logits < kth", "logits <= kth")]
TOP_K_PLUS = [("min(top_k, logits.numel())", "min(top_k + 1, logits.numel())")]
DRAW = "            token = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))"
TEMPERATURE_LAST = [("            logits = logits / temperature\n", ""), (DRAW, DRAW.replace("softmax(logits,", "softmax(logits / temperature,"))]
NO_TEMPERATURE = [("            logits = logits / temperature\n", ""), (DRAW, DRAW.replace("dim=-1)", "dim=-1) / temperature"))]
TWO_STOPS = "test_text_cuts_at_the_earliest_of_two_stop_strings_one_token_completes"
SAMPLED = "test_sampled_stream_equals_generate_with_the_same_seed"
FULL = "test_stream_stops_when_the_context_is_full"

# ------------------------------------------------------------------------------------ 30
FAST, M30 = "fast.py", "test_30_fast_gpt"
MASK = "logit_mask[cfg.vocab_size:] = -math.inf"
MASK_LATE = [(MASK, "logit_mask[cfg.vocab_size + 1:] = -math.inf")]
MASK_SHORT = [(MASK, "logit_mask[cfg.vocab_size:-1] = -math.inf")]
NO_MASK = [("return F.linear(x, self.out_head.weight, self.logit_mask.to(x.dtype))", "return F.linear(x, self.out_head.weight)")]
PADDING = "test_fast_gpt_logits_match_and_padding_is_masked"

# (the words that must follow "This looks like: ", file, edits, module, check)
NAMED = [
    ("the padding masked from one position too late", DATA, PADS_LATE, M31, SHIFTS),
    ("the prompt masked with a slice", DATA, PROMPT_SLICE, M31, "test_collate_masks_the_prompt"),
    ("padded to the longest sequence, not longest + 1", DATA, NO_EOS_ROOM, M31, SHIFTS),
    ("inputs and targets cut one column off allowed_max_length", DATA, CUT_SHORT, M31, CUTS),
    ("only the inputs cut to allowed_max_length", DATA, CUT_INPUTS, M31, CUTS),
    ("the inputs padded with 0, not pad_token_id", DATA, PADDED_0, M31, SHIFTS),
    ("prompt_length off by one", DATA, PROMPT_LENGTH, M31, "test_dataset_tokenizes_each_entry_once"),
    ("each row's logits taken 1 position(s) past its last real token", CLS, ONE_PAST, M32, PICKS),
    ("each row's logits taken 1 position(s) past its last real token", CLS, ONE_PAST, M32, LOSS32),
    ("each row's logits taken 1 position(s) before its last real token", CLS, ONE_BEFORE, M32, PICKS),
    ("the batch's last column, [:, -1]", CLS, LAST_COLUMN, M32, PICKS),
    ("the first token of each row, [:, 0]", CLS, FIRST_TOKEN, M32, PICKS),
    ("the slice of trf_blocks is off", CLS, SLICE_OFF, M32, FREEZE),
    ("the update scaled by alpha / sqrt(rank)", LORA, SQRT_RANK, M33, FORMULA33),
    ("the low-rank update left out", LORA, [(SCALING, SCALING.replace("alpha / rank", "0.0"))], M33, FORMULA33),
    ("the scaling applied twice", LORA, TWICE, M33, MERGES),
    ("the update subtracted, not added", LORA, SUBTRACTED, M33, MERGES),
    ("the update scaled by", LORA, SCALED_0_7, M33, FORMULA33),
    ("the low-rank update left out", LORA, NO_UPDATE, M33, LINEAR33),
    ("every parameter frozen, A and B too", LORA, FROZEN_AFTER, M33, REPLACES),
    ("beta missing from the rewards returned", DPO, REWARDS_NO_BETA, M34, FORMULA34),
    ("beta missing from the rewards returned", DPO, REWARDS_NO_BETA, M34, BATCH34),
    ("beta applied twice in the loss", DPO, BETA_TWICE, M34, FORMULA34),
    ("the loss without its minus sign", DPO, NO_MINUS, M34, FORMULA34),
    ("log_softmax over the positions (dim=1)", DPO, WRONG_AXIS, M34, SUMS),
    ("the targets shifted again", DPO, SHIFTED, M34, SUMS),
    ("chosen_rewards computed as beta * (policy_chosen - reference_rejected)", DPO, CROSSED, M34, FORMULA34),
    ("chosen_rewards computed as beta * (policy_rejected - reference_rejected)", DPO, SIDES_SWAPPED, M34, BATCH34),
    ("the text cut at a stop string that is not the earliest", ST, LIST_ORDER, M35, TWO_STOPS),
    ("the text cut at a stop string that is not the earliest", ST, LAST_FOUND, M35, TWO_STOPS),
    ("top-k keeps k - 1 tokens", ST, TOP_K_MINUS, M35, SAMPLED),
    ("the temperature applied after top-p", ST, TEMPERATURE_LAST, M35, SAMPLED),
    ("the stream stopped one token before the context was full", ST, ONE_SHORT, M35, FULL),
    ("the mask starts 1 column(s) late", FAST, MASK_LATE, M30, PADDING),
    ("the mask stops 1 column(s) short of padded_vocab_size", FAST, MASK_SHORT, M30, PADDING),
]

# (a name, file, the edits of a near miss that must not get it, module, check)
NEAR = [
    ("the padding masked from one position too late", DATA, [(PADS, PADS.replace("j >= n", "j >= n - 1"))], M31, SHIFTS),
    ("the padding not masked", DATA, PADS_LATE, M31, LOADER),  # once its wrong name
    ("the prompt masked with a slice", DATA, [(PROMPT, PROMPT.replace("prompt_length - 1", "prompt_length - 2"))], M31,
     "test_collate_masks_the_prompt"),
    ("padded to the longest sequence, not longest + 1", DATA, CUT_SHORT, M31, LONGEST),
    ("padded to the longest sequence, not longest + 1", DATA, NEWLINE, M31, LOADER),
    ("inputs and targets cut one column off allowed_max_length", DATA, [(WIDTH, "width = (allowed_max_length or 1024) + 1")], M31,
     LONGEST),
    ("only the inputs cut to allowed_max_length", DATA, CUT_TARGETS, M31, CUTS),
    ("the inputs padded with", DATA, PADS_LATE, M31, SHIFTS),
    ("the prompt masked one position short", DATA, PROMPT_LENGTH, M31, LOADER),  # a mistake of the dataset, not of collate
    ("past its last real token", CLS, LAST_COLUMN, M32, PICKS),
    ("the batch's last column", CLS, ONE_PAST, M32, ACCURACY),  # once its wrong name
    ("the batch's last column", CLS, ONE_PAST, M32, PICKS),
    ("before its last real token", CLS, FIRST_TOKEN, M32, PICKS),
    ("the slice of trf_blocks is off", CLS, FIRST_BLOCKS, M32, FREEZE),
    ("the update scaled by alpha / sqrt(rank)", LORA, ALPHA_ONLY, M33, FORMULA33),
    ("the scaling applied twice", LORA, UNSCALED, M33, MERGES),
    ("the update subtracted", LORA, UNTRANSPOSED, M33, MERGES),
    ("the update scaled by", LORA, NO_LINEAR, M33, LINEAR33),
    ("the low-rank update left out", LORA, NO_LINEAR, M33, LINEAR33),
    ("every parameter frozen", LORA, BASE_LEFT, M33, REPLACES),
    ("beta left out", DPO, REWARDS_NO_BETA, M34, FORMULA34),  # once its wrong name
    ("beta missing from the rewards returned", DPO, NO_BETA, M34, FORMULA34),
    ("beta missing from the loss", DPO, BETA_TWICE, M34, FORMULA34),
    ("beta applied twice in the loss", DPO, LOSS_NO_BETA, M34, FORMULA34),
    ("the loss without its minus sign", DPO, FLIPPED, M34, FORMULA34),
    ("log_softmax over the positions", DPO, MEAN, M34, SUMS),
    ("the targets shifted again", DPO, IGNORED, M34, SUMS),
    ("paired wrongly", DPO, REFERENCE_FIRST, M34, FORMULA34),
    ("the text cut at a stop string that is not the earliest", ST, STOP_YIELDED, M35,
     "test_text_joins_to_the_text_cut_at_the_first_stop_string"),
    ("the start of a stop string yielded", ST, LIST_ORDER, M35, TWO_STOPS),
    ("top-k keeps k - 1 tokens", ST, TOP_K_PLUS, M35, SAMPLED),
    ("the temperature applied after top-p", ST, NO_TEMPERATURE, M35, SAMPLED),
    ("the stream stopped one token before the context was full", ST, UNLIMITED, M35, FULL),
    ("the mask starts", FAST, NO_MASK, M30, PADDING),
    ("the padded logits are not masked", FAST, MASK_LATE, M30, PADDING),  # once its wrong name
]

# Mistakes that passed every check before: now caught, whatever the draw
CAUGHT = [
    ("the pieces join to", ST, LIST_ORDER, M35, TWO_STOPS),
    ("the pieces join to", ST, LAST_FOUND, M35, TWO_STOPS),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", NAMED, ids=[f"{c[0]} ({c[4]})" for c in NAMED])
def test_the_mistake_is_named(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, named=True)


@pytest.mark.parametrize("name, file, edits, module, check", NEAR, ids=[f"not {c[0]} ({c[4]})" for c in NEAR])
def test_a_near_miss_is_not_given_the_name(tmp_path, name, file, edits, module, check):
    assert_not_named(tmp_path, name, file, edits, module, check)


@pytest.mark.parametrize("words, file, edits, module, check", CAUGHT, ids=[f"{c[4]} {i}" for i, c in enumerate(CAUGHT)])
def test_a_mistake_that_passed_before_is_caught(tmp_path, words, file, edits, module, check):
    assert_mistake_named(tmp_path, words, file, edits, module, check)


def test_the_checks_pass_on_the_solutions(tmp_path):
    assert_checks_pass(tmp_path, NAMED + NEAR)
