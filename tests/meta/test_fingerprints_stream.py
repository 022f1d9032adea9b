"""The assistant track's streaming (35): each known mistake, made as a small edit of solutions/,
is caught by the check that should catch it and named in its failure; and a broken KV cache (12),
GPTModel (09) or generate (10) costs 35 nothing.
"""

import pytest
from helpers import BROKEN_09_10_12, assert_checks_pass, assert_every_check_passes, assert_mistake_named

ST = "stream.py"
MODULE = "test_35_chat_stream"
EOS = "        if token == eos_id:\n            return\n        yield token\n"
STEP = "            logits = gpt_cached(model, fed, cache)[0, -1]"
FEED = "        fed = torch.tensor([[token]], dtype=torch.long, device=idx.device)\n"
LOOP = "    fed = idx  # the prefill; then (1, 1), the token yielded last\n    for _ in range(steps):\n"
NO_GRAD = "        with torch.no_grad():  # around the model only: never across a yield\n"
DRAW = "            token = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))"
STOP = "            if min(found) > shown:\n                yield text[shown:min(found)]\n            return\n"
HOLD_FFFD = "        final = len(text) - 1 if text.endswith(REPLACEMENT) else len(text)"
FLUSH = "    if len(text) > shown:\n        yield text[shown:]\n"
YIELD = "            yield text[shown:final]\n"
END_TOKENS = "    # END SOLUTION\n\n\ndef stream_text"

LAZY = "test_stream_is_lazy_and_feeds_one_token_per_step"
GREEDY = "test_greedy_stream_equals_generation_on_the_whole_sequence"
SAMPLED = "test_sampled_stream_equals_generate_with_the_same_seed"
TIMING = "test_text_comes_out_as_soon_as_it_is_final"

# (the words the failure must say after "This looks like: ", file, [(old, new)], module, check)
CASES = [
    ("eos_id yielded", ST, [(EOS, "        yield token\n        if token == eos_id:\n            return\n")], MODULE,
     "test_stream_stops_at_eos_without_yielding_it"),
    ("generation went on after eos_id", ST, [(EOS, "        yield token\n")], MODULE, "test_stream_stops_at_eos_without_yielding_it"),
    ("the whole sequence recomputed each step (no KV cache)", ST,
     [(STEP, "            logits = gpt_cached(model, fed, KVCache.for_model(model, 1))[0, -1]"),
      (FEED, "        fed = torch.cat([fed, torch.tensor([[token]], device=idx.device)], dim=1)\n")], MODULE, LAZY),
    ("the model called on the sequence, model(...), not the cached step", ST,
     [(STEP, "            logits = model(fed)[0, -1]"),
      (FEED, "        fed = torch.cat([fed, torch.tensor([[token]], device=idx.device)], dim=1)\n")], MODULE, LAZY),
    ("each new token run without the cached prefix", ST,
     [(STEP, "            logits = gpt_cached(model, fed, KVCache.for_model(model, 1))[0, -1]")], MODULE, GREEDY),
    ("the first token chosen from the logits at position 0 of the prefill", ST, [(STEP, STEP.replace("[0, -1]", "[0, 0]"))], MODULE,
     GREEDY),
    ("every token generated before the first was yielded", ST,
     [(LOOP, "    chosen = []\n" + LOOP), ("        yield token\n", "        chosen.append(token)\n"),
      (END_TOKENS, "    yield from chosen\n" + END_TOKENS)], MODULE, LAZY),
    ("the work done when stream_tokens is called, not in the generator", ST,
     [("    if idx.dim() != 2 or idx.size(0) != 1", "    return iter(list(_all(model, idx, max_new_tokens, eos_id, temperature, top_k, "
       "top_p, generator)))\n\n\ndef _all(model, idx, max_new_tokens, eos_id, temperature, top_k, top_p, generator):\n"
       "    if idx.dim() != 2 or idx.size(0) != 1")], MODULE, LAZY),
    ("the next step run before yielding the token chosen", ST,
     [(LOOP + NO_GRAD + STEP + "  # (vocab_size,): the last position predicts the next token\n",
       "    with torch.no_grad():\n        logits = gpt_cached(model, idx, cache)[0, -1]\n    for i in range(steps):\n"),
      ("        yield token\n" + FEED, "        if i + 1 < steps:\n            with torch.no_grad():\n"
       "                logits = gpt_cached(model, torch.tensor([[token]]), cache)[0, -1]\n        yield token\n")], MODULE, LAZY),
    ("torch.no_grad() held across a yield", ST, [(LOOP, "    torch.set_grad_enabled(False)\n" + LOOP)], MODULE,
     "test_stream_leaves_grad_mode_and_model_mode_as_they_were"),
    ("the context limit not checked", ST, [("    steps = min(max_new_tokens, context_length - prompt_length)", "    steps = max_new_tokens")],
     MODULE, "test_stream_stops_when_the_context_is_full"),
    ("the temperature has no effect on the draw", ST,
     [("            logits = logits / temperature\n", ""), (DRAW, DRAW.replace("dim=-1)", "dim=-1) / temperature"))], MODULE, SAMPLED),
    ("top-p drops the token that crosses top_p", ST,
     [("ahead = sorted_probs.cumsum(0) - sorted_probs", "ahead = torch.cat([sorted_probs.new_zeros(1), sorted_probs.cumsum(0)[1:]])")],
     MODULE, SAMPLED),
    ("top-k keeps k + 1 tokens", ST, [("min(top_k, logits.numel())", "min(top_k + 1, logits.numel())")], MODULE, SAMPLED),
    ("the generator ignored", ST, [(DRAW, DRAW.replace(", generator=generator", ""))], MODULE, SAMPLED),
    # stream_text
    ("the stop string itself yielded", ST, [(STOP, "            yield text[shown:]\n            return\n")], MODULE,
     "test_text_joins_to_the_text_cut_at_the_first_stop_string"),
    ("the stop strings ignored", ST, [("        if found:\n", "        if False:\n")], MODULE,
     "test_text_joins_to_the_text_cut_at_the_first_stop_string"),
    ("each token decoded alone", ST, [("        text = decode(ids)\n", "        text = text + decode([token])\n")], MODULE,
     "test_text_never_splits_a_character"),
    ("a U+FFFD yielded", ST, [(HOLD_FFFD, "        final = len(text)")], MODULE, "test_text_never_splits_a_character"),
    ("a U+FFFD yielded", ST, [(HOLD_FFFD, "        final = len(text)")], MODULE, TIMING),
    ("the start of a stop string yielded before it was complete", ST, [("        final -= partial\n", "")], MODULE, TIMING),
    ("what was held back never yielded when the tokens ran out", ST, [(FLUSH, "")], MODULE, "test_text_never_splits_a_character"),
    ("the text held back until the tokens ran out", ST,
     [("    ids, text, shown = [], \"\", 0", "    held = []\n    ids, text, shown = [], \"\", 0"),
      (YIELD, "            held.append(text[shown:final])\n"),
      (STOP, "            held.append(text[shown:min(found)])\n            yield from (p for p in held if p)\n            return\n"),
      (FLUSH, "    yield from held\n" + FLUSH)], MODULE, TIMING),
    ("tokens taken from token_ids after the stop string was found", ST,
     [("    for token in token_ids:\n        ids.append(token)\n",
       "    stopped = False\n    for token in token_ids:\n        if stopped:\n            continue\n        ids.append(token)\n"),
      (STOP, STOP.replace("            return\n", "            stopped = True\n            continue\n")),
      (FLUSH, "    if not stopped and len(text) > shown:\n        yield text[shown:]\n")], MODULE,
     "test_text_takes_no_token_after_the_stop_string"),
]

# Mistakes without a name, whose failure must still say what was expected: (words, file, edits, module, check)
PLAIN = [
    ("expected it under torch.no_grad()", ST, [(NO_GRAD, "        with torch.enable_grad():\n")], MODULE,
     "test_stream_leaves_grad_mode_and_model_mode_as_they_were"),
    ("left the model in eval mode", ST, [(LOOP, "    model.eval()\n" + LOOP)], MODULE,
     "test_stream_leaves_grad_mode_and_model_mode_as_they_were"),
    ("expected Python ints", ST, [("        yield token\n", "        yield torch.tensor(token)\n")], MODULE, GREEDY),
    ("expected a ValueError", ST, [("idx.dim() != 2 or idx.size(0) != 1 or", "idx.dim() != 2 or")], MODULE,
     "test_stream_refuses_a_batch_and_a_prompt_longer_than_the_context"),
    ("expected a ValueError", ST, [("    if any(len(s) == 0 for s in stops):\n", "    if False:\n")], MODULE,
     "test_text_refuses_an_empty_stop_string"),
    ("expected only non-empty pieces", ST, [("        if final > shown:\n", "        if final >= shown:\n")], MODULE, TIMING),
]


@pytest.mark.parametrize("mistake, file, edits, module, check", CASES, ids=[f"{c[0]} ({c[4]})" for c in CASES])
def test_the_failure_names_the_mistake(tmp_path, mistake, file, edits, module, check):
    assert_mistake_named(tmp_path, mistake, file, edits, module, check, named=True)


@pytest.mark.parametrize("words, file, edits, module, check", PLAIN, ids=[f"{c[0]} ({c[4]})" for c in PLAIN])
def test_the_failure_says_what_was_expected(tmp_path, words, file, edits, module, check):
    assert_mistake_named(tmp_path, words, file, edits, module, check)


def test_the_checks_pass_on_the_solution(tmp_path):
    assert_checks_pass(tmp_path, CASES + PLAIN)


def test_mistakes_in_09_10_and_12_cost_streaming_nothing(tmp_path):
    """35 streams through the reference KVCache and gpt_cached on the reference GPTModel, and
    chooses its tokens itself: a cache without the position offset that never advances, a
    GPTModel without position embeddings, and a generate that always picks token 0 change nothing."""
    assert_every_check_passes(tmp_path, BROKEN_09_10_12, MODULE)
