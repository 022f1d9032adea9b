r"""Exercise 36: verifiable rewards, the first exercise of the reasoning track.

Reinforcement learning on math problems (DeepSeekMath's GRPO, DeepSeek-R1, Raschka's "Build a
Reasoning Model (From Scratch)", Stanford CS336's assignment 5) needs no learned reward model: a
problem's answer is known, so a program can check a completion's. The model writes its reasoning,
then its answer in an agreed form, and the rewards are read off the text::

    The train covers 120 km in 1.5 hours, so its speed is 120 / 1.5 = 80 km/h.
    Answer: 80

``extract_answer`` finds a completion's final answer (its last ``\boxed{...}`` or ``Answer:``
line); ``normalize_number`` writes a number in one canonical form, so that ``1,234``, ``1234.``
and ``+1234.00`` are the same number; ``correctness_reward`` is 1.0 for the right number,
``format_reward`` 1.0 for a completion in the format (whatever its number), and ``rewards`` puts
a batch of them in a tensor, what the track's next exercises (rollouts, GRPO) take.

The numbers are those grade-school problems answer with (GSM8K): integers and decimals, signed,
perhaps with thousands separators or a dollar sign. Fractions, expressions and units are no
numbers here: an answer written with them gets no correctness reward.
"""

import re

import torch

BOX = "\\boxed{"  # where a box starts; its content runs to the brace that closes this one
ANSWER = "Answer:"  # what an Answer line starts with


def extract_answer(completion: str) -> str | None:
    r"""The final answer of a completion: the content of its last box or the text of its last
    Answer line, whichever starts later in the text.

    Two kinds of marker give an answer:

    - A box: the characters ``\boxed{`` (exactly those: ``\boxed {`` and ``\fbox{`` are text).
      Its content runs to the ``}`` that closes its own ``{``, braces counted: each ``{`` after
      it opens one more and each ``}`` closes one, so ``\boxed{\frac{1}{2}}`` holds
      ``\frac{1}{2}``. A box may span lines.
    - An Answer line: a line whose first characters are ``Answer:`` (that case, nothing before it
      on the line, not even a space; the lines are those of ``completion.split("\n")``). Its answer
      is the rest of that line, stripped of whitespace (``str.strip()``; it may be empty).
      ``Answer:`` anywhere else in a line is text.

    The marker that starts last gives the answer (where it starts: the index of its first
    character). Earlier answers (first tries, corrections) do not count. A box on an Answer line
    starts after the line does, so ``"Answer: \boxed{7}"`` gives ``"7"``; in
    ``\boxed{\boxed{3}}`` the inner box starts last and gives ``"3"``.

    Args:
        completion: a model's text, any string.

    Returns:
        The answer as written (a ``str``, not normalised: ``normalize_number`` does that), or
        ``None`` when the completion has no marker, or when the marker that starts last is a box
        never closed (the text ends before its ``}``: the completion was cut off inside its
        answer, and an earlier answer was not its final one).
    """
    raise NotImplementedError("exercise 36 (rewards), extract_answer: the marker that starts last gives the answer")


def normalize_number(text: str) -> str | None:
    r"""The canonical form of a number written as text, or ``None`` if the text is no number.

    The text is read in this order:

    1. Whitespace at both ends is stripped (``str.strip()``). Then one trailing period, the full
       stop after a sentence's last number, is dropped: ``"42."`` is 42, ``"42.."`` no number.
    2. The unicode minus sign (U+2212, ``"−"``) is read as ``"-"``. One sign may come first:
       ``"-"`` (negative) or ``"+"`` (dropped).
    3. One ``"$"`` may follow, right before the digits: ``"$18"`` is 18 and ``"-$18"`` is -18
       (``"$-18"`` is no number).
    4. The rest is the number: an integer part, then optionally a decimal point and at least one
       digit (digits are ``0``-``9`` only). The integer part is digits (none at all when a
       decimal part follows: ``".5"`` is 0.5), or digits grouped by three with commas as
       thousands separators: one to three digits, then one or more groups of a comma and
       exactly three digits (``"1,234,567"``; but ``"1,23"``, ``"1234,567"``, ``",123"`` and
       ``"1,234,56"`` are no numbers). Anything else (a second sign or point, a space inside, a
       letter, a ``"%"``, an exponent, ``"1/2"``) makes the text no number.

    A percentage is no number here (``"50%"`` gives None): 50% is 50 to some readers and 0.5 to
    others, and the format asks for a number.

    The canonical form: the commas dropped; the integer part without leading zeros (``"007"`` is
    ``"7"``) but one ``"0"`` before the point (``".5"`` and ``"00.50"`` are ``"0.5"``); the
    decimal part without trailing zeros, and without its point when no digit is left (``"3.50"``
    is ``"3.5"``, ``"3.0"`` is ``"3"``); ``"-"`` in front of a negative number that is not zero
    (``"-0"`` and ``"−0.00"`` are ``"0"``). Two texts are the same number exactly when their
    canonical forms are equal strings.

    Args:
        text: any string (an extracted answer, a dataset's answer).

    Returns:
        The canonical form, a ``str`` such as ``"-1234.5"``, or ``None``.
    """
    raise NotImplementedError("exercise 36 (rewards), normalize_number: read sign, $ and digits; write canonical form")


def correctness_reward(completion: str, answer: str) -> float:
    r"""1.0 when the completion's final answer is the right number, else 0.0.

    1.0 when ``normalize_number(extract_answer(completion)) == normalize_number(answer)``; 0.0
    when they differ, when the completion has no final answer (``extract_answer`` gives None), and
    when its answer is no number (``\frac{1}{2}``, ``12 apples``, ``50%``).

    Args:
        completion: a model's text.
        answer: the problem's reference answer, a number as text (``"1234"``, ``"-3.5"``; any form
            that ``normalize_number`` reads).

    Returns:
        A ``float``: 1.0 or 0.0.

    Raises:
        ValueError: when ``normalize_number(answer)`` is None: a reference that cannot be compared
            is a bug in the data, to be seen, not a reward of 0. The message gives the answer.
    """
    raise NotImplementedError("exercise 36 (rewards), correctness_reward: refuse a bad reference; compare normalised")


def format_reward(completion: str) -> float:
    r"""1.0 when the completion is written in the format asked for, else 0.0. Whether its number is
    right does not matter here: a wrong number in the format gets 1.0.

    The format: some reasoning, then one Answer line with a number, and nothing after it. Exactly,
    with the lines of ``completion.split("\n")``, a line being empty when it holds only whitespace,
    and an Answer line as in ``extract_answer`` (its first characters are ``Answer:``):

    - the last non-empty line is an Answer line, and its text after ``Answer:`` is a number
      (``normalize_number`` does not give None for it);
    - no other line is an Answer line (``"Answer:"`` with nothing after it is one too);
    - at least one non-empty line comes before it: the reasoning.

    Empty lines (before the Answer line or after it), ``Answer:`` inside a line and boxes before the
    Answer line change nothing. A box is not the format: ``\boxed{5}`` as the last line gets 0.0,
    and so does ``Answer: \boxed{5}``. When the format reward is 1.0, ``extract_answer`` gives the
    Answer line's text.

    Returns:
        A ``float``: 1.0 or 0.0.
    """
    raise NotImplementedError("exercise 36 (rewards), format_reward: reasoning, then one Answer line, last, a number")


def rewards(completions: list[str], answers: list[str]) -> torch.Tensor:
    """The rewards of a batch of completions, as reinforcement learning takes them.

    Args:
        completions: N model texts.
        answers: their N reference answers, as ``correctness_reward`` takes them.

    Returns:
        A ``(N, 2)`` ``torch.float32`` tensor (on the CPU) whose row ``i`` is
        ``[correctness_reward(completions[i], answers[i]), format_reward(completions[i])]``: the
        correctness first. Empty lists give shape ``(0, 2)``.

    Raises:
        ValueError: when the two lists differ in length (the message gives both lengths), and
            as ``correctness_reward`` does.
    """
    raise NotImplementedError("exercise 36 (rewards), rewards: check lengths; float32 (N, 2) of [correctness, format]")
