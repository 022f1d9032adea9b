"""The reasoning track's rollouts (37): each named mistake, made as a small edit of solutions/, is
caught and named by the check that should catch it; a near miss, a different mistake that could be
taken for one, is not given its name; mistakes without a name still say what was expected; the
checks pass on solutions/; and a broken KV cache (12), GPTModel (09) or generate (10) costs 37
nothing. Graded in-process.
"""

import pytest
from helpers import BROKEN_09_10_12, SEEDS, assert_checks_pass, assert_every_check_passes, assert_mistake_named, assert_not_named, impl_for, make_tree, run_check

R, M = "rollouts.py", "test_37_rollouts"
MASK = "test_completion_mask_ends_at_the_first_eos"
TOKENS = "test_tokens_equal_the_oracle_with_the_same_seed"
LOGPROBS = "test_logprobs_against_a_float64_recomputation"
CACHE = "test_each_step_feeds_one_token_per_row_through_the_cache"
EARLY = "test_stops_early_when_every_row_has_ended"
CONTEXT = "test_never_runs_past_the_context"
BAD = "test_bad_arguments_raise_value_errors_naming_them"

BEFORE = "    return before == 0\n"
LOG_PROBS = "        log_probs = torch.log_softmax(scaled, dim=-1)"
GATHER = "log_probs.gather(-1, drawn)"
ZEROED = "log_probs.gather(-1, drawn).masked_fill(ended[:, None], 0.0)"
DRAW = "        drawn = torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator)"
STEP = "gpt_cached(model, fed, cache)"
FEED = "        fed = token\n"
REPEAT = "prompts = prompt_ids.repeat_interleave(group_size, dim=0)  # (B*G, T_p)"
LOOP = "    for _ in range(steps):\n"

# (the words after "This looks like: ", [(old, new)] in rollouts.py, check)
NAMED = [
    ("the end-of-text token itself masked out", [(BEFORE, "    return (before == 0) & (is_eos == 0)\n")], MASK),
    ("the mask ended at the last eos_id, not the first",
     [(BEFORE, "    return (is_eos.flip(1).cumsum(1).flip(1) > 0) | (is_eos.sum(1, keepdim=True) == 0)\n")], MASK),
    ("only the eos_id tokens masked", [(BEFORE, "    return ids != eos_id\n")], MASK),
    ("log-probabilities without the temperature", [(LOG_PROBS, LOG_PROBS.replace("(scaled,", "(scaled * temperature,"))],
     LOGPROBS),
    ("probabilities instead of log-probabilities", [(LOG_PROBS, LOG_PROBS.replace("log_softmax", "softmax"))], LOGPROBS),
    ("the log-probability of the most likely token", [(GATHER, "log_probs.max(dim=-1, keepdim=True).values")], LOGPROBS),
    ("the log-probabilities off by one step", [
        (LOOP, "    previous = None\n" + LOOP),
        (LOG_PROBS, "        log_probs, previous = (torch.log_softmax(scaled, dim=-1) if previous is None else previous), "
                    "torch.log_softmax(scaled, dim=-1)")], LOGPROBS),
    ("log-probabilities read after top-k", [(GATHER, "torch.log_softmax(scaled, dim=-1).gather(-1, drawn)")], LOGPROBS),
    ("log-probabilities left where the mask is False", [(ZEROED, GATHER)], LOGPROBS),
    ("the prompts repeated as a whole batch", [(REPEAT, "prompts = prompt_ids.repeat(group_size, 1)  # (B*G, T_p)")], TOKENS),
    ("the temperature has no effect on the draw", [(DRAW, DRAW.replace("softmax(scaled,", "softmax(scaled * temperature,"))],
     TOKENS),
    ("top_k not applied", [("        if top_k is not None:\n            kth", "        if False:\n            kth")], TOKENS),
    ("tokens drawn only for the rows that had not ended", [
        (DRAW, "        drawn = torch.full((rows, 1), eos_id, dtype=torch.long)\n"
               "        if bool((~ended).any()):\n"
               "            drawn[~ended] = torch.multinomial(torch.softmax(scaled[~ended], dim=-1), 1, generator=generator)")],
     TOKENS),
    ("the generator ignored", [(DRAW, DRAW.replace(", generator=generator", ""))], TOKENS),
    ("the tokens after a row's first eos_id not set to eos_id",
     [("        token = drawn.masked_fill(ended[:, None], eos_id)", "        token = drawn")], EARLY),
    ("generation went on after every row had ended", [("        if bool(ended.all()):\n            break\n", "")], EARLY),
    ("the whole sequence re-fed each step (no KV cache)",
     [(STEP, "gpt_cached(model, fed, KVCache.for_model(model, rows))"), (FEED, "        fed = torch.cat([fed, token], dim=1)\n")],
     CACHE),
    ("the model called on the sequence, model(...), not the cached step",
     [(STEP, "model(fed)"), (FEED, "        fed = torch.cat([fed, token], dim=1)\n")], CACHE),
    ("each new token run without the cached prefix", [(STEP, "gpt_cached(model, fed, KVCache.for_model(model, rows))")], CACHE),
    ("the prompts included in completion_ids",
     [("completion_ids = torch.cat(tokens, dim=1) if tokens", "completion_ids = torch.cat([prompts] + tokens, dim=1) if tokens"),
      ("completion_mask(completion_ids, eos_id), logprobs)", "completion_mask(completion_ids[:, prompts.size(1):], eos_id), "
       "logprobs)")], TOKENS),
    ("generation stopped one token before the context was full",
     [("context_length - prompts.size(1))", "context_length - prompts.size(1) - 1)")], CONTEXT),
    ("the end-of-text token itself masked out",
     [("completion_mask(completion_ids, eos_id), logprobs)", "completion_ids != eos_id, logprobs)")], EARLY),
    ("every token kept", [("completion_mask(completion_ids, eos_id), logprobs)",
                          "torch.ones_like(completion_ids, dtype=torch.bool), logprobs)")], EARLY),
    ("the context limit not checked",
     [("    steps = min(max_new_tokens, context_length - prompts.size(1))", "    steps = max_new_tokens")], CONTEXT),
]

# A near miss may fail its check, but never with these names: (name, edits, check)
NEAR = [
    ("log-probabilities without the temperature", [(LOG_PROBS, LOG_PROBS.replace("(scaled,", "(scaled / temperature,"))],
     LOGPROBS),
    ("probabilities instead of log-probabilities", [(LOG_PROBS, LOG_PROBS + " / 0.6931471805599453")], LOGPROBS),  # log2
    ("the log-probability of the most likely token", [(GATHER, "log_probs.gather(-1, (drawn + 1) % log_probs.size(-1))")],
     LOGPROBS),
    ("the log-probabilities off by one step", [(GATHER, "log_probs.gather(-1, (drawn + 1) % log_probs.size(-1))")], LOGPROBS),
    ("log-probabilities left where the mask is False", [(ZEROED, "torch.zeros_like(drawn, dtype=log_probs.dtype)")],
     LOGPROBS),
    ("the mask ended at the last eos_id", [(BEFORE, "    return before <= 1\n")], MASK),
    ("the end-of-text token itself masked out", [(BEFORE, "    return before >= 0\n")], MASK),  # all True: none of the mask's names
    ("the mask ended at the last eos_id", [(BEFORE, "    return before >= 0\n")], MASK),  # all True: none of the mask's names
    ("only the eos_id tokens masked", [(BEFORE, "    return before >= 0\n")], MASK),  # all True: none of the mask's names
    ("the prompts repeated as a whole batch", [(REPEAT, "prompts = prompt_ids.flip(0).repeat_interleave(group_size, dim=0)  # (B*G, T_p)")], TOKENS),
    ("tokens drawn only for the rows that had not ended", [(DRAW, DRAW.replace("softmax(scaled,", "softmax(scaled * 1.5,"))],
     TOKENS),
]

# Mistakes without a name, whose failure must still say what was expected: (words, edits, check)
PLAIN = [
    ("expected it under torch.no_grad()", [("        with torch.no_grad():\n", "        with torch.enable_grad():\n")], CACHE),
    ("left the model in eval mode", [(LOOP, "    model.eval()\n" + LOOP)], CACHE),
    ("the last token chosen is never fed", [("    completion_ids = torch.cat(", "    with torch.no_grad():\n"
                                             "        gpt_cached(model, fed, cache)\n    completion_ids = torch.cat(")], CACHE),
    ("logprobs has dtype torch.float64; expected torch.float32", [("torch.cat(logprobs, dim=1).float()", "torch.cat(logprobs, dim=1)")],
     TOKENS),
    ("say which argument is wrong, group_size", [("    if group_size < 1:\n", "    if group_size < 0:\n")], BAD),
    ("say which argument is wrong, temperature", [("    if not temperature > 0:\n", "    if temperature < 0:\n")], BAD),
    ("ids must be (N, T)", [("    if ids.dim() != 2:\n", "    if False:\n")], MASK),
]


@pytest.mark.parametrize("name, edits, check", NAMED, ids=[f"{c[0][:60]} ({c[2]})" for c in NAMED])
def test_the_failure_names_the_mistake(tmp_path, name, edits, check):
    assert_mistake_named(tmp_path, name, R, edits, M, check, named=True)


@pytest.mark.parametrize("name, edits, check", NEAR, ids=[f"not {c[0][:60]} ({c[2]})" for c in NEAR])
def test_a_near_miss_is_not_given_the_name(tmp_path, name, edits, check):
    assert_not_named(tmp_path, name, R, edits, M, check)


@pytest.mark.parametrize("words, edits, check", PLAIN, ids=[f"{c[0][:60]} ({c[2]})" for c in PLAIN])
def test_the_failure_says_what_was_expected(tmp_path, words, edits, check):
    assert_mistake_named(tmp_path, words, R, edits, M, check)


def test_the_checks_pass_on_the_solution(tmp_path):
    checks = sorted({c[2] for c in NAMED + NEAR + PLAIN})
    assert_checks_pass(tmp_path, [(None, None, None, M, check) for check in checks])


def test_mistakes_in_09_10_and_12_cost_rollouts_nothing(tmp_path):
    """37 samples through the reference KVCache and gpt_cached on the reference GPTModel, and
    chooses its tokens itself: a cache without the position offset that never advances, a
    GPTModel without position embeddings, and a generate that always picks token 0 change nothing."""
    assert_every_check_passes(tmp_path, BROKEN_09_10_12, M)


def test_a_kv_cache_that_does_not_import_costs_rollouts_nothing(tmp_path):
    """rollouts.py imports kv_cache.py; when the learner's 12 does not even import, 37's checks run on
    the reference part all the same."""
    tree = make_tree(tmp_path, {"kv_cache.py": [("", "this line is not Python\n")]})
    tests, impl = impl_for(tree, M)
    for name in [k for k in vars(tests) if k.startswith("test_")]:
        run_check(getattr(tests, name), impl, SEEDS[0])
