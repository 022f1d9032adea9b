"""Reads ``tests/manifest.toml``, the source of truth for the course's exercises."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "tests" / "manifest.toml"
DEFAULT_TIMEOUT = 20.0


@dataclass(frozen=True)
class Exercise:
    id: str
    slug: str
    title: str
    module: str
    functions: tuple[str, ...]
    points: float
    depends_on: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()
    forbidden_kernels: tuple[str, ...] = ()
    forbidden_modules: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    worker_imports: tuple[str, ...] = ()
    worker_packages: tuple[str, ...] = ()
    hidden_modules: tuple[str, ...] = ()  # what its sandbox leaves out: see ``_hide``
    allowed_imports: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.id} {self.slug}"

    @property
    def test_file(self) -> str:
        return f"test_{self.id}_{self.slug}.py"


class ManifestError(Exception):
    pass


REQUIRED = {"id": str, "slug": str, "title": str, "module": str, "functions": list, "points": (int, float)}


def parse(text: str, source: str = "manifest") -> tuple[Exercise, ...]:
    data = tomllib.loads(text)
    exercises, seen = [], set()
    for n, raw in enumerate(data.get("exercise", []), 1):
        for key, kind in REQUIRED.items():
            if not isinstance(raw.get(key), kind):
                raise ManifestError(f"{source}: exercise #{n} needs `{key}`")
        if not re.fullmatch(r"\d\d", raw["id"]) or not re.fullmatch(r"[a-z][a-z0-9_]*", raw["slug"]):
            raise ManifestError(f"{source}: exercise #{n}: id must be two digits and slug lower_snake_case")
        if raw["id"] in seen or raw["slug"] in seen:
            raise ManifestError(f"{source}: exercise {raw['id']} {raw['slug']} is listed twice")
        for dep in raw.get("depends_on", []):
            if dep not in seen:
                raise ManifestError(f"{source}: exercise {raw['id']} depends on {dep}, which does not come before it")
        seen |= {raw["id"], raw["slug"]}
        known = set(REQUIRED) | {"depends_on", "forbidden", "forbidden_kernels", "forbidden_modules", "hints", "timeout",
                                 "worker_imports", "worker_packages", "allowed_imports"}
        for name in raw.get("allowed_imports", []):  # module names, read by the allow-list (tests/allowlist.toml)
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z]\w*(\.[A-Za-z]\w*)*", name):
                raise ManifestError(f"{source}: exercise {raw['id']} {raw['slug']}: allowed_imports holds {name!r}, "
                                    "which is not a public module name such as \"torch.distributed\"")
        unknown = sorted(set(raw) - known)
        if unknown:  # a misspelt key would otherwise switch its setting off without a word
            raise ManifestError(f"{source}: exercise {raw['id']} {raw['slug']} has the unknown key(s) {', '.join(unknown)}; "
                                f"the keys are: {', '.join(sorted(known))}")
        exercises.append(
            Exercise(
                id=raw["id"],
                slug=raw["slug"],
                title=raw["title"],
                module=raw["module"],
                functions=tuple(raw["functions"]),
                points=float(raw["points"]),
                depends_on=tuple(raw.get("depends_on", [])),
                forbidden=tuple(raw.get("forbidden", [])),
                forbidden_kernels=tuple(raw.get("forbidden_kernels", [])),
                forbidden_modules=tuple(raw.get("forbidden_modules", [])),
                hints=tuple(raw.get("hints", [])),
                timeout=float(raw.get("timeout", DEFAULT_TIMEOUT)),
                worker_imports=tuple(raw.get("worker_imports", [])),
                worker_packages=tuple(raw.get("worker_packages", [])),
                allowed_imports=tuple(raw.get("allowed_imports", [])),
            )
        )
    ids = [e.id for e in exercises]
    if ids != sorted(ids):
        raise ManifestError(f"{source}: exercises must be listed in course order")
    return _hide(exercises, source)


def _hide(exercises: list[Exercise], source: str) -> tuple[Exercise, ...]:
    """Each exercise with ``hidden_modules``: every package that some exercise forbids, but for
    those it lists in ``worker_packages``. A sandbox shows a forbidden package only to the exercises
    whose checks need it in the worker, so that most exercises share one sandbox (and one host that
    has imported torch) instead of one per set of ``forbidden_modules``."""
    anywhere = {m for e in exercises for m in e.forbidden_modules}
    out = []
    for e in exercises:
        clash = sorted(set(e.worker_packages) & set(e.forbidden_modules))
        if clash:
            raise ManifestError(f"{source}: exercise {e.id} {e.slug} both forbids and needs {', '.join(clash)}")
        hidden = tuple(sorted((anywhere - set(e.worker_packages)) | set(e.forbidden_modules)))
        out.append(replace(e, hidden_modules=hidden))
    return tuple(out)


@lru_cache(maxsize=None)
def load(path: Path = MANIFEST) -> tuple[Exercise, ...]:
    return parse(path.read_text(encoding="utf-8"), str(path))


def by_id() -> dict[str, Exercise]:
    return {e.id: e for e in load()}


def lookup(key: str) -> Exercise:
    """An exercise by id (``01``, ``1``) or slug (``attention``)."""
    key = key.strip().lower()
    for e in load():
        if key in (e.id, e.slug) or (key.isdigit() and int(key) == int(e.id)):
            return e
    valid = ", ".join(f"{e.id} ({e.slug})" for e in load())
    raise KeyError(f"no exercise {key!r}; the exercises are: {valid}")


def select(key: str) -> list[Exercise]:
    """The exercises a command-line word names: an id or slug (``lookup``), or a file of the tree,
    as the scoreboard shows it (``bpe.py``, ``exercises/bpe.py``: every exercise in that file)."""
    name = key.strip().replace("\\", "/").rsplit("/", 1)[-1].lower()
    if name.endswith(".py"):
        found = [e for e in load() if f"{e.module}.py" == name]
        if found:
            return found
        files = ", ".join(sorted({f"{e.module}.py" for e in load()}))
        raise KeyError(f"no exercise is in {key!r}; the exercises' files are: {files}")
    return [lookup(key)]
