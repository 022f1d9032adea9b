r"""Exercise 36: verifiable rewards, the reasoning track's first: a completion's final answer, numbers
in one canonical form, the correctness and format rewards, and a batch of them as a tensor.

Oracles, written here from the docstrings' contract and never from solutions/: tables of tricky
completions and numbers, each with the value the contract gives it worked out by hand (and why);
and fresh cases drawn each run and built from their parts, so that each expected value is known by
construction, not by parsing: a number's value first, then a random way to write it (a sign or the
unicode minus, a '$', leading zeros, thousands separators, trailing zeros, a final period,
whitespace); a completion's answers placed one after another among random reasoning and distractors
('Answer:' inside a line, 'answer:', a space before 'Answer:', '\boxed {'), the final one known.

Named mistakes are the contract read wrongly, written here as readers with one rule changed
(``find_answer``, ``read_number``, ``in_format``); a name is given only when its reader explains
every wrong output of the check and no reader of another name does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch

from harness.compare import Mistake, assert_close, expect_value_error
from harness.draw import n
from harness.failures import LearnerError, Mismatch, NotStarted

EXERCISE = "36"

BOX, ANSWER, MINUS = "\\boxed{", "Answer:", "\u2212"
DIGITS = "0123456789"

# ------------------------------------------------------------------------------------ the tables
# (completion, its final answer by the contract, why)
EXTRACT_TABLE = [
    ("We add 2 and 3.\nAnswer: 5", "5", "an Answer line"),
    ("First guess:\nAnswer: 4\nWait, 4 is wrong: I dropped a carry.\nAnswer: 6", "6",
     "two Answer lines: the last is final"),
    ("So \\boxed{3}, or rather \\boxed{7}.", "7", "two boxes: the last is final"),
    ("\\boxed{8}\nLet me check that again.\nAnswer: 5", "5", "the Answer line starts after the box"),
    ("Answer: 5\nIn LaTeX: \\boxed{8}", "8", "the box starts after the Answer line"),
    ("Answer: 1\n\\boxed{2}\nAnswer: 3", "3", "the last of three markers"),
    ("The half is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}",
     "braces nest: the box ends at the '}' that closes its own '{'"),
    ("Total: \\boxed{1{,}234} apples", "1{,}234", "braces nest"),
    ("It is \\boxed{\\sqrt{\\frac{16}{4}}}", "\\sqrt{\\frac{16}{4}}", "braces nested twice"),
    ("\\boxed{2}\nAnswer: 3\nAs a box: \\boxed{\\dfrac{9}{3}}", "\\dfrac{9}{3}",
     "the last of three markers, a box with nested braces"),
    ("The answer is \\boxed{12", None, "a box never closed"),
    ("Maybe \\boxed{5}. No: \\boxed{\\frac{3}{4}", None, "the last box is never closed, so there is no final answer"),
    ("Answer: 6\n\\boxed{7} hmm\nAnswer: 8\n\\boxed{9", None, "the marker that starts last is a box never closed"),
    ("The Answer: 5 seems right.", None, "'Answer:' inside a line is text"),
    ("Answer: 3\nso the final Answer: 4 stands", "3", "'Answer:' inside a line is text"),
    ("Answer: 2\nOr is the Answer: 5?", "2", "an Answer line at the very start; the second 'Answer:' is inside a line"),
    (" Answer: 9", None, "a space before 'Answer:': not an Answer line"),
    ("answer: 9", None, "'answer:' is not 'Answer:'"),
    ("Answer:   \u22125  ", "\u22125", "the answer is stripped, as written, not normalised"),
    ("Answer: 1,234.\n\n", "1,234.", "the answer as written"),
    ("Answer: 7\r\n", "7", "'\\r' is whitespace, stripped"),
    ("Thinking...\nAnswer:", "", "an empty Answer line gives ''"),
    ("Answer: \\boxed{42}", "42", "a box on the Answer line starts after the line does"),
    ("\\boxed{\\boxed{3}}", "3", "the inner box starts last"),
    ("\\boxed{}", "", "an empty box gives ''"),
    ("\\boxed{1\n2}", "1\n2", "a box may span lines"),
    ("The sum is \\boxed {4} or \\fbox{4}", None, "'\\boxed {' and '\\fbox{' are not boxes"),
    ("No marker in this text, only the number 42.", None, "no marker"),
    ("", None, "an empty completion"),
]

# (text, its canonical form by the contract, why)
NORMALIZE_TABLE = [
    ("42", "42", ""),
    ("0", "0", ""),
    ("10", "10", "an integer's zeros are its own"),
    (" 42\n", "42", "whitespace at the ends is stripped"),
    ("42.", "42", "one trailing period is dropped"),
    ("3.", "3", "one trailing period is dropped"),
    ("42..", None, "only one trailing period is dropped"),
    ("\u22127", "-7", "U+2212 is a minus"),
    ("\u2212.25", "-0.25", "U+2212 is a minus"),
    ("\u22121,000.", "-1000", "a minus, separators and a trailing period"),
    ("\u22120.0", "0", "zero has no sign"),
    ("-0", "0", "zero has no sign"),
    ("-0.000", "0", "zero has no sign"),
    ("+7", "7", "a '+' is dropped"),
    ("007", "7", "leading zeros are dropped"),
    ("000", "0", "leading zeros are dropped, one 0 is left"),
    ("007.", "7", "leading zeros and a trailing period"),
    ("-007.50", "-7.5", "leading and trailing zeros"),
    ("00.500", "0.5", "leading and trailing zeros"),
    (".5", "0.5", "one 0 before the point"),
    ("0.50", "0.5", "a decimal's trailing zeros are dropped"),
    ("3.0", "3", "no decimal digit left: no point"),
    ("100.00", "100", "no decimal digit left: no point"),
    ("-10.10", "-10.1", "a decimal's trailing zeros are dropped"),
    ("3.50.", "3.5", "trailing zeros and a trailing period"),
    ("1,234,567", "1234567", "thousands separators are dropped"),
    ("2,000,000", "2000000", "thousands separators are dropped"),
    ("12,345.60", "12345.6", "thousands separators and trailing zeros"),
    ("1,000.", "1000", "separators and a trailing period"),
    ("$18", "18", "a '$' before the digits is dropped"),
    ("-$1,250.00", "-1250", "a sign, a '$', separators and trailing zeros"),
    ("1,23", None, "a comma must group three digits"),
    ("1234,567", None, "at most three digits before the first comma"),
    (",123", None, "at least one digit before the first comma"),
    ("1,234,56", None, "every group after a comma has three digits"),
    ("1,2345", None, "every group after a comma has three digits"),
    ("50%", None, "a percentage is no number"),
    ("1e3", None, "no exponents"),
    ("1/2", None, "a fraction is no number here"),
    ("\\frac{1}{2}", None, "a fraction is no number here"),
    ("five", None, "words are no numbers"),
    ("12 apples", None, "a unit is no number"),
    ("1 234", None, "no spaces inside"),
    ("1.2.3", None, "one decimal point at most"),
    ("--5", None, "one sign at most"),
    ("+-5", None, "one sign at most"),
    ("$", None, "no digit"),
    ("-", None, "no digit"),
    (".", None, "no digit"),
    ("", None, "no digit"),
]

# (completion, reference answer, correctness reward by the contract, why)
CORRECTNESS_TABLE = [
    ("So it is 1,234.\nAnswer: 1,234", "1234", 1.0, "1,234 and 1234 are the same number"),
    ("Answer: 1234", "1,234", 1.0, "the reference is normalised too"),
    ("The result is \\boxed{\u22125}", "-5", 1.0, "U+2212 is a minus"),
    ("Answer: 5.", "5", 1.0, "a trailing period"),
    ("Answer: 007", "7", 1.0, "leading zeros"),
    ("Answer: 3.50", "3.5", 1.0, "trailing zeros"),
    ("Answer: $18", "18.00", 1.0, "a '$' and trailing zeros"),
    ("Answer: -0", "0", 1.0, "zero has no sign"),
    ("Answer: -5", "5", 0.0, "-5 is not 5"),
    ("Answer: 4\nWait, recount.\nAnswer: 5", "4", 0.0, "the final answer is 5"),
    ("Answer: 4\nWait, recount.\nAnswer: 5", "5", 1.0, "the final answer is 5"),
    ("The Answer: 7 is inside a line.\nAnswer: 8", "8", 1.0, "'Answer:' inside a line is text"),
    ("\\boxed{2}\nAnswer: 3", "3", 1.0, "the Answer line starts after the box"),
    ("\\boxed{\\frac{1}{2}}", "0.5", 0.0, "\\frac{1}{2} is no number here"),
    ("No answer at all.", "3", 0.0, "no final answer"),
    ("It is \\boxed{12", "12", 0.0, "a box never closed: no final answer"),
    ("Answer: 12 apples", "12", 0.0, "'12 apples' is no number"),
    ("Answer: 50%", "50", 0.0, "a percentage is no number"),
    ("Answer: 1,23", "123", 0.0, "1,23 is no number"),
    ("Answer: 12", "12.5", 0.0, "another number"),
    ("Answer: 1,000", "1", 0.0, "1,000 is a thousand"),
]

# (completion, format reward by the contract, why)
FORMAT_TABLE = [
    ("Two plus three is five.\nAnswer: 5", 1.0, "reasoning, then one Answer line with a number"),
    ("2 + 2 = 5, I think.\nAnswer: 5", 1.0, "a wrong number in the format still gets 1.0"),
    ("We add them.\nAnswer: 12\n\n   \n", 1.0, "empty lines after the Answer line change nothing"),
    ("\n\nWe add them.\n\n\nAnswer: 12", 1.0, "empty lines change nothing"),
    ("We add them.\nAnswer: 1,234.", 1.0, "1,234. is a number"),
    ("It is negative.\nAnswer: \u22123", 1.0, "\u22123 is a number"),
    ("My first Answer: 4 was wrong.\nAnswer: 5", 1.0, "'Answer:' inside a line is text"),
    ("answer: 5\nAnswer: 6", 1.0, "'answer:' is no Answer line: it is reasoning"),
    ("Thinking.\r\nAnswer: 5 \r\n", 1.0, "'\\r' is whitespace"),
    ("We have \\boxed{5} as a box.\nAnswer: 5", 1.0, "a box before the Answer line changes nothing"),
    ("Answer: 5", 0.0, "no reasoning before the Answer line"),
    ("\n  \nAnswer: 5\n", 0.0, "no reasoning: only empty lines before the Answer line"),
    ("We add them.\nAnswer: 5\nDouble-check: 2 + 3 = 5.", 0.0, "the Answer line is not the last non-empty line"),
    ("Sum it up.\nAnswer: 7\n\nThat is all.", 0.0, "the Answer line is not the last non-empty line"),
    ("First try.\nAnswer: 4\nNo, recount.\nAnswer: 5", 0.0, "two Answer lines"),
    ("Try.\nAnswer:\nAnswer: 5", 0.0, "two Answer lines: an empty 'Answer:' line is one too"),
    ("Answer: 3\nAnswer: 3", 0.0, "two Answer lines"),
    ("We add them.\nAnswer: five", 0.0, "'five' is no number"),
    ("We add them.\nAnswer: 12 apples", 0.0, "'12 apples' is no number"),
    ("We add them.\nAnswer:", 0.0, "an empty answer is no number"),
    ("We add them.\nAnswer: \\boxed{5}", 0.0, "'\\boxed{5}' is no number"),
    ("We add them. Answer: 5", 0.0, "'Answer:' inside a line: no Answer line"),
    ("We add them.\n  Answer: 5", 0.0, "a space before 'Answer:': no Answer line"),
    ("We add them.\n\\boxed{5}", 0.0, "a box is not the format"),
    ("Reasoning only, no answer.", 0.0, "no Answer line"),
    ("", 0.0, "an empty completion"),
]

# ------------------------------------------------------------------------------------ the readers
# The contract as a reader, and (with a flag) the same reader with one rule changed: a known mistake.
# They name mistakes only; the expected values come from the tables and from how a case was built.


def find_answer(text: str, *, first=False, cut=False, midline=False, box_first=False) -> str | None:
    """The final answer by the contract; or the first marker's (``first``), a box cut at its first
    '}' (``cut``), 'Answer:' anywhere in a line (``midline``), the last box whenever there is one
    (``box_first``)."""
    boxes = [m.start() for m in re.finditer(re.escape(BOX), text)]
    lines = [m.start() for m in re.finditer(("" if midline else "^") + re.escape(ANSWER), text, flags=re.M)]
    starts = (boxes or lines) if box_first else boxes + lines
    if not starts:
        return None
    start = min(starts) if first else max(starts)
    if start not in boxes:
        return text[start + len(ANSWER):].partition("\n")[0].strip()
    inside = start + len(BOX)
    if cut:
        end = text.find("}", inside)
        return text[inside:end] if end >= 0 else None
    depth = 1
    for j in range(inside, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[inside:j]
    return None


def read_number(text: str, *, commas="grouped", minus=True, one_period=True, leading=True, trailing=True,
                zero_by_value=True, signed_zero=False) -> str | None:
    """The canonical form by the contract; or with commas "kept" (thousands separators kept) or "any"
    (every comma dropped, grouped by three or not), the unicode minus not read, no trailing period
    dropped, leading zeros or a decimal's trailing zeros kept. ``zero_by_value``: a zero loses its
    sign by its value ("-0.0" is zero), else only when its form is "0"; ``signed_zero``: a zero keeps
    its minus ("-0")."""
    s = text.strip()
    if one_period and s.endswith("."):
        s = s[:-1]
    if minus:
        s = s.replace(MINUS, "-")
    negative = s[:1] == "-"
    if s[:1] in ("-", "+"):
        s = s[1:]
    if s[:1] == "$":
        s = s[1:]
    whole, point, decimals = s.partition(".")
    if point and not (decimals and all(c in DIGITS for c in decimals)):
        return None
    if commas == "any":
        whole = whole.replace(",", "")
    groups = whole.split(",")
    if not all(c in DIGITS for c in "".join(groups)):
        return None
    if len(groups) > 1 and not (1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])):
        return None
    if not whole and not point:
        return None
    integer = whole if commas == "kept" else "".join(groups)
    integer = (integer.lstrip("0") if leading else integer) or "0"
    fraction = decimals.rstrip("0") if trailing else decimals
    number = integer + "." + fraction if fraction else integer
    zero = not (set(number) - set("0.,")) if zero_by_value else number == "0"
    return "-" + number if negative and (signed_zero or not zero) else number


def in_format(text: str, *, not_last=False, before_last=False, many=False, no_reasoning=False, any_text=False) -> float:
    """The format reward by the contract; or with the Answer line allowed anywhere (``not_last``;
    ``before_last``: the reasoning counted as the lines before it, not as a second non-empty line),
    several Answer lines allowed (``many``: the last counts), no reasoning asked for, any text
    after 'Answer:' taken for a number."""
    lines = [line for line in text.split("\n") if line.strip()]
    at = [i for i, line in enumerate(lines) if line.startswith(ANSWER)]
    if not at or (len(at) > 1 and not many):
        return 0.0
    k = at[-1]
    if k != len(lines) - 1 and not not_last:
        return 0.0
    if not no_reasoning and (k < 1 if before_last else len(lines) < 2):
        return 0.0
    return 1.0 if any_text or read_number(lines[k][len(ANSWER):]) is not None else 0.0


@dataclass
class Variant:
    """A known mistake: its name, its fix, and the outputs it gives on a case (the check's arguments)."""

    name: str
    fix: str
    outputs: Callable[[tuple], set]


def both_zeros(**flags) -> Callable[[tuple], set]:
    return lambda args: {read_number(args[0], **flags), read_number(args[0], zero_by_value=False, **flags)}


FIRST = Variant("the first answer taken instead of the last",
                "The final answer is the marker that starts LAST: of every '\\boxed{' and every line that starts "
                "with 'Answer:', take the one whose start is greatest (max), not the first found.",
                lambda args: {find_answer(args[0], first=True)})
CUT = Variant("the box's content cut at the first '}' (nested braces)",
              "Count the braces: from just after the box's '{', each '{' opens one more and each '}' closes one; the "
              "box ends at the '}' that closes its own '{'. \\boxed{\\frac{1}{2}} holds \\frac{1}{2}.",
              lambda args: {find_answer(args[0], cut=True)})
MIDLINE = Variant("'Answer:' taken inside a line, not only at a line's start",
                  "An Answer line STARTS with 'Answer:': its position i is 0 or completion[i - 1] == '\\n'. 'The "
                  "Answer: 5' is text, and so is ' Answer: 5' (a space first).",
                  lambda args: {find_answer(args[0], midline=True)})
BOX_FIRST = Variant("the last box taken whenever there is one, though an Answer line starts after it",
                    "Boxes and Answer lines compete on one footing: whichever STARTS LAST is the final answer, "
                    "'\\boxed{8}\\nAnswer: 5' gives '5'.", lambda args: {find_answer(args[0], box_first=True)})
EXTRACT_MISTAKES = [FIRST, CUT, MIDLINE, BOX_FIRST]

SEPARATORS = Variant("thousands separators kept", "Drop the commas that group digits by three: '1,234,567' is "
                     "'1234567' (group the digits with a regular expression such as r'\\d{1,3}(?:,\\d{3})+', then "
                     ".replace(',', '')).", both_zeros(commas="kept"))
ANY_COMMA = Variant("every comma dropped, grouped by three or not", "A comma is a thousands separator only where it "
                    "groups three digits: '1,234' is 1234, but '1,23', '1234,567' and ',123' are no numbers (None).",
                    both_zeros(commas="any"))
UNICODE_MINUS = Variant("the unicode minus (U+2212) not read", "Replace '\\u2212' by '-' before reading the sign: "
                        "'\\u22127' is -7.", both_zeros(minus=False))
PERIOD = Variant("the trailing period kept", "After stripping whitespace, drop ONE trailing '.', the full stop after "
                 "a sentence's last number: '42.' is 42 (and '42..' is no number).", both_zeros(one_period=False))
LEADING = Variant("leading zeros kept", "Drop the integer part's leading zeros, .lstrip('0'), and keep one '0' "
                  "when nothing is left: '007' is '7', '000' is '0', '00.5' is '0.5'.", both_zeros(leading=False))
TRAILING = Variant("a decimal's trailing zeros kept", "Drop the decimal part's trailing zeros, .rstrip('0'), and the "
                   "point when no digit is left: '3.50' is '3.5', '3.0' is '3'.", both_zeros(trailing=False))
SIGNED_ZERO = Variant("a negative zero kept its minus ('-0')", "Zero has no sign: write '-' only in front of a number that "
                      "is not zero, after its canonical form is made ('-0', '-0.00' and '\u22120.0' are all '0').",
                      lambda args: {read_number(args[0], signed_zero=True)})
NORMALIZE_MISTAKES = [SEPARATORS, ANY_COMMA, UNICODE_MINUS, PERIOD, LEADING, TRAILING, SIGNED_ZERO]

NOT_LAST = Variant("the format reward given to a completion whose Answer line is not its last non-empty line",
                   "Nothing but empty lines may follow the Answer line: it must be lines[-1] of the non-empty lines.",
                   lambda args: {in_format(args[0], not_last=True),
                                 in_format(args[0], not_last=True, before_last=True)})
MANY = Variant("several Answer lines accepted", "Exactly one line may start with 'Answer:' (an empty 'Answer:' line "
               "counts too): a completion that answers twice is not in the format.",
               lambda args: {in_format(args[0], many=True)})
NO_REASONING = Variant("no reasoning asked for", "At least one non-empty line must come before the Answer line: "
                       "'Answer: 5' alone is not in the format.", lambda args: {in_format(args[0], no_reasoning=True)})
ANY_TEXT = Variant("the Answer line's text not checked to be a number", "The text after 'Answer:' must be a number: "
                   "normalize_number(text) is not None ('Answer: five' is not in the format).",
                   lambda args: {in_format(args[0], any_text=True)})
FORMAT_MISTAKES = [NOT_LAST, MANY, NO_REASONING, ANY_TEXT]


def as_written(args) -> set:
    """Correctness with the final answer compared as written: to the reference's canonical form, or to
    the reference as written."""
    got, reference = find_answer(args[0]), args[1]
    return {float(got is not None and got == read_number(reference)),
            float(got is not None and got == reference.strip())}


UNNORMALISED = Variant("the final answer compared as written, not normalised", "Normalise both sides: "
                       "normalize_number(extract_answer(completion)) == normalize_number(answer), so that '1,234' "
                       "and '1234' are the same number.", as_written)
CORRECTNESS_MISTAKES = [UNNORMALISED]

# ------------------------------------------------------------------------------------ checking


def shown(value, limit: int = 240) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2:]


def call(impl, function: str, *args):
    """The learner's ``function(*args)``; what it raises is said with the arguments."""
    try:
        return impl.call(f"rewards.{function}", *args, returns="data").out
    except LearnerError as e:
        if e.kind != "raised":
            raise
        error = LearnerError(f"{function}({', '.join(shown(a, 160) for a in args)}) raised {e.message}", e.details)
        error.kind = e.kind
        raise error from None


def explaining(cases, got, expected, variants) -> Variant | None:
    """The one named mistake that gives every output of the check, the wrong ones and the right ones
    (None when none does, or when mistakes of two names do: the evidence does not tell them apart)."""
    if got == expected:
        return None
    names: dict[str, Variant] = {}
    for v in variants:
        if all(g in v.outputs(args) for g, args in zip(got, cases)):
            names.setdefault(v.name, v)
    return next(iter(names.values())) if len(names) == 1 else None


def returns_ok(function: str, out) -> bool:
    if function in ("extract_answer", "normalize_number"):
        return out is None or type(out) is str
    return type(out) is float and out in (0.0, 1.0)


RETURNS = {"extract_answer": "a str or None", "normalize_number": "a str or None",
           "correctness_reward": "a float, 1.0 or 0.0", "format_reward": "a float, 1.0 or 0.0"}


def check(impl, function: str, cases: list[tuple], expected: list, why: list[str], what: str, variants=(), first=None):
    """``function`` on every case against the expected values; the failure shows the first wrong
    cases and names the mistake that explains them all. ``first(wrong)``: the learner's function to
    fix first on the wrong cases (their indices), if another than ``function``: then no name is given."""
    got = []
    for k, args in enumerate(cases):
        try:
            out = call(impl, function, *args)
        except LearnerError as e:
            elsewhere = first([k]) if first is not None and e.kind == "raised" else ""
            if not elsewhere:
                raise
            error = LearnerError(f"{e.message}\n{elsewhere}", e.details)
            error.kind = e.kind
            raise error from None
        if not returns_ok(function, out):
            raise Mismatch(f"{function}({', '.join(shown(a) for a in args)}) returned {type(out).__name__} "
                           f"{shown(out, 80)}; expected {RETURNS[function]}")
        got.append(out)
    wrong = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    if not wrong:
        return
    lines = [f"{function} is wrong on {len(wrong)} of {len(cases)} {what}; the first {min(3, len(wrong))}:"]
    for i in wrong[:3]:
        lines.append(f"  {function}({', '.join(shown(a) for a in cases[i])})\n    returned {got[i]!r}, expected "
                     f"{expected[i]!r}" + (f" ({why[i]})" if why[i] else ""))
    elsewhere = first(wrong) if first is not None else ""
    if elsewhere:
        lines.append(elsewhere)
    named = None if elsewhere else explaining(cases, got, expected, variants)
    if named is not None:
        lines.append(f"This looks like: {named.name}. {named.fix}")
    raise Mismatch("\n".join(lines))


# ------------------------------------------------------------------------------------ fresh cases

WORDS = ("so", "the", "total", "is", "we", "add", "then", "each", "box", "of", "apples", "costs", "which", "gives",
         "check", "again", "wait", "first", "guess", "was", "hmm", "times", "minus", "plus", "left", "answer",
         "equals", "carry", "sum", "half", "rate", "per", "hour", "train", "km")
LATEX = ("\\frac{{{a}}}{{{b}}}", "{a}{{,}}{b:03d}", "\\text{{{a} apples}}", "{{{a}}}", "\\sqrt{{{a}}}",
         "\\dfrac{{{a}}}{{\\sqrt{{{b}}}}}")


def pick(gen, options):
    return options[n(gen, 0, len(options) - 1)]


def sentence(gen) -> str:
    """Reasoning text: never a marker, never a '{' or '}'."""
    words = [pick(gen, WORDS) for _ in range(n(gen, 3, 9))]
    if n(gen, 0, 1):
        words.insert(n(gen, 0, len(words)), str(n(gen, 0, 999)))
    text = " ".join(words)
    return text[0].upper() + text[1:] + pick(gen, (".", ",", "", "?", "!"))


def distractor(gen) -> str:
    """A line that looks like an answer and is not one."""
    num = write(gen, draw_value(gen))
    return pick(gen, (f"{sentence(gen)} My first Answer: {num} was a guess.", f"answer: {num}", f" Answer: {num}",
                      f"ANSWER: {num}", f"{sentence(gen)} \\boxed {{{num}}}", f"Not \\fbox{{{num}}} either."))


def draw_value(gen) -> tuple[bool, int, str]:
    """A number's parts: negative, the integer part, the decimal digits (maybe ending in zeros)."""
    size = pick(gen, (0, 1, 1, 2, 3, 4, 5, 7))
    whole = 0 if size == 0 else n(gen, 10 ** (size - 1), 10**size - 1)
    decimals = "".join(str(n(gen, 0, 9)) for _ in range(pick(gen, (0, 0, 0, 1, 2, 3))))
    return n(gen, 0, 2) == 0, whole, decimals


def canonical(value: tuple[bool, int, str]) -> str:
    """The canonical form, from the parts (never from a text)."""
    negative, whole, decimals = value
    kept = decimals.rstrip("0")
    number = str(whole) + ("." + kept if kept else "")
    return "-" + number if negative and number != "0" else number


def write(gen, value: tuple[bool, int, str], spaces: bool = False, sign: str | None = None, style: int | None = None,
          zeros: int | None = None, period: bool | None = None) -> str:
    """The number written one of the many ways the contract reads; ``sign`` (what comes first),
    ``style`` (0: thousands separators, 1: leading zeros, 2: nothing before the point, else plain),
    ``zeros`` (added after the decimals) and ``period`` (a trailing one) force a way."""
    negative, whole, decimals = value
    if sign is None:
        sign = pick(gen, ("-", "-", MINUS)) if negative else pick(gen, ("", "", "", "+"))
    style = n(gen, 0, 4) if style is None else style
    if style == 0 and whole >= 1000:
        body = f"{whole:,}"
    elif style == 1:
        body = "0" * n(gen, 1, 3) + str(whole)
    elif style == 2 and whole == 0 and decimals:
        body = ""
    else:
        body = str(whole)
    zeros = (n(gen, 0, 2) if decimals or n(gen, 0, 3) == 0 else -1) if zeros is None else zeros
    if decimals or zeros >= 0:
        body += "." + (decimals or "0") + "0" * max(zeros, 0)
    if (n(gen, 0, 3) == 0) if period is None else period:
        body += "."
    text = sign + ("$" if n(gen, 0, 5) == 0 else "") + body
    if spaces and n(gen, 0, 2) == 0:
        text = pick(gen, (" ", "  ", "\t")) + text + pick(gen, ("", " ", "\n"))
    return text


def fresh_numbers(gen) -> list[tuple[str, str]]:
    """(text, canonical form): one number of each way of writing that a known mistake gets wrong,
    then numbers written every way."""
    drawn = []
    for force in ({"style": 0}, {"style": 1}, {"sign": MINUS}, {"period": True}, {"zeros": 2}, {"sign": "+"}):
        value = draw_value(gen)
        if "style" in force or "zeros" in force:
            value = (value[0], max(value[1], n(gen, 1000, 99999)) if force.get("style") == 0 else value[1], value[2])
        if "sign" in force:
            value = (force["sign"] != "+", value[1] or n(gen, 1, 99), value[2])
        drawn.append((write(gen, value, **force), canonical(value)))
    for _ in range(n(gen, 20, 26)):
        value = draw_value(gen)
        drawn.append((write(gen, value, spaces=True), canonical(value)))
    return drawn


def non_number(gen, kind: int | None = None) -> str:
    """A text the contract reads as no number (``kind``: which way, 0 and 1 a comma that does not
    group three digits)."""
    digits = str(n(gen, 1000, 9_999_999))
    at = pick(gen, [p for p in range(1, len(digits)) if len(digits) - p != 3])
    num = write(gen, draw_value(gen))
    ways = (
        digits[:at] + "," + digits[at:],  # a comma that does not group three digits
        f"{n(gen, 1000, 99999)},{n(gen, 100, 999)}",  # more than three digits before the comma
        f"{num} apples", f"{num}%", f"{pick(gen, ('-', '+', MINUS))}{pick(gen, ('-', '+'))}{n(gen, 0, 99)}",
        f"{n(gen, 0, 99)}.{n(gen, 0, 99)}.{n(gen, 0, 9)}", f"{n(gen, 0, 99)}..", f"{n(gen, 1, 9)}e{n(gen, 1, 9)}",
        f"{n(gen, 1, 9)}/{n(gen, 2, 9)}", f"{n(gen, 1, 99)} {n(gen, 100, 999)}",
        pick(gen, ("five", "twelve", "", "$", "-")),
    )
    return pick(gen, ways) if kind is None else ways[kind]


def box_content(gen) -> str:
    if n(gen, 0, 2) == 0:
        return pick(gen, LATEX).format(a=n(gen, 1, 99), b=n(gen, 1, 999))
    return write(gen, draw_value(gen)) if n(gen, 0, 4) else non_number(gen)


def build(gen, contents: list[str], unclosed: str | None = None, forms: list[int] | None = None,
          tail: list[str] | None = None) -> tuple[str, str | None]:
    """A completion whose markers hold ``contents`` in order, among reasoning and distractors (and
    the lines ``tail`` after them); with ``unclosed``, a box never closed at the end. ``forms``: each
    marker's (0: a box, 1: an Answer line holding a box, 2: an Answer line; random by default).
    Returns the completion and its final answer, by construction."""
    lines, final = [], None
    for k, content in enumerate(contents):
        lines += [sentence(gen) if n(gen, 0, 3) else distractor(gen) for _ in range(n(gen, 0, 2))]
        form = n(gen, 0, 3) if forms is None else forms[k]
        if form == 0 or "\n" in content or "{" in content:  # a box, on a line of its own or in a sentence
            before, after = pick(gen, ("", sentence(gen) + " ")), pick(gen, ("", ".", " so we stop."))
            lines.append(before + BOX + content + "}" + after)
            final = content
        elif form == 1:  # an Answer line holding a box: the box starts later
            lines.append(f"{ANSWER} {BOX}{content}}}")
            final = content
        else:
            written = ANSWER + pick(gen, ("", " ", "  ", "\t")) + content + pick(gen, ("", " ", "  "))
            lines.append(written)
            final = written[len(ANSWER):].strip()
    lines += [sentence(gen) if n(gen, 0, 2) else distractor(gen) for _ in range(n(gen, 0, 2))] + (tail or [])
    if unclosed is not None:
        lines.append(pick(gen, ("", sentence(gen) + " ")) + BOX + unclosed)
        final = None
    if not contents and unclosed is None:
        lines = lines or [sentence(gen)]
    return "\n".join(lines) + pick(gen, ("", "\n", "\n\n")), final


def fresh_completions(gen) -> list[tuple[str, str | None]]:
    """(completion, final answer): one of each kind that a known mistake gets wrong (several answers,
    a box with nested braces last, a box then an Answer line, 'Answer:' inside a line after the
    final answer, a box never closed at the end), then completions of every kind."""
    number = lambda: write(gen, draw_value(gen))  # noqa: E731
    nested = lambda: pick(gen, LATEX[:2] + LATEX[4:]).format(a=n(gen, 1, 99), b=n(gen, 1, 999))  # noqa: E731
    drawn = [
        build(gen, [number() for _ in range(n(gen, 2, 4))]),
        build(gen, [number() for _ in range(n(gen, 0, 2))] + [nested()]),
        build(gen, [number(), number()], forms=[0, 2]),
        build(gen, [number() for _ in range(n(gen, 1, 3))],
              tail=[f"{sentence(gen)} So the Answer: {number()} stands."]),
        build(gen, [number() for _ in range(n(gen, 1, 2))], unclosed=pick(gen, (
            f"\\frac{{{n(gen, 1, 9)}}}{{{n(gen, 1, 9)}", f"\\sqrt{{{n(gen, 1, 99)}"))),
    ]
    for _ in range(n(gen, 10, 14)):
        contents = [box_content(gen) if n(gen, 0, 2) == 0 else number() for _ in range(n(gen, 0, 4))]
        unclosed = None
        if n(gen, 0, 5) == 0:
            unclosed = pick(gen, (number(), f"\\frac{{{n(gen, 1, 9)}}}{{{n(gen, 1, 9)}", f"\\sqrt{{{n(gen, 1, 99)}"))
        drawn.append(build(gen, contents, unclosed))
    return [drawn[i] for i in torch.randperm(len(drawn), generator=gen).tolist()]


FORMAT_KINDS = ("format", "after", "twice", "alone", "no number", "box", "none")


def fresh_format_case(gen, kind: str | None = None) -> tuple[str, float, str]:
    """A completion of a ``kind`` (random by default), its format reward by construction, and why."""
    reasoning = [sentence(gen) if n(gen, 0, 3) else distractor(gen) for _ in range(n(gen, 1, 4))]
    blank = lambda: pick(gen, ("", "  ", "\t"))  # noqa: E731
    answer = f"{ANSWER}{pick(gen, (' ', '  ', ''))}{write(gen, draw_value(gen))}"
    kind = pick(gen, FORMAT_KINDS[:1] * 2 + FORMAT_KINDS) if kind is None else kind
    if kind == "format":
        lines, want, why = reasoning + [answer] + [blank() for _ in range(n(gen, 0, 2))], 1.0, "in the format"
    elif kind == "after":
        lines, want, why = reasoning + [answer] + [blank(), sentence(gen)][n(gen, 0, 1):], 0.0, \
            "the Answer line is not the last non-empty line"
    elif kind == "twice":
        earlier = f"{ANSWER} {write(gen, draw_value(gen))}"
        lines, want, why = reasoning[:1] + [earlier] + reasoning[1:] + [answer], 0.0, "two Answer lines"
    elif kind == "alone":
        lines, want, why = [blank() for _ in range(n(gen, 0, 2))] + [answer], 0.0, "no reasoning before the Answer line"
    elif kind == "no number":
        lines, want, why = reasoning + [f"{ANSWER} {non_number(gen)}"], 0.0, "the Answer line's text is no number"
    elif kind == "box":
        lines, want, why = reasoning + [pick(gen, ("", f"{ANSWER} ")) + BOX + write(gen, draw_value(gen)) + "}"], 0.0, \
            "a box is not the format"
    else:
        lines, want, why = reasoning, 0.0, "no Answer line"
    return pick(gen, ("\n", "\n", "\n", "\r\n")).join(lines), want, why


def fresh_correctness_case(gen) -> tuple[str, str, float, str]:
    """A completion, a reference answer, the correctness reward by construction, and why."""
    value = draw_value(gen)
    other = draw_value(gen)
    while canonical(other) == canonical(value):
        other = draw_value(gen)
    right, wrong = write(gen, value), write(gen, other)
    kind = pick(gen, ("right", "right", "wrong", "corrected", "changed", "no number", "none", "cut off"))
    contents, unclosed, want = {
        "right": ([right], None, 1.0), "wrong": ([wrong], None, 0.0), "corrected": ([wrong, right], None, 1.0),
        "changed": ([right, wrong], None, 0.0), "no number": ([non_number(gen)], None, 0.0), "none": ([], None, 0.0),
        "cut off": ([right], write(gen, value), 0.0),
    }[kind]
    text, _ = build(gen, contents, unclosed)
    why = {1.0: f"the final answer is {canonical(value)}", 0.0: {
        "wrong": f"the final answer is {canonical(other)}", "changed": f"the final answer is {canonical(other)}",
        "no number": "the final answer is no number", "none": "no final answer",
        "cut off": "the last box is never closed",
    }.get(kind, "")}[want]
    return text, write(gen, value), want, why


# ------------------------------------------------------------------------------------ extract_answer


def test_extract_answer_on_tricky_completions(impl, gen):
    cases = [(text,) for text, _, _ in EXTRACT_TABLE]
    check(impl, "extract_answer", cases, [want for _, want, _ in EXTRACT_TABLE], [why for _, _, why in EXTRACT_TABLE],
          "tricky completions", EXTRACT_MISTAKES)


def test_extract_answer_on_fresh_completions(impl, gen):
    drawn = fresh_completions(gen)
    check(impl, "extract_answer", [(text,) for text, _ in drawn], [final for _, final in drawn],
          ["" for _ in drawn], "fresh completions", EXTRACT_MISTAKES)


# ------------------------------------------------------------------------------------ normalize_number


def test_normalize_number_on_tricky_numbers(impl, gen):
    check(impl, "normalize_number", [(text,) for text, _, _ in NORMALIZE_TABLE],
          [want for _, want, _ in NORMALIZE_TABLE], [why for _, _, why in NORMALIZE_TABLE], "tricky numbers",
          NORMALIZE_MISTAKES)


def test_normalize_number_on_fresh_numbers(impl, gen):
    cases, expected = [], []
    for text, form in fresh_numbers(gen):
        cases.append((text,))
        expected.append(form)
    for k in [0, 1] + [None] * n(gen, 6, 10):
        cases.append((non_number(gen, k),))
        expected.append(None)
    order = torch.randperm(len(cases), generator=gen).tolist()
    check(impl, "normalize_number", [cases[i] for i in order], [expected[i] for i in order], ["" for _ in order],
          "fresh numbers", NORMALIZE_MISTAKES)


# ------------------------------------------------------------------------------------ correctness_reward


def fix_first(impl, pairs) -> str:
    """Where the learner's own ``extract_answer`` or ``normalize_number`` differs from the contract on
    ``pairs`` ((function, text), the texts of the wrong cases): the function to fix first, or ""."""
    for function, text in pairs:
        want = find_answer(text) if function == "extract_answer" else read_number(text)
        try:
            got = call(impl, function, text)
        except (LearnerError, NotStarted):  # not written, or it raises: the check's own message says enough
            return ""
        if got != want:
            return (f"Your {function} gives {shown(got, 80)} for {shown(text, 160)}, where the contract gives "
                    f"{shown(want, 80)}: fix {function} first (its own checks say more).")
    return ""


def parts_of_correctness(cases, wrong):
    for completion, answer in (cases[i] for i in wrong[:10]):
        yield "extract_answer", completion
        if find_answer(completion) is not None:
            yield "normalize_number", find_answer(completion)
        yield "normalize_number", answer


def test_correctness_reward_on_tricky_and_fresh_completions(impl, gen):
    drawn = [fresh_correctness_case(gen) for _ in range(n(gen, 10, 14))]
    table = [(c, a, want, why) for c, a, want, why in CORRECTNESS_TABLE] + drawn
    cases = [(c, a) for c, a, _, _ in table]
    check(impl, "correctness_reward", cases, [want for _, _, want, _ in table], [why for _, _, _, why in table],
          "completions", CORRECTNESS_MISTAKES, first=lambda wrong: fix_first(impl, parts_of_correctness(cases, wrong)))


def test_correctness_reward_refuses_a_reference_that_is_not_a_number(impl, gen):
    bad = pick(gen, ("twelve", f"{n(gen, 1, 99)} apples", f"{n(gen, 1, 99)}%", f"{n(gen, 1, 9)},{n(gen, 10, 99)}",
                     f"{n(gen, 1, 9)}/{n(gen, 2, 9)}"))
    completion = f"{sentence(gen)}\n{ANSWER} {n(gen, 0, 99)}"
    expect_value_error(lambda: impl.call("rewards.correctness_reward", completion, bad, returns="data"),
                       f"correctness_reward({completion!r}, {bad!r})", needles=(bad,),
                       why=": a reference answer that normalize_number cannot read is a bug in the data; say which "
                       "answer")


# ------------------------------------------------------------------------------------ format_reward


def answer_texts(cases, wrong):
    """The text after 'Answer:' of each Answer line of the wrong cases: what format_reward asks
    normalize_number about."""
    for (completion,) in (cases[i] for i in wrong[:10]):
        for line in completion.split("\n"):
            if line.startswith(ANSWER) and line.strip():
                yield "normalize_number", line[len(ANSWER):]


def test_format_reward_on_tricky_completions(impl, gen):
    cases = [(text,) for text, _, _ in FORMAT_TABLE]
    check(impl, "format_reward", cases, [want for _, want, _ in FORMAT_TABLE], [why for _, _, why in FORMAT_TABLE],
          "tricky completions", FORMAT_MISTAKES, first=lambda wrong: fix_first(impl, answer_texts(cases, wrong)))


def test_format_reward_on_fresh_completions(impl, gen):
    drawn = [fresh_format_case(gen, kind) for kind in FORMAT_KINDS]
    drawn += [fresh_format_case(gen) for _ in range(n(gen, 9, 14))]
    drawn = [drawn[i] for i in torch.randperm(len(drawn), generator=gen).tolist()]
    cases = [(text,) for text, _, _ in drawn]
    check(impl, "format_reward", cases, [want for _, want, _ in drawn], [why for _, _, why in drawn],
          "fresh completions", FORMAT_MISTAKES, first=lambda wrong: fix_first(impl, answer_texts(cases, wrong)))


# ------------------------------------------------------------------------------------ rewards


def test_rewards_is_a_float32_tensor_of_correctness_and_format(impl, gen):
    """Plain completions (one marker, plain integers), so that only the batch is checked here."""
    value = [n(gen, 2, 999) for _ in range(n(gen, 5, 9))]
    kinds = [(1, 1), (0, 1), (1, 0), (0, 0)] + [(n(gen, 0, 1), n(gen, 0, 1)) for _ in range(len(value) - 4)]
    kinds = [kinds[i] for i in torch.randperm(len(kinds), generator=gen).tolist()]
    completions, answers = [], []
    for v, (right, formatted) in zip(value, kinds):
        said = v if right else v + n(gen, 1, 9)
        reasoning = sentence(gen)
        completions.append(f"{reasoning}\n{ANSWER} {said}" if formatted else f"{reasoning} So it is \\boxed{{{said}}}.")
        answers.append(str(v))
    got = impl.call("rewards.rewards", completions, answers).out
    want = torch.tensor(kinds, dtype=torch.float32)
    what = f"rewards(<{len(completions)} completions>, <their answers>)"
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{what} returned {type(got).__name__}; expected a torch.Tensor of shape "
                       f"({len(completions)}, 2)")
    assert_close(got, want, what, oracle="one row [correctness_reward, format_reward] per completion",
                 mistakes=[Mistake("the columns swapped", "Row i is [correctness_reward(completions[i], answers[i]), "
                                   "format_reward(completions[i])]: the correctness first.", want.flip(-1))])
    empty = impl.call("rewards.rewards", [], []).out
    if not isinstance(empty, torch.Tensor) or tuple(empty.shape) != (0, 2) or empty.dtype != torch.float32:
        said = (f"shape {tuple(empty.shape)}, dtype {empty.dtype}" if isinstance(empty, torch.Tensor)
                else type(empty).__name__)
        raise Mismatch(f"rewards([], []) returned {said}; expected an empty float32 tensor of shape (0, 2) "
                       "(torch.tensor([]) has shape (0,): .reshape(0, 2))")
    k = n(gen, 2, len(completions) - 1)
    expect_value_error(lambda: impl.call("rewards.rewards", completions, answers[:k]),
                       f"rewards(<{len(completions)} completions>, <{k} answers>)", needles=(len(completions), k),
                       why=": one answer for each completion; say both lengths")
