"""The assistant track's instruction data (31): each known mistake, made as a small edit of
solutions/, is caught by the check that should catch it and named in its failure.
"""

import pytest
from helpers import assert_checks_pass, assert_mistake_named

DATA = "instruct.py"
MODULE = "test_31_instruction_data"
PADS = "y = [ignore_index if j >= n else t for j, t in enumerate(y)]  # every pad after the first"
PROMPT = "y = [ignore_index if j < prompt_length - 1 else t for j, t in enumerate(y)]"
WIDTH = "width = max(len(ids) for ids, _ in rows) + 1"

# (the words the failure must say after "This looks like: ", file, [(old, new)], module, check)
CASES = [
    ("every pad masked, the end-of-text target too", DATA, [(PADS, PADS.replace("j >= n", "j >= n - 1"))],
     MODULE, "test_collate_pads_and_shifts"),
    ("the prompt not masked", DATA, [(PROMPT, "pass")], MODULE, "test_collate_masks_the_prompt"),
    ("the prompt masked one position too far", DATA, [(PROMPT, PROMPT.replace("j < prompt_length - 1", "j < prompt_length"))],
     MODULE, "test_collate_masks_the_prompt"),
    ("targets not shifted by one", DATA, [("x, y = seq[:-1], seq[1:]", "x, y = seq[:-1], seq[:-1]")],
     MODULE, "test_collate_pads_and_shifts"),
    ("padded to allowed_max_length, not to the batch's longest sequence + 1", DATA,
     [(WIDTH, "width = (allowed_max_length or 1024) + 1")], MODULE, "test_collate_pads_to_the_batchs_longest_sequence"),
    ("padded to a fixed length", DATA, [(WIDTH, "width = 1024 + 1")], MODULE, "test_collate_pads_and_shifts"),
    ("the sequences cut to allowed_max_length before the end-of-text token was appended", DATA,
     [("rows.append((ids, int(prompt_length)))", "rows.append((ids[:allowed_max_length], int(prompt_length)))")],
     MODULE, "test_collate_cuts_to_allowed_max_length"),
    ("the padding found by value", DATA,
     [(PADS, "y = [ignore_index if t == pad_token_id and j > y.index(pad_token_id) else t for j, t in enumerate(y)]")],
     MODULE, "test_collate_finds_the_padding_by_position"),
    ("ignore_index written as -100", DATA, [(PADS, PADS.replace("[ignore_index if", "[-100 if"))],
     MODULE, "test_collate_pads_and_shifts"),
    ("the whole text encoded at once", DATA,
     [("response_ids = list(tokenizer.encode(format_response(entry)))",
       "response_ids = list(tokenizer.encode(format_input(entry) + format_response(entry)))[len(prompt_ids):]")],
     MODULE, "test_dataset_tokenizes_each_entry_once"),
    ("the Input section written for an empty input", DATA,
     [('    if entry.get("input"):\n        text +=', '    if "input" in entry:\n        text +=')],
     MODULE, "test_format_input_and_response_follow_the_template"),
]

# Mistakes without a name, whose failure must still say what was expected: (words, file, edits, module, check)
PLAIN = [
    ("expected none: keep the ids from __init__", DATA,
     [("        self.examples = []\n", "        self.examples, self.tokenizer, self.data = [], tokenizer, data\n"),
      ("        return self.examples[index]", "        return self.examples[index] if self.tokenizer.encode('') is not None else None")],
     MODULE, "test_dataset_tokenizes_each_entry_once"),
    ("expected a ValueError", DATA, [("        if not ids:\n", "        if False:\n")], MODULE, "test_collate_refuses_bad_batches"),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", CASES, ids=[c[0] for c in CASES])
def test_the_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, named=True)


@pytest.mark.parametrize("words, file, edits, module, check", PLAIN, ids=[c[0] for c in PLAIN])
def test_the_failure_says_what_was_expected(tmp_path, words, file, edits, module, check):
    assert_mistake_named(tmp_path, words, file, edits, module, check)


def test_the_checks_pass_on_the_solution(tmp_path):
    assert_checks_pass(tmp_path, CASES + PLAIN)
