"""The reasoning track's verifiable rewards (36): each named mistake, made as a one-line edit of
solutions/, is caught and named by the checks that should catch it; a near miss, a different mistake
that could be taken for it, is not given its name (a name only where the evidence fits that mistake
alone); the checks pass on solutions/; and the test's own readers, from which the names come, agree
with the tables and with how the fresh cases were built. Graded in-process.
"""

import pytest
import torch
from helpers import SEEDS, assert_checks_pass, assert_mistake_named, assert_not_named

R, M = "rewards.py", "test_36_rewards"
START = "start = max(boxes + lines)"
LINE_START = 'and (i == 0 or completion[i - 1] == "\\n")]'
INTEGER = 'integer = number[1].replace(",", "").lstrip("0") or "0"'
PATTERN = 'r"(\\d{1,3}(?:,\\d{3})+|\\d*)(?:\\.(\\d+))?"'
PERIOD = 'text = text[:-1] if text.endswith(".") else text'
FORMAT = "if len(answers) != 1 or answers[-1] != lines[-1] or len(lines) < 2:"
ROWS = "rows = [[correctness_reward(c, a), format_reward(c)]"

FIRST = [(START, "start = min(boxes + lines)")]
BOX_FIRST = [(START, "start = max(boxes or lines)")]
CUT = [("            if depth == 0:", "            if True:")]
MIDLINE = [(LINE_START, "]")]
REST_OF_TEXT = [("    return None  # never closed", "    return completion[start + len(BOX):]  # never closed")]
SEPARATORS = [(INTEGER, 'integer = number[1].lstrip("0") or "0"')]
ANY_COMMA = [(PATTERN, 'r"([\\d,]*)(?:\\.(\\d+))?"')]
MINUS = [('    text = text.replace("\\u2212", "-")  # the unicode minus sign\n', "")]
NO_SIGN = [('negative = text.startswith("-")', "negative = False")]
PERIOD_KEPT = [(f"    {PERIOD}  # the full stop after a sentence's last number\n", "")]
EVERY_PERIOD = [(PERIOD, 'text = text.rstrip(".")')]
LEADING = [(INTEGER, 'integer = number[1].replace(",", "") or "0"')]
NO_ZERO_LEFT = [(INTEGER, 'integer = number[1].replace(",", "").lstrip("0")')]
TRAILING = [('fraction = (number[2] or "").rstrip("0")', 'fraction = number[2] or ""')]
SIGNED_ZERO = [('if negative and canonical != "0"', "if negative")]
NOT_LAST = [(FORMAT, "if len(answers) != 1 or len(lines) < 2:")]
MANY = [(FORMAT, "if not answers or answers[-1] != lines[-1] or len(lines) < 2:")]
NO_REASONING = [(FORMAT, "if len(answers) != 1 or answers[-1] != lines[-1]:")]
ANY_TEXT = [("    return 0.0 if normalize_number(answers[-1][len(ANSWER):]) is None else 1.0", "    return 1.0")]
AS_WRITTEN = [("normalize_number(extracted) == expected", "extracted == expected")]
SWAPPED = [(ROWS, "rows = [[format_reward(c), correctness_reward(c, a)]")]
TWICE = [(ROWS, "rows = [[correctness_reward(c, a), correctness_reward(c, a)]")]

EXTRACT, FRESH_EXTRACT = "test_extract_answer_on_tricky_completions", "test_extract_answer_on_fresh_completions"
NUMBERS, FRESH_NUMBERS = "test_normalize_number_on_tricky_numbers", "test_normalize_number_on_fresh_numbers"
FORMATS, FRESH_FORMATS = "test_format_reward_on_tricky_completions", "test_format_reward_on_fresh_completions"
CORRECT = "test_correctness_reward_on_tricky_and_fresh_completions"
BATCH = "test_rewards_is_a_float32_tensor_of_correctness_and_format"

NOT_LAST_NAME = "the format reward given to a completion whose Answer line is not its last non-empty line"

# (the words that must follow "This looks like: ", edits of rewards.py, check)
NAMED = [
    ("the first answer taken instead of the last", FIRST, EXTRACT),
    ("the first answer taken instead of the last", FIRST, FRESH_EXTRACT),
    ("the box's content cut at the first '}'", CUT, EXTRACT),
    ("the box's content cut at the first '}'", CUT, FRESH_EXTRACT),
    ("'Answer:' taken inside a line", MIDLINE, EXTRACT),
    ("'Answer:' taken inside a line", MIDLINE, FRESH_EXTRACT),
    ("the last box taken whenever there is one", BOX_FIRST, EXTRACT),
    ("thousands separators kept", SEPARATORS, NUMBERS),
    ("thousands separators kept", SEPARATORS, FRESH_NUMBERS),
    ("every comma dropped, grouped by three or not", ANY_COMMA, NUMBERS),
    ("the unicode minus (U+2212) not read", MINUS, NUMBERS),
    ("the unicode minus (U+2212) not read", MINUS, FRESH_NUMBERS),
    ("the trailing period kept", PERIOD_KEPT, NUMBERS),
    ("the trailing period kept", PERIOD_KEPT, FRESH_NUMBERS),
    ("leading zeros kept", LEADING, NUMBERS),
    ("leading zeros kept", LEADING, FRESH_NUMBERS),
    ("a decimal's trailing zeros kept", TRAILING, NUMBERS),
    (NOT_LAST_NAME, NOT_LAST, FORMATS),
    (NOT_LAST_NAME, NOT_LAST, FRESH_FORMATS),
    ("several Answer lines accepted", MANY, FORMATS),
    ("no reasoning asked for", NO_REASONING, FORMATS),
    ("the Answer line's text not checked to be a number", ANY_TEXT, FORMATS),
    ("the final answer compared as written, not normalised", AS_WRITTEN, CORRECT),
    ("the columns swapped", SWAPPED, BATCH),
    ("a negative zero kept its minus ('-0')", SIGNED_ZERO, NUMBERS),
]

# (a name, the edits of a near miss that must not get it, check)
NEAR = [
    ("the first answer taken instead of the last", BOX_FIRST, EXTRACT),
    ("the first answer taken instead of the last", BOX_FIRST, FRESH_EXTRACT),
    ("the last box taken whenever there is one", FIRST, EXTRACT),
    ("the box's content cut at the first '}'", REST_OF_TEXT, EXTRACT),
    ("the box's content cut at the first '}'", REST_OF_TEXT, FRESH_EXTRACT),
    ("'Answer:' taken inside a line", FIRST, EXTRACT),
    ("thousands separators kept", ANY_COMMA, NUMBERS),
    ("thousands separators kept", ANY_COMMA, FRESH_NUMBERS),
    ("every comma dropped", SEPARATORS, NUMBERS),
    ("the unicode minus (U+2212) not read", NO_SIGN, NUMBERS),
    ("the unicode minus (U+2212) not read", NO_SIGN, FRESH_NUMBERS),
    ("the trailing period kept", EVERY_PERIOD, NUMBERS),
    ("the trailing period kept", SEPARATORS, NUMBERS),
    ("leading zeros kept", NO_ZERO_LEFT, NUMBERS),
    ("leading zeros kept", NO_ZERO_LEFT, FRESH_NUMBERS),
    ("a decimal's trailing zeros kept", SIGNED_ZERO, NUMBERS),
    ("a negative zero kept its minus", NO_SIGN, NUMBERS),
    ("a negative zero kept its minus", TRAILING, NUMBERS),
    ("a decimal's trailing zeros kept", LEADING, NUMBERS),
    ("whose Answer line is not its last non-empty line", MANY, FORMATS),
    ("whose Answer line is not its last non-empty line", NO_REASONING, FORMATS),
    ("whose Answer line is not its last non-empty line", NO_REASONING, FRESH_FORMATS),
    ("several Answer lines accepted", NOT_LAST, FORMATS),
    ("no reasoning asked for", NOT_LAST, FORMATS),
    ("the Answer line's text not checked to be a number", NOT_LAST, FORMATS),
    ("the Answer line's text not checked to be a number", ANY_COMMA, FRESH_FORMATS),  # normalize_number's mistake
    ("the Answer line's text not checked to be a number", PERIOD_KEPT, FORMATS),
    ("the final answer compared as written", FIRST, CORRECT),  # extract_answer's mistake
    ("the final answer compared as written", MIDLINE, CORRECT),
    ("the final answer compared as written", SEPARATORS, CORRECT),  # normalize_number's mistake
    ("the columns swapped", TWICE, BATCH),
]

# Caught, without a name: each mistake of extract_answer and normalize_number also fails the checks of
# correctness_reward (which reads the answer with them), which then says which function to fix first.
FIX_FIRST = [
    ("fix extract_answer first", FIRST, CORRECT),
    ("fix extract_answer first", BOX_FIRST, CORRECT),
    ("fix normalize_number first", SEPARATORS, CORRECT),
    ("fix normalize_number first", MINUS, CORRECT),
    ("fix normalize_number first", PERIOD_KEPT, FORMATS),
]


@pytest.mark.parametrize("mistake, edits, check", NAMED, ids=[f"{c[0][:60]} ({c[2]})" for c in NAMED])
def test_the_mistake_is_named(tmp_path, mistake, edits, check):
    assert_mistake_named(tmp_path, mistake, R, edits, M, check, named=True)


@pytest.mark.parametrize("name, edits, check", NEAR, ids=[f"not {c[0][:60]} ({c[2]})" for c in NEAR])
def test_a_near_miss_is_not_given_the_name(tmp_path, name, edits, check):
    assert_not_named(tmp_path, name, R, edits, M, check)


@pytest.mark.parametrize("words, edits, check", FIX_FIRST, ids=[f"{c[0]} ({c[2]})" for c in FIX_FIRST])
def test_a_mistake_of_a_part_is_traced_to_it(tmp_path, words, edits, check):
    assert_mistake_named(tmp_path, words, R, edits, M, check)


def test_the_checks_pass_on_the_solutions(tmp_path):
    assert_checks_pass(tmp_path, [(None, None, None, M, check) for _, _, check in NAMED + NEAR + FIX_FIRST])


def test_the_test_readers_agree_with_the_tables_and_the_fresh_cases():
    """The names come from readers written in the test (the contract with one rule changed); with no
    rule changed, each gives what the tables say and what the fresh cases were built to be."""
    import test_36_rewards as t

    assert all(t.find_answer(text) == want for text, want, _ in t.EXTRACT_TABLE)
    assert all(t.read_number(text) == want for text, want, _ in t.NORMALIZE_TABLE)
    assert all(t.in_format(text) == want for text, want, _ in t.FORMAT_TABLE)
    assert all(float(t.find_answer(c) is not None and t.read_number(t.find_answer(c)) == t.read_number(a)) == want
               for c, a, want, _ in t.CORRECTNESS_TABLE)
    for seed in range(40):
        gen = torch.Generator().manual_seed(seed)
        assert all(t.find_answer(text) == final for text, final in t.fresh_completions(gen))
        assert all(t.read_number(text) == form for text, form in t.fresh_numbers(gen))
        assert all(t.read_number(t.non_number(gen)) is None for _ in range(10))
        for kind in t.FORMAT_KINDS:
            text, want, _ = t.fresh_format_case(gen, kind)
            assert t.in_format(text) == want, (seed, kind, text)
        for _ in range(5):
            c, a, want, why = t.fresh_correctness_case(gen)
            got = t.find_answer(c)
            assert float(got is not None and t.read_number(got) == t.read_number(a)) == want, (seed, c, a, why)
    assert SEEDS  # the named checks above run on these seeds
