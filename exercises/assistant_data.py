"""An instruction data set every Python installation can make, offline (glue, not an exercise).

``nox -s finetune`` turns the model of ``nox -s train`` into a small assistant that answers
questions about Python. Its examples are made here from text CPython ships:

- the sections of ``pydoc_data.topics`` (the language reference that ``help()`` shows, and the text
  ``nox -s train`` pretrains on): "Explain augmented assignment statements in one sentence." is
  answered by the section's first sentence;
- the methods that those topics document (``str.capitalize()``, ``list.sort(...)``, ...): "What
  does `str.capitalize()` do?" is answered by the first sentence of its entry;
- the docstrings of some pure-Python and built-in standard-library modules (``math.sqrt``,
  ``textwrap.dedent``, ...): "What does `math.sqrt()` do?", by the docstring's first sentence.

Each example has a *source*: the topic it comes from, or the module. The split into train,
validation and test goes by source, never by example, so a test question comes from a topic or a
module the model was never fine-tuned on: ``crc32(source) % 10`` is 0 for test, 1 for
validation, anything else for train (a fixed rule: the same split on every machine and Python).

Preference pairs for DPO (``preference_pairs``) keep each example's answer as the chosen response.
The rejected one is, with ``kind="other"``, the answer of another question of the same split from
another source: fluent, on topic for the data set, and plainly wrong. With ``kind="hard"`` it is a
near miss: the answer of another question of the same module or topic (the name swapped: what
``math.floor()`` does, for ``math.sqrt()``), the right answer cut off halfway, or the right answer
with one of its numbers changed.

``token_f1`` is the metric: SQuAD's token-level F1 between a response and the reference answer
(lowercase, punctuation and the articles a/an/the dropped, words compared as multisets).
"""

from __future__ import annotations

import collections
import importlib
import inspect
import random
import re
import string
import zlib

# Modules whose public functions, classes and methods have docstrings worth asking about. Only
# modules present on every CPython 3.11+ (no Tk, no optional C libraries).
DOC_MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "cmath", "collections", "colorsys", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "enum", "filecmp", "fnmatch", "fractions", "functools",
    "glob", "gzip", "hashlib", "heapq", "hmac", "html", "inspect", "io", "ipaddress", "itertools", "json",
    "keyword", "linecache", "locale", "math", "mimetypes", "operator", "os", "os.path", "pathlib", "pickle",
    "platform", "pprint", "queue", "random", "re", "secrets", "shlex", "shutil", "statistics", "string",
    "struct", "tempfile", "textwrap", "threading", "time", "timeit", "tokenize", "traceback", "types",
    "typing", "unicodedata", "urllib.parse", "uuid", "warnings", "weakref", "zipfile", "zlib",
)
MAX_ANSWER_CHARS = 160  # a first sentence longer than this is cut at a word and closed with a period
MAX_PER_SOURCE = 30  # so that no topic or module (os has 160 documented names) outweighs the others
SPLITS = ("train", "validation", "test")


def split_of(source: str) -> str:
    """``"test"``, ``"validation"`` or ``"train"`` for every example of ``source``, by ``crc32 % 10``."""
    bucket = zlib.crc32(source.encode("utf-8")) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def first_sentence(text: str) -> str:
    """The first sentence of a paragraph, on one line: up to the first ". " (or the end), at most
    ``MAX_ANSWER_CHARS`` characters (cut at a word and closed with a period)."""
    text = " ".join(text.split())
    match = re.search(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)[.!?](\s|$)", text)
    sentence = text[: match.start() + 1] if match else text
    if len(sentence) > MAX_ANSWER_CHARS:
        sentence = sentence[:MAX_ANSWER_CHARS].rsplit(" ", 1)[0].rstrip(",;:") + "."
    return sentence


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def _prose(paragraph: str) -> bool:
    """A paragraph of running text: not indented (grammar, code, tables) and starting with a capital."""
    lines = paragraph.splitlines()
    return bool(lines) and not lines[0].startswith(" ") and lines[0][:1].isupper() and not paragraph.lstrip().startswith(("Note", "Changed", "New in", "See also", "Deprecated"))


def _section_question(title: str) -> str:
    title = title.strip().rstrip(":")
    if title.startswith("The "):
        title = "the " + title[4:]
    return f"Explain {title} in one sentence."


def topic_examples() -> list[dict]:
    """Examples from ``pydoc_data.topics``: each titled section's first sentence, and each method
    entry's (an unindented ``name.method(...)`` line followed by its indented description)."""
    from pydoc_data.topics import topics

    examples, seen = [], set()
    for key in sorted(topics):
        text = topics[key]
        # titled sections: a line underlined with one repeated punctuation character
        parts = re.split(r"\n(.+)\n([*=\-~^])\2{3,}\n", "\n" + text)
        # parts: [before, title1, char1, body1, title2, char2, body2, ...]
        for i in range(1, len(parts) - 2, 3):
            title, body = parts[i].strip(), parts[i + 2]
            prose = [p for p in _paragraphs(body) if _prose(p)]
            if not prose or title in seen:
                continue
            answer = first_sentence(prose[0])
            if len(answer.split()) < 4:
                continue
            seen.add(title)
            examples.append({"instruction": _section_question(title), "input": "", "output": answer, "source": f"topic:{key}"})
        # method entries: "str.capitalize()" then a blank line and an indented description
        for name, desc in re.findall(r"\n([a-z_]+\.[a-z_]+\(.*\))\n\n((?:   .+\n)+)", "\n" + text):
            answer = first_sentence(desc)
            if name in seen or len(answer.split()) < 4:
                continue
            seen.add(name)
            examples.append({"instruction": f"What does `{name}` do?", "input": "", "output": answer, "source": f"topic:{key}"})
    return examples


def _public_members(module) -> list[tuple[str, object]]:
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    members = []
    for name in sorted(set(names)):
        obj = getattr(module, name, None)
        if inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.isclass(obj):
            members.append((name, obj))
    return members


def docstring_examples(modules: tuple[str, ...] = DOC_MODULES) -> list[dict]:
    """Examples from standard-library docstrings: "What does `module.name()` do?" for each public
    function and class of each module (and each public method of those classes defined there),
    answered by the docstring's first sentence. Docstrings that are missing, start with a call
    signature, or are shorter than four words are skipped, and so is a name seen before."""
    examples, seen = [], set()
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        items = []
        for name, obj in _public_members(module):
            items.append((f"{module_name}.{name}()", obj))
            if inspect.isclass(obj) and getattr(obj, "__module__", None) == module.__name__:
                for meth, fn in sorted(vars(obj).items()):
                    if not meth.startswith("_") and (inspect.isfunction(fn) or inspect.ismethoddescriptor(fn)):
                        items.append((f"{module_name}.{name}.{meth}()", fn))
        for question_name, obj in items:
            doc = inspect.getdoc(obj) if getattr(obj, "__doc__", None) else None
            if not doc or doc.split("\n", 1)[0].rstrip().endswith(")") or "(" in doc.split(" ", 1)[0]:
                continue
            answer = first_sentence(_paragraphs(doc)[0])
            key = (question_name, answer)
            if len(answer.split()) < 4 or not answer[:1].isupper() or key in seen:
                continue
            seen.add(key)
            examples.append({"instruction": f"What does `{question_name}` do?", "input": "", "output": answer,
                             "source": f"module:{module_name}"})
    return examples


def make_dataset(seed: int = 0) -> dict[str, list[dict]]:
    """Every example, split by source into ``{"train": [...], "validation": [...], "test": [...]}``,
    at most ``MAX_PER_SOURCE`` per source (its first ones); each list shuffled with ``seed`` (the
    split itself does not depend on it)."""
    splits = {name: [] for name in SPLITS}
    per_source = collections.Counter()
    for example in topic_examples() + docstring_examples():
        per_source[example["source"]] += 1
        if per_source[example["source"]] <= MAX_PER_SOURCE:  # each source's first ones, in its own order
            splits[split_of(example["source"])].append(example)
    rng = random.Random(seed)
    for examples in splits.values():
        rng.shuffle(examples)
    return splits


# The part of the language reference each topic of pydoc_data.topics belongs to: the classes of
# the classification demo (`nox -s finetune -- --classify`).
TOPIC_CLASSES = {
    "statements": ("assert", "assignment", "async", "augassign", "break", "class", "compound", "continue", "del", "else",
                   "for", "function", "global", "if", "import", "nonlocal", "pass", "raise", "return", "try", "while",
                   "with", "yield"),
    "expressions": ("atom-identifiers", "atom-literals", "attribute-references", "await", "binary", "bitwise", "booleans",
                    "calls", "comparisons", "conversions", "dict", "exprlists", "floating", "formatstrings", "identifiers",
                    "imaginary", "in", "integers", "lambda", "lists", "numbers", "operator-summary", "power", "shifting",
                    "slicings", "strings", "subscriptions", "unary"),
    "data model and types": ("attribute-access", "bltin-code-objects", "bltin-ellipsis-object", "bltin-null-object",
                             "bltin-type-objects", "callable-types", "context-managers", "customization", "id-classes",
                             "numeric-types", "objects", "sequence-types", "specialattrs", "specialnames", "string-methods",
                             "truth", "types", "typesfunctions", "typesmapping", "typesmethods", "typesmodules", "typesseq",
                             "typesseq-mutable"),
    "execution model": ("debugger", "dynamic-features", "exceptions", "execmodel", "naming"),
}


def classification_data(min_words: int = 12) -> tuple[list[str], dict[str, list[dict]]]:
    """The classification demo's data: each prose paragraph of ``pydoc_data.topics`` (at least
    ``min_words`` words) labelled with the part of the reference its topic belongs to
    (``TOPIC_CLASSES``). Returns the class names and ``{"train", "validation", "test"}`` lists of
    ``{"text", "label", "source"}``, split by topic with ``split_of``, as the questions are. A
    topic CPython adds later, and not in ``TOPIC_CLASSES``, is left out."""
    from pydoc_data.topics import topics

    names = list(TOPIC_CLASSES)
    label_of = {key: i for i, name in enumerate(names) for key in TOPIC_CLASSES[name]}
    splits = {name: [] for name in SPLITS}
    for key in sorted(topics):
        if key not in label_of:
            continue
        for paragraph in _paragraphs(topics[key]):
            text = " ".join(paragraph.split())
            if _prose(paragraph) and len(text.split()) >= min_words:
                splits[split_of(f"topic:{key}")].append({"text": text, "label": label_of[key], "source": f"topic:{key}"})
    return names, splits


PAIR_KINDS = ("other", "hard")  # preference_pairs' kinds of rejected answer


def near_misses(example: dict, examples: list[dict]) -> dict[str, str]:
    """The wrong answers close to ``example``'s own, by what makes them wrong: ``"sibling"``, the
    answer of the first other question of the same source whose answer differs (a module's other
    function, a topic's other section); ``"truncated"``, the first half of the answer's words (at
    least 3 words and at least 2 fewer than the answer has); ``"number"``, the first number of the
    answer plus one. A kind that does not apply to this answer is left out."""
    answer, misses = example["output"], {}
    sibling = next((e["output"] for e in examples if e["source"] == example["source"] and e["output"] != answer), None)
    if sibling is not None:
        misses["sibling"] = sibling
    words = answer.split()
    if len(words) >= 6:
        misses["truncated"] = " ".join(words[: len(words) // 2])
    number = re.search(r"\d+", answer)
    if number:
        misses["number"] = answer[:number.start()] + str(int(number.group()) + 1) + answer[number.end():]
    return misses


def preference_pairs(examples: list[dict], seed: int = 0, kind: str = "other") -> list[dict]:
    """DPO's pairs: for each example, ``{"instruction", "input", "chosen", "rejected", "source"}``
    with its own answer chosen. ``kind="other"``: another example's answer rejected (of a
    different source, so never right by chance). ``kind="hard"``: one of its ``near_misses``,
    drawn with ``seed`` among those that apply (the pair also records which, as ``"miss"``); an
    example with none is left out."""
    if kind not in PAIR_KINDS:
        raise ValueError(f"unknown kind of pairs {kind!r}; expected one of {', '.join(PAIR_KINDS)}")
    rng = random.Random(seed)
    pairs = []
    if kind == "hard":
        for example in examples:
            misses = near_misses(example, examples)
            if misses:
                miss = rng.choice(sorted(misses))
                pairs.append({"instruction": example["instruction"], "input": example.get("input", ""), "chosen": example["output"],
                              "rejected": misses[miss], "source": example["source"], "miss": miss})
        return pairs
    for i, example in enumerate(examples):
        for _ in range(20):
            other = examples[rng.randrange(len(examples))]
            if other["source"] != example["source"] and other["output"] != example["output"]:
                break
        else:
            continue
        pairs.append({"instruction": example["instruction"], "input": example.get("input", ""), "chosen": example["output"],
                      "rejected": other["output"], "source": example["source"]})
    return pairs


def _normalize(text: str) -> list[str]:
    text = text.lower()
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    return [w for w in text.split() if w not in ("a", "an", "the")]


def token_f1(response: str, reference: str) -> float:
    """SQuAD's token-level F1 of ``response`` against ``reference``, from 0 to 1."""
    got, want = _normalize(response), _normalize(reference)
    if not got or not want:
        return float(got == want)
    common = sum((collections.Counter(got) & collections.Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def summary(splits: dict[str, list[dict]]) -> str:
    """One line: examples and sources per split."""
    parts = []
    for name in SPLITS:
        examples = splits[name]
        parts.append(f"{name} {len(examples):,} ({len({e['source'] for e in examples})} sources)")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    """A look at the data (``python -m solutions.assistant_data``), or all of it as JSON (``--json FILE``)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="The assistant track's data, made from CPython's own documentation.")
    parser.add_argument("--json", help="write every split, the preference pairs and the classification data to this file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = make_dataset(seed=args.seed)
    print(summary(data))
    if args.json:
        names, paragraphs = classification_data()
        dump = {"splits": data, "pairs": {s: preference_pairs(data[s], seed=args.seed) for s in SPLITS},
                "hard_pairs": {s: preference_pairs(data[s], seed=args.seed, kind="hard") for s in SPLITS},
                "classes": names, "paragraphs": paragraphs}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dump, f)
        return
    for example in data["test"][:8]:
        print(f"- {example['instruction']}\n  {example['output']}  [{example['source']}]")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
