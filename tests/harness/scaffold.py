"""Scaffolds a new exercise: ``nox -s new -- ID SLUG MODULE "title"`` (or run this file).

It writes what can be written without knowing the exercise, and nothing else:

- its entry at the end of ``tests/manifest.toml`` (points, ``depends_on``, placeholder hints);
- in ``solutions/MODULE.py`` (made if it is new), a function with a docstring to fill in and a
  solution region (``# BEGIN SOLUTION ID: ...`` / ``# END SOLUTION``) that still raises; or, with
  ``--class NAME``, an ``nn.Module`` whose ``__init__(dim)`` and ``forward(x)`` are such regions;
- ``tests/test_ID_SLUG.py``: ``EXERCISE = "ID"``, an oracle to write and one check that calls the
  tree's function on fresh random input and compares it with the oracle;
- the regenerated stub tree ``exercises/`` and the README's exercise table (``stubs.py``).

Then the exercise fails (its solution raises); the maintainer's recipe in the README ("Adding an
exercise") takes it from there. Every argument is checked before anything is written, and nothing
that exists is overwritten.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from harness import manifest, stubs
else:
    from . import manifest, stubs

PLACEHOLDER = "TODO(maintainer)"  # tests/meta/test_manifest.py refuses a manifest that still holds it

TEST_TEMPLATE = '''"""Exercise {id}: {title}.

{todo}: say what is checked and against which oracle (one the solution did not write: PyTorch's
own function, a formula written here, a reference output in reference/).
"""

import torch

from harness.compare import assert_close
from harness.draw import n

EXERCISE = "{id}"


def oracle(x: torch.Tensor) -> torch.Tensor:
    """What ``{function}(x)`` must return, computed without solutions/."""
    raise NotImplementedError("{todo}: write the oracle of exercise {id} in tests/test_{id}_{slug}.py")


def test_{function}_matches_the_oracle(impl, gen):
    x = torch.randn(n(gen, 1, 4), n(gen, 1, 8), generator=gen)  # fresh shapes and values each run
    got = impl.call("{module}.{function}", x).out
    assert_close(got, oracle(x), f"{function}(x) for x of shape {{tuple(x.shape)}}", oracle="the oracle")
'''

FUNCTION_TEMPLATE = '''

def {function}(x: torch.Tensor) -> torch.Tensor:
    """{todo}: the contract a learner codes against: what it takes (shapes, dtypes), what it
    returns, what it raises.
    """
    # BEGIN SOLUTION {id}: {task}
    raise NotImplementedError("{todo}: write the reference solution of exercise {id} here")
    # END SOLUTION
'''

CLASS_TEST_TEMPLATE = '''"""Exercise {id}: {title}.

{todo}: say what is checked and against which oracle (one the solution did not write: PyTorch's
own module, a formula written here, a reference output in reference/).
"""

import torch

from harness.compare import assert_close
from harness.draw import n

EXERCISE = "{id}"


def oracle(x: torch.Tensor, dim: int) -> torch.Tensor:
    """What ``{function}(dim)(x)`` must return, computed without solutions/."""
    raise NotImplementedError("{todo}: write the oracle of exercise {id} in tests/test_{id}_{slug}.py")


def test_{slug}_matches_the_oracle(impl, gen):
    dim = n(gen, 1, 8)
    x = torch.randn(n(gen, 1, 4), dim, generator=gen)  # fresh shapes and values each run
    got = impl.module("{module}.{function}", x, init_args=(dim,)).out
    assert_close(got, oracle(x, dim), f"{function}({{dim}})(x) for x of shape {{tuple(x.shape)}}", oracle="the oracle")
'''

CLASS_TEMPLATE = '''

class {function}(nn.Module):
    """{todo}: the contract a learner codes against: what it holds (attributes graded by name,
    with their shapes), what ``forward`` takes (shapes, dtypes) and returns.

    Args:
        dim: the size of the input's last dimension.
    """

    def __init__(self, dim: int):
        super().__init__()
        # BEGIN SOLUTION {id}: {task_init}
        raise NotImplementedError("{todo}: write the reference __init__ of exercise {id} here")
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION {id}: {task}
        raise NotImplementedError("{todo}: write the reference forward of exercise {id} here")
        # END SOLUTION
'''

MANIFEST_TEMPLATE = '''
[[exercise]]
id = "{id}"
slug = "{slug}"
title = "{title}"
module = "{module}"
functions = ["{function}"]
points = {points:g}
depends_on = [{depends}]
hints = [
    "{todo}: a first hint: the idea, in one sentence.",
    "{todo}: a second hint: the step most learners miss.",
    "{todo}: a last hint: nearly the line itself.",
]
'''


class ScaffoldError(Exception):
    pass


def _identifier(value: str, what: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", value) or keyword.iskeyword(value):
        raise ScaffoldError(f"{what} must be a lower_snake_case Python name, got {value!r}")
    return value


def plan(root: Path, eid: str, slug: str, module: str, title: str, function: str | None = None,
         points: float = 10, depends_on: tuple[str, ...] = (), cls: str | None = None) -> dict[Path, str]:
    """Every file the scaffold writes -> its new text; raises ScaffoldError (naming what was
    expected) before anything is written. With ``cls``, the learner writes that ``nn.Module``
    (``__init__(dim)`` and ``forward(x)``) instead of a function."""
    if cls is not None and function is not None:
        raise ScaffoldError("give --function or --class, not both: the learner writes one or the other")
    if cls is not None and (not re.fullmatch(r"[A-Z][A-Za-z0-9]*", cls) or keyword.iskeyword(cls)):
        raise ScaffoldError(f"the class must be a CapWords Python name (RMSNorm, KVCache), got {cls!r}")
    exercises = manifest.load(root / "tests" / "manifest.toml")
    if not re.fullmatch(r"\d\d", eid):
        raise ScaffoldError(f"the id must be two digits (the course order), got {eid!r}")
    _identifier(slug, "the slug")
    _identifier(module, "the module")
    function = cls if cls is not None else _identifier(function or slug, "the function")
    if not title.strip() or '"' in title or "\n" in title:
        raise ScaffoldError(f"the title must be one line without double quotes, got {title!r}")
    if points <= 0:
        raise ScaffoldError(f"points must be positive, got {points:g}")
    ids = [e.id for e in exercises]
    if eid in ids or slug in [e.slug for e in exercises]:
        raise ScaffoldError(f"exercise {eid} or the slug {slug!r} exists already (the manifest has {', '.join(ids)})")
    if ids and eid < max(ids):
        raise ScaffoldError(f"a new exercise goes after the last one ({max(ids)}): choose an id above it, got {eid}")
    for dep in depends_on:
        if dep not in ids:
            raise ScaffoldError(f"depends on {dep}, which is not an exercise of the manifest ({', '.join(ids)})")
    test_file = root / "tests" / f"test_{eid}_{slug}.py"
    if test_file.exists():
        raise ScaffoldError(f"{test_file.relative_to(root)} exists already")
    solution = root / "solutions" / f"{module}.py"
    source = solution.read_text(encoding="utf-8") if solution.exists() else (
        f'"""Exercise {eid}: {title}."""\n\nimport torch\n' + ("from torch import nn\n" if cls else ""))
    if re.search(rf"^(def|class) {function}\b", source, re.M):
        raise ScaffoldError(f"solutions/{module}.py already defines {function}")
    if "import torch" not in source:
        raise ScaffoldError(f"solutions/{module}.py does not import torch, which the scaffolded function uses: add `import torch` first")
    if cls is not None and not re.search(r"^(from torch import nn|import torch\.nn as nn)\b", source, re.M):
        raise ScaffoldError(f"solutions/{module}.py does not import nn, which the scaffolded class uses: add `from torch import nn` first")
    values = dict(id=eid, slug=slug, module=module, title=title.strip(), function=function, points=points,
                  depends=", ".join(f'"{d}"' for d in depends_on), todo=PLACEHOLDER,
                  task=f"{PLACEHOLDER}: the task in a few words (the stub's message)",
                  task_init=f"{PLACEHOLDER}: what __init__ builds, in a few words (the stub's message)")
    text = (root / "tests" / "manifest.toml").read_text(encoding="utf-8")
    code, test = (CLASS_TEMPLATE, CLASS_TEST_TEMPLATE) if cls is not None else (FUNCTION_TEMPLATE, TEST_TEMPLATE)
    return {
        root / "tests" / "manifest.toml": text.rstrip("\n") + "\n" + MANIFEST_TEMPLATE.format(**values),
        solution: source.rstrip("\n") + "\n" + code.format(**values),
        test_file: test.format(**values),
    }


def main(argv: list[str] | None = None) -> int:
    root = manifest.ROOT
    parser = argparse.ArgumentParser(prog="nox -s new --", description="Scaffold a new exercise (see the README's \"Adding an exercise\").")
    parser.add_argument("id", help="two digits, after the manifest's last exercise: its id plus one")
    parser.add_argument("slug", help="its short name on the command line: kv_cache")
    parser.add_argument("module", help="the module of the trees that holds it: kv_cache (solutions/kv_cache.py)")
    parser.add_argument("title", help="one line for the scoreboard and the README's table")
    parser.add_argument("--function", help="the function the learner writes (default: the slug)")
    parser.add_argument("--class", dest="cls", metavar="NAME",
                        help="an nn.Module the learner writes instead (__init__(dim) and forward(x)), e.g. RMSNorm")
    parser.add_argument("--points", type=float, default=10, help="what it is worth (default 10)")
    parser.add_argument("--depends-on", nargs="*", default=[], metavar="ID", help="the exercises whose parts it builds on")
    args = parser.parse_args(argv)
    try:
        files = plan(root, args.id, args.slug, args.module, args.title, args.function, args.points,
                     tuple(args.depends_on), args.cls)
    except (ScaffoldError, manifest.ManifestError) as e:
        parser.error(str(e))
    for path, text in files.items():
        path.write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {path.relative_to(root)}")
    manifest.load.cache_clear()  # the manifest just changed
    for w in stubs.write():
        print(f"wrote exercises/{w}")
    if stubs.write_readme():
        print("wrote README.md (the exercise table)")
    print(f"\nExercise {args.id} fails until it is written: follow the README's \"Adding an exercise\" recipe "
          f"(every {PLACEHOLDER} marks a place to fill in).")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
