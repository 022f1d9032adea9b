"""Exercise 31: instruction data: Alpaca's prompt template, a dataset tokenized once, and batches
padded and masked for the next-token loss (the assistant track's first).

Oracles, written here from the docstrings' contract: the template as a join of its sections; the
token ids from a trusted tokenizer (harness/parts/instruction_run.py: a word-level tokenizer, or
tiktoken's GPT-2 encoding from reference/gpt2_encoding.py's ranks) run in this process; and the
batch built with tensors, the padding and masks found by position. Fresh entries, token ids,
lengths, prompt lengths, pad ids and ignore indices each run; ragged batches throughout. Named
mistakes come from the same batch oracle with the mistake in it.
"""

import sys

import torch

from harness.compare import Mistake, assert_close, assert_true, expect_value_error, fitting_alone
from harness.draw import n
from harness.failures import Mismatch
from harness.impl import File, load_part
from harness.manifest import ROOT

if str(ROOT / "reference") not in sys.path:
    sys.path.append(str(ROOT / "reference"))
import gpt2_encoding  # noqa: E402  (reference/gpt2_encoding.py: GPT-2's ranks offline, tiktoken's encoding)

EXERCISE = "31"

VOCAB = 50257
PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
WORDS = ["the", "a", "cat", "sat", "on", "mat", "Write", "summarize", "translate", "sentence", "into", "French", "poem", "list",
         "three", "colors", "of", "water", "boils", "at", "100", "degrees", "Rewrite", "passive", "voice", "café", "naïve", "日本",
         "is", "not", "what", "why", "how", "Paris", "capital", "answer", "x", "2", "+", "=", "4"]
ENDINGS = ["", ".", "?", "!", ":", " ", "  ", "\n", ". "]

UNSHIFTED = ("targets not shifted by one", "targets = seq[1:], inputs = seq[:-1]: the target at position j is the token at j + 1.")
ALL_PADS = ("every pad masked, the end-of-text target too",
            "Keep the target at j = n - 1: it is the first pad, the end-of-text token, and teaches the model to stop. "
            "Only the targets at j >= n (the pads after it) become ignore_index.")
PADS_KEPT = ("the padding not masked", "In targets, every pad after the first (positions j >= n) becomes ignore_index, so that "
             "the loss leaves it out.")
BY_VALUE = ("the padding found by value (targets == pad_token_id)",
            "A token equal to pad_token_id inside token_ids is text. Find the padding by position: the targets at j >= n, "
            "n = len(token_ids), become ignore_index; the one at j = n - 1 is the end-of-text token.")
PROMPT_KEPT = ("the prompt not masked", "With mask_prompt=True, the targets at j < prompt_length - 1 (those that predict a prompt "
               "token) become ignore_index.")
PROMPT_TOO_FAR = ("the prompt masked one position too far: the target of the response's first token is ignored",
                  "Target j predicts token j + 1: mask j < prompt_length - 1, not j < prompt_length.")
PROMPT_SHORT = ("the prompt masked one position short: the target of the prompt's last token is kept",
                "Target j predicts token j + 1: mask j < prompt_length - 1, not j < prompt_length - 2.")
CUT_FIRST = ("the sequences cut to allowed_max_length before the end-of-text token was appended",
             "Pad, shift and mask first, then cut inputs and targets to [:, :allowed_max_length]: a sequence cut short did not "
             "end there, so its last target is its next token, not the end-of-text token.")
IGNORE_100 = ("ignore_index written as -100", "Use the ignore_index argument; -100 is only its default.")
PAD_50256 = ("pad_token_id written as 50256", "Use the pad_token_id argument; 50256 (GPT-2's <|endoftext|>) is only its default.")
ALLOWED_WIDTH = ("padded to allowed_max_length, not to the batch's longest sequence + 1",
                 "Pad every sequence to longest + 1, longest the largest len(token_ids) in THIS batch; allowed_max_length only "
                 "cuts what is longer.")
FIXED_WIDTH = ("padded to a fixed length (GPT-2's context, 1024), not to the batch's longest sequence + 1",
               "Pad every sequence to longest + 1, longest the largest len(token_ids) in THIS batch.")
NOT_TRUNCATED = ("inputs and targets not cut to allowed_max_length",
                 "When allowed_max_length is given, keep the first allowed_max_length columns of both: inputs[:, :allowed_max_length].")
PADS_LATE = ("the padding masked from one position too late (j > n, not j >= n): the first pad after the end-of-text target "
             "is counted", "Target j = n - 1 is the end-of-text token and stays; every target at j >= n (n = len(token_ids)) is "
             "a pad and becomes ignore_index.")
PROMPT_SLICE = ("the prompt masked with a slice, targets[:prompt_length - 1]: with prompt_length 0 that is [:-1], every target "
                "but the last", "Mask by position, j < prompt_length - 1, which masks nothing when prompt_length is 0 (or 1); a "
                "slice with a negative end counts from the end of the row.")
NO_EOS_ROOM = ("padded to the longest sequence, not longest + 1: no room for the end-of-text token after it",
               "seq = token_ids + [pad_token_id] * (longest + 1 - n): one more than the longest, so that even the longest sequence "
               "gets its end-of-text target; inputs and targets are then longest wide.")
CUT_OFF_BY_ONE = ("inputs and targets cut one column off allowed_max_length",
                  "Keep exactly the first allowed_max_length columns: inputs[:, :allowed_max_length], the same for targets.")
ONLY_INPUTS_CUT = ("only the inputs cut to allowed_max_length", "Cut both: inputs[:, :allowed_max_length] and "
                   "targets[:, :allowed_max_length], so that each input still has its target.")
PROMPT_LENGTH_OFF = ("prompt_length off by one", "prompt_length is len(prompt_ids), the number of the prompt's tokens, exactly.")
NOT_CUT = ("inputs are the whole padded sequences", "inputs = seq[:-1] and targets = seq[1:]: both drop one token of the "
           "padded sequence, so both are longest wide.")


# ------------------------------------------------------------------------------------ the oracles


def prompt_text(entry: dict) -> str:
    sections = [PREAMBLE, "### Instruction:\n" + entry["instruction"]]
    if entry.get("input", ""):
        sections.append("### Input:\n" + entry["input"])
    return "\n\n".join(sections)


def response_text(entry: dict) -> str:
    return "\n\n".join(["", "### Response:\n" + entry["output"]])


def batch_oracle(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None, mask_prompt=False, variant=None):
    """``(inputs, targets)`` from the contract, with tensors; ``variant`` makes a known mistake."""
    if variant == "cut_first":
        batch = [(list(ids)[:allowed_max_length], p) for ids, p in batch]
    lengths = torch.tensor([len(ids) for ids, _ in batch])
    prompts = torch.tensor([int(p) for _, p in batch])
    longest = int(lengths.max())
    seq = torch.full((len(batch), longest + 1), pad_token_id, dtype=torch.long)
    for b, (ids, _) in enumerate(batch):
        seq[b, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    inputs, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
    j = torch.arange(longest)[None, :]
    if variant == "by_value":  # the first target equal to pad_token_id kept, every later one ignored
        is_pad = targets == pad_token_id
        first = torch.where(is_pad.any(1), is_pad.long().argmax(1), longest)[:, None]
        targets[is_pad & (j > first)] = ignore_index
    elif variant == "all_pads":
        targets[j >= lengths[:, None] - 1] = ignore_index
    elif variant in ("pads_late", "pads_late_2"):
        targets[j >= lengths[:, None] + (1 if variant == "pads_late" else 2)] = ignore_index
    elif variant != "pads_kept":
        targets[j >= lengths[:, None]] = ignore_index
    if mask_prompt:
        shift = {"prompt_too_far": 0, "prompt_short": 2, "prompt_kept": None}.get(variant, 1)
        if shift is not None:
            targets[j < prompts[:, None] - shift] = ignore_index
        if variant == "prompt_slice":  # targets[:p - 1] with p = 0 is targets[:-1]
            targets[(prompts[:, None] == 0) & (j < longest - 1)] = ignore_index
    if allowed_max_length is not None:
        inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]
    return inputs, targets


# ------------------------------------------------------------------------------------ random inputs


def text(gen, words_lo=1, words_hi=8, ending=None) -> str:
    words = " ".join(WORDS[n(gen, 0, len(WORDS) - 1)] for _ in range(n(gen, words_lo, words_hi)))
    return words + (ENDINGS[n(gen, 0, len(ENDINGS) - 1)] if ending is None else ending)


def entry(gen, kind=None, ending=None) -> dict:
    """A random entry; ``kind``: "input" (a non-empty input), "empty" (input ""), "none" (no input key)."""
    kind = kind or ["input", "empty", "none"][n(gen, 0, 2)]
    e = {"instruction": text(gen, ending=ending if kind != "input" else None), "output": text(gen)}
    if kind == "input":
        e["input"] = text(gen, ending=ending)
    elif kind == "empty":
        e["input"] = ""
    return e


def entries(gen, count) -> list[dict]:
    """``count`` random entries, each kind of input among them, the first prompt ending in a space."""
    out = [entry(gen, "input", ending=" "), entry(gen, "empty"), entry(gen, "none")]
    out += [entry(gen) for _ in range(count - len(out))]
    return [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]


def token_ids(gen, length, pad_token_id) -> list[int]:
    """Random ids in [0, VOCAB), never ``pad_token_id``."""
    ids = torch.randint(0, VOCAB - 1, (length,), generator=gen)
    return (ids + (ids >= pad_token_id).long()).tolist()


def ragged_batch(gen, pad_token_id, size=None, lo=2, hi=20, prompts=True):
    """``size`` (ids, prompt_length) pairs of different lengths (the shortest at least 2 shorter than
    the longest), prompt lengths mostly in [2, n - 1], now and then 0 or n; from three rows on,
    always one of each: the first row's from 3 to n - 1, the second's 0, the third's n."""
    size = size or n(gen, 2, 5)
    lengths = [n(gen, lo + 2, hi)]
    lengths.append(n(gen, lo, lengths[0] - 2))
    lengths += [n(gen, lo, hi) for _ in range(size - 2)]
    batch = []
    for length in lengths:
        edge = n(gen, 0, 5)
        p = 0 if edge == 0 else length if edge == 1 else n(gen, min(2, length), max(length - 1, min(2, length)))
        batch.append((token_ids(gen, length, pad_token_id), p if prompts else 0))
    if prompts and size >= 3:  # the edges always, beside a prompt in the middle: a row without a prompt, one all prompt
        batch[0] = (batch[0][0], n(gen, 3, len(batch[0][0]) - 1))
        batch[1] = (batch[1][0], 0)
        batch[2] = (batch[2][0], len(batch[2][0]))
    return [batch[i] for i in torch.randperm(len(batch), generator=gen).tolist()]


def pad_and_ignore(gen):
    """A pad id other than 50256 and an ignore_index other than -100."""
    return [0, n(gen, 1, 50255)][n(gen, 0, 1)], [-1, -n(gen, 2, 999)][n(gen, 0, 1)]


# ------------------------------------------------------------------------------------ comparing


def describe(batch, kwargs, note="") -> str:
    lengths = [len(ids) for ids, _ in batch]
    args = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    masked = f", prompt lengths {[int(p) for _, p in batch]}" if kwargs.get("mask_prompt") else ""
    return f"collate(<{len(batch)} sequences of lengths {lengths}{masked}{note}>{args})"


def width_mistakes(batch, kwargs):
    longest = max(len(ids) for ids, _ in batch)
    allowed = kwargs.get("allowed_max_length")
    out = [Mistake(*NOT_CUT, torch.tensor(longest + 1 if allowed is None else min(longest + 1, allowed)))]
    if allowed is None or allowed >= longest:  # nothing to cut: a width of longest - 1 had no room for the end-of-text token
        out.append(Mistake(*NO_EOS_ROOM, torch.tensor(longest - 1)))
    if allowed is not None and allowed > longest:  # nothing to cut: a width of about allowed_max_length was padded to it
        out += [Mistake(*ALLOWED_WIDTH, torch.tensor(w)) for w in (allowed, allowed - 1, allowed + 1)]
    elif allowed is not None:  # a cut (at the width itself when allowed == longest): one column off it is the cut's mistake
        out += [Mistake(*CUT_OFF_BY_ONE, torch.tensor(w)) for w in (allowed - 1, allowed + 1)]
        out.append(Mistake(*NOT_TRUNCATED, torch.tensor(longest)))
    else:
        out += [Mistake(*FIXED_WIDTH, torch.tensor(w)) for w in (1024, 1023, 1025)]
    return out


def target_mistakes(batch, kwargs):
    def wrong(variant=None, **changed):
        return lambda: batch_oracle(batch, **{**kwargs, **changed}, variant=variant)[1]

    out = [Mistake(*ALL_PADS, wrong("all_pads")), Mistake(*PADS_KEPT, wrong("pads_kept")), Mistake(*BY_VALUE, wrong("by_value")),
           Mistake(*PADS_LATE, wrong("pads_late")), Mistake(*PADS_LATE, wrong("pads_late_2"))]
    if kwargs.get("mask_prompt"):
        out += [Mistake(*PROMPT_KEPT, wrong("prompt_kept")), Mistake(*PROMPT_TOO_FAR, wrong("prompt_too_far")),
                Mistake(*PROMPT_SHORT, wrong("prompt_short")), Mistake(*PROMPT_SLICE, wrong("prompt_slice"))]
    if kwargs.get("allowed_max_length") is not None:
        out.append(Mistake(*CUT_FIRST, wrong("cut_first")))
    if kwargs.get("ignore_index", -100) != -100:
        out.append(Mistake(*IGNORE_100, wrong(ignore_index=-100)))
    if kwargs.get("pad_token_id", 50256) != 50256:
        out.append(Mistake(*PAD_50256, wrong(pad_token_id=50256)))
    return out


def check_batch(got, batch, kwargs, what, named=True):
    """``got`` (what collate returned) against the oracle: its structure, dtype and width, the
    inputs, the targets that predict the text (where an unshifted target shows), then all targets.
    With ``named``, a mistake of collate's whose output alone the learner's fits is named; without
    (a batch of the learner's own dataset, whose mistakes can look like collate's), none is."""
    want_x, want_y = batch_oracle(batch, **kwargs)

    def alone(actual, expected, mistakes):
        return fitting_alone(actual, expected, mistakes) if named else []

    if type(got) not in (tuple, list) or len(got) != 2 or not all(isinstance(t, torch.Tensor) for t in got):
        raise Mismatch(f"{what} returned {type(got).__name__}; expected a tuple (inputs, targets) of two tensors")
    x, y = got
    for name, t in (("inputs", x), ("targets", y)):
        assert_true(t.dtype == torch.long, f"{what}: {name} has dtype {t.dtype}; expected torch.long (int64), what embeddings "
                                           "and F.cross_entropy take")
        assert_true(t.dim() == 2 and t.shape[0] == len(batch), f"{what}: {name} has shape {tuple(t.shape)}; expected "
                                                                f"({len(batch)}, width): one row per sequence")
    assert_close(torch.tensor(x.shape[1]), torch.tensor(want_x.shape[1]), f"{what}: the width of inputs (their number of columns)",
                 oracle="the batch's longest len(token_ids)" + (", cut to allowed_max_length" if kwargs.get("allowed_max_length") else ""),
                 mistakes=alone(torch.tensor(x.shape[1]), torch.tensor(want_x.shape[1]), width_mistakes(batch, kwargs)))
    if y.shape != x.shape:
        uncut = kwargs.get("allowed_max_length") is not None and y.dim() == 2 and y.shape[1] == batch_oracle(batch, **{
            **kwargs, "allowed_max_length": None})[1].shape[1] > x.shape[1]
        raise Mismatch(f"{what}: targets have shape {tuple(y.shape)} and inputs {tuple(x.shape)}; expected the same"
                       + (f"\nThis looks like: {ONLY_INPUTS_CUT[0]}. {ONLY_INPUTS_CUT[1]}" if uncut and named else ""))
    pad = kwargs.get("pad_token_id", 50256)
    x_mistakes = [Mistake(*PAD_50256, batch_oracle(batch, **{**kwargs, "pad_token_id": 50256})[0])] if pad != 50256 else []
    x_mistakes += padded_with(x, want_x, batch)
    assert_close(x, want_x, f"{what}: inputs", oracle="seq[:-1], seq = token_ids + [pad_token_id] * (longest + 1 - n)",
                 mistakes=alone(x, want_x, x_mistakes))
    j = torch.arange(want_y.shape[1])[None, :]
    lengths = torch.tensor([len(ids) for ids, _ in batch])[:, None]
    of_text = (want_y != kwargs.get("ignore_index", -100)) & (j < lengths - 1)  # the targets that are a token of the text
    if bool(of_text.any()):
        unshifted = Mistake(*UNSHIFTED, torch.where(of_text, want_x, want_y))
        seen = torch.where(of_text, y, want_y)
        if unshifted.matches(seen, 1e-3, 1e-4):
            assert_close(seen, want_y, f"{what}: targets, at the positions that predict a token of the text", oracle="seq[1:]",
                         mistakes=[unshifted] if named else [])
    assert_close(y, want_y, f"{what}: targets", oracle="seq[1:] with ignore_index for the pads after the first"
                 + (" and for j < prompt_length - 1" if kwargs.get("mask_prompt") else ""),
                 mistakes=alone(y, want_y, target_mistakes(batch, kwargs)))


def padded_with(x, want_x, batch):
    """The named mistake when the inputs differ only at the padding (j >= n), and there all hold one
    other value: the padding written with that value instead of pad_token_id."""
    if x.shape != want_x.shape:
        return []
    j = torch.arange(want_x.shape[1])[None, :]
    at_pad = j >= torch.tensor([len(ids) for ids, _ in batch])[:, None]
    wrong = x != want_x
    if not bool(wrong.any()) or bool((wrong & ~at_pad).any()) or len(set(x[at_pad].tolist())) != 1:
        return []
    value = int(x[at_pad][0])
    return [Mistake(f"the inputs padded with {value}, not pad_token_id", "Pad the inputs with the pad_token_id argument: seq = "
                    "token_ids + [pad_token_id] * (longest + 1 - n), inputs = seq[:-1]; only the targets' pads after the first "
                    "become ignore_index.", torch.where(at_pad, torch.full_like(want_x, value), want_x))]


def collate(impl, batch, **kwargs):
    got = impl.call("instruct.collate", batch, returns="data", **kwargs).out
    check_batch(got, batch, kwargs, describe(batch, kwargs))


def first_difference(got: str, want: str) -> int:
    return next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))


def check_text(got, want: str, what: str, named=()) -> None:
    if not isinstance(got, str):
        raise Mismatch(f"{what} returned {type(got).__name__}; expected a str")
    if got == want:
        return
    i = first_difference(got, want)
    start = max(0, i - 30)
    message = (f"{what} differs from the template at character {i} (of {len(want)}): got ...{got[start:i + 30]!r}..., "
               f"expected ...{want[start:i + 30]!r}...")
    for name, fix, variant in named:
        if got == variant:
            message += f"\nThis looks like: {name}. {fix}"
    raise Mismatch(message)


# ------------------------------------------------------------------------------------ the template


def test_format_input_and_response_follow_the_template(impl, gen):
    for e in entries(gen, n(gen, 4, 6)):
        shown = {k: (v if len(v) < 30 else v[:27] + "...") for k, v in e.items()}
        with_input = prompt_text({**e, "input": e.get("input") or ""}) + ("\n\n### Input:\n" if not e.get("input") else "")
        check_text(impl.call("instruct.format_input", e, returns="data").out, prompt_text(e), f"format_input({shown})",
                   named=[("the Input section written for an empty input", "Write '\\n\\n### Input:\\n' + input only when the "
                           "entry has a non-empty input (entry.get('input')).", with_input),
                          ("a newline at the end of the prompt", "The prompt ends with the instruction's (or the input's) last "
                           "character; the response section brings its own '\\n\\n'.", prompt_text(e) + "\n")])
        check_text(impl.call("instruct.format_response", e, returns="data").out, response_text(e), f"format_response({shown})",
                   named=[("no blank line before the response", "It starts with '\\n\\n### Response:\\n'.",
                           "\n### Response:\n" + e["output"])])


# ------------------------------------------------------------------------------------ the dataset


def check_items(items, data, encode, what):
    """The dataset's items: (prompt ids + response ids, the prompt's count) for each entry."""
    for k, (e, item) in enumerate(zip(data, items)):
        if type(item) not in (tuple, list) or len(item) != 2:
            raise Mismatch(f"{what}[{k}] is {type(item).__name__}; expected a tuple (token_ids, prompt_length)")
        ids, p = item
        if not (isinstance(ids, (list, tuple)) and all(type(t) is int for t in ids)):
            raise Mismatch(f"{what}[{k}]'s token_ids is {type(ids).__name__}; expected a list of ints")
        prompt, response = encode(prompt_text(e)), encode(response_text(e))
        whole = encode(prompt_text(e) + response_text(e))
        assert_close(torch.tensor(ids, dtype=torch.long), torch.tensor(prompt + response, dtype=torch.long),
                     f"{what}[{k}]'s token_ids", oracle="encode(format_input(entry)) + encode(format_response(entry))",
                     mistakes=[Mistake("the whole text encoded at once", "Encode the prompt and the response apart and "
                                       "concatenate: encoded whole, the prompt's last characters and the response's first can "
                                       "become one token.", torch.tensor(whole, dtype=torch.long))])
        assert_true(type(p) is int, f"{what}[{k}]'s prompt_length is {type(p).__name__}; expected an int")
        assert_close(torch.tensor(p), torch.tensor(len(prompt)), f"{what}[{k}]'s prompt_length",
                     oracle="len(encode(format_input(entry)))",
                     mistakes=[Mistake("the prompt's length counted in characters", "Count its tokens: len(prompt_ids).",
                                       torch.tensor(len(prompt_text(e)))),
                               Mistake("the length of the whole example", "prompt_length is the prompt's token count, "
                                       "len(prompt_ids), not len(token_ids).", torch.tensor(len(prompt + response))),
                               Mistake(*PROMPT_LENGTH_OFF, torch.tensor(len(prompt) - 1)),
                               Mistake(*PROMPT_LENGTH_OFF, torch.tensor(len(prompt) + 1))])


def test_dataset_tokenizes_each_entry_once(impl, gen):
    data = entries(gen, n(gen, 3, 7))
    res = impl.scenario("instruction_run.dataset", data).out
    what = f"InstructionDataset(<{len(data)} entries>, tokenizer)"
    prompts, responses = [prompt_text(e) for e in data], [response_text(e) for e in data]
    encoded = res["encoded_in_init"]
    if sorted(encoded) != sorted(prompts + responses):
        wholes = {p + r for p, r in zip(prompts, responses)}
        if any(t in wholes for t in encoded):
            raise Mismatch(f"{what}: tokenizer.encode was given the whole text (prompt + response) of some entries; expected "
                           "format_input(entry) and format_response(entry), each encoded once\nThis looks like: the whole text "
                           "encoded at once. Encode the prompt and the response apart and concatenate the ids: then the first "
                           "prompt_length ids are exactly the prompt's.")
        raise Mismatch(f"{what}: __init__ called tokenizer.encode {len(encoded)} time(s) for {len(data)} entries; expected "
                       f"{2 * len(data)}: format_input(entry) and format_response(entry) of each entry, once each"
                       + ("" if encoded else ". Tokenize in __init__, not when an item is read."))
    later = res["encoded_later"]
    assert_true(not later, f"{what}: reading every item twice called tokenizer.encode {len(later)} more time(s); expected none: "
                           "keep the ids from __init__, and let __getitem__ only look them up")
    assert_true(res["len"] == len(data), f"len({what}) is {res['len']}; expected {len(data)}, one item per entry")
    check_items(res["items"], data, load_part("instruction_run").ToyTokenizer().encode, what)
    assert_true(res["again"] == res["items"], f"{what}: reading the items a second time gave other items; expected the same")


def test_dataset_and_collate_in_a_dataloader_with_gpt2s_tokenizer(impl, gen):
    data = entries(gen, n(gen, 4, 8))
    batch_size = n(gen, 2, 3)
    kwargs = {"mask_prompt": bool(n(gen, 0, 1))}
    if n(gen, 0, 1):
        kwargs["allowed_max_length"] = n(gen, 30, 50)  # the preamble alone is 18 tokens, an example 30 to 60: some are cut
    got = impl.scenario("instruction_run.loader", data, batch_size, ranks=File(gpt2_encoding.gpt2_tiktoken_file()), **kwargs).out
    enc = gpt2_encoding.gpt2_encoding()
    examples = []
    for e in data:
        prompt = enc.encode(prompt_text(e))
        examples.append((prompt + enc.encode(response_text(e)), len(prompt)))
    chunks = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    args = "".join(f", {k}={v}" for k, v in kwargs.items())
    what = (f"DataLoader(InstructionDataset(<{len(data)} entries>, GPT-2's tokenizer), batch_size={batch_size}, "
            f"collate_fn=partial(collate{args}))")
    assert_true(type(got) is list and len(got) == len(chunks), f"{what} gave {len(got) if type(got) is list else got!r} batches; "
                                                              f"expected {len(chunks)}")
    for b, (batch, chunk) in enumerate(zip(got, chunks)):
        lengths = [len(ids) for ids, _ in chunk]
        check_batch(batch, chunk, kwargs, f"{what}, batch {b} (sequences of lengths {lengths})", named=False)


# ------------------------------------------------------------------------------------ collate


def test_collate_pads_and_shifts(impl, gen):
    collate(impl, ragged_batch(gen, 50256))  # the defaults: pad 50256, ignore -100
    pad, ignore = pad_and_ignore(gen)
    batch = ragged_batch(gen, pad, size=n(gen, 3, 6))
    batch[0] = (torch.tensor(batch[0][0], dtype=torch.int32), batch[0][1])  # a tensor of ids is a sequence too
    got = impl.call("instruct.collate", batch, pad_token_id=pad, ignore_index=ignore, returns="data").out
    plain = [(list(map(int, ids)), p) for ids, p in batch]
    kwargs = {"pad_token_id": pad, "ignore_index": ignore}
    check_batch(got, plain, kwargs, describe(plain, kwargs, note=", the first a 1-D int32 tensor"))


def test_collate_masks_the_prompt(impl, gen):
    pad, ignore = pad_and_ignore(gen)
    collate(impl, ragged_batch(gen, 50256), mask_prompt=True)
    collate(impl, ragged_batch(gen, pad, size=n(gen, 3, 6)), pad_token_id=pad, ignore_index=ignore, mask_prompt=True)


def test_collate_cuts_to_allowed_max_length(impl, gen):
    pad, ignore = pad_and_ignore(gen)
    for mask_prompt in (False, True):
        batch = ragged_batch(gen, pad, lo=3, hi=24)
        longest = max(len(ids) for ids, _ in batch)
        allowed = n(gen, 2, longest - 1)
        b = next(i for i, (ids, _) in enumerate(batch) if len(ids) == longest)
        batch[b] = (batch[b][0], n(gen, 1, allowed))  # its cut shows through the prompt mask
        collate(impl, batch, pad_token_id=pad, ignore_index=ignore, allowed_max_length=allowed, mask_prompt=mask_prompt)


def test_collate_pads_to_the_batchs_longest_sequence(impl, gen):
    batch = ragged_batch(gen, 50256)
    longest = max(len(ids) for ids, _ in batch)
    collate(impl, batch, allowed_max_length=longest + n(gen, 2, 40), mask_prompt=bool(n(gen, 0, 1)))
    for allowed in (longest, longest + 1):  # the limit exactly the width, and one more: nothing is cut either way
        collate(impl, batch, allowed_max_length=allowed, mask_prompt=True)
    collate(impl, ragged_batch(gen, 50256, hi=12), allowed_max_length=None)


def test_collate_finds_the_padding_by_position(impl, gen):
    """Sequences whose text holds the pad id (GPT-2's <|endoftext|> in a text, a pad id of 0 that is
    also a token): those tokens are text, their targets stay."""
    pad, ignore = [(50256, -100), pad_and_ignore(gen)][n(gen, 0, 1)]
    batch = ragged_batch(gen, pad, size=n(gen, 3, 5), lo=3)
    for b in range(len(batch)):
        ids, p = batch[b]
        ids, p = list(ids), min(p, len(ids) - 1)  # a pad id after the prompt: its target is not masked with it
        where = [n(gen, max(p, 1), len(ids) - 1)] if b % 2 == 0 else [len(ids) - 1, n(gen, 0, len(ids) - 2)]
        for i in where:
            ids[i] = pad
        batch[b] = (ids, p)
    collate(impl, batch, pad_token_id=pad, ignore_index=ignore, mask_prompt=bool(n(gen, 0, 1)))


def test_collate_refuses_bad_batches(impl, gen):
    batch = ragged_batch(gen, 50256)
    b = n(gen, 0, len(batch) - 1)
    ids, _ = batch[b]
    too_long = len(ids) + n(gen, 1, 5)
    allowed = -n(gen, 0, 5)
    cases = [
        ([], {}, (), "collate([])", ": there is nothing to pad"),
        (batch, {"allowed_max_length": allowed}, (allowed,), f"collate(<a batch>, allowed_max_length={allowed})",
         ": inputs of width 0 or less hold nothing to learn from"),
        (batch[:b] + [([], 0)] + batch[b + 1:], {}, (b,), f"collate(<a batch whose sequence {b} has no tokens>)",
         ": a sequence without tokens has nothing to predict; say which sequence"),
        (batch[:b] + [(ids, too_long)] + batch[b + 1:], {"mask_prompt": True}, (too_long,),
         f"collate(<a batch whose sequence {b} has {len(ids)} tokens and prompt_length {too_long}>, mask_prompt=True)",
         ": the prompt cannot be longer than the sequence; say the prompt_length given"),
    ]
    for i in torch.randperm(len(cases), generator=gen).tolist():
        bad, kwargs, needles, what, why = cases[i]
        expect_value_error(lambda: impl.call("instruct.collate", bad, returns="data", **kwargs), what, needles=needles, why=why)
