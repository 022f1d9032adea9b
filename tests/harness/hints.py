"""Progressive hints from the manifest: ``nox -s hint -- ID`` prints the next one.

Progress is kept in ``.kata/hints.json`` (untracked), one count per exercise; ``--reset`` forgets
it and ``--all`` prints every hint seen so far again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from harness import manifest
else:
    from . import manifest

STATE = manifest.ROOT / ".kata" / "hints.json"


def _load(state: Path) -> dict[str, int]:
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
        return {k: int(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(state: Path, seen: dict[str, int]) -> None:
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(seen, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def next_hint(key: str, state: Path = STATE, reset: bool = False, again: bool = False) -> str:
    ex = manifest.lookup(key)
    seen = _load(state)
    if reset:
        seen.pop(ex.id, None)
        _save(state, seen)
        return f"Hints for {ex.id} ({ex.slug}) start again from the first."
    total = len(ex.hints)
    if not total:
        return f"{ex.id} ({ex.slug}) has no hints."
    shown = seen.get(ex.id, 0)
    if again:
        upto = max(shown, 1)
        seen[ex.id] = upto
        _save(state, seen)
        return "\n\n".join(f"Hint {i + 1} of {total} for {ex.id} ({ex.slug}): {ex.hints[i]}" for i in range(upto))
    if shown >= total:
        return (
            f"That was the last hint for {ex.id} ({ex.slug}) ({total} of {total}); "
            f"`nox -s hint -- {ex.slug} --all` shows them all again, `--reset` starts over."
        )
    seen[ex.id] = shown + 1
    _save(state, seen)
    more = "" if shown + 1 == total else f"\n(`nox -s hint -- {ex.slug}` again for the next one)"
    return f"Hint {shown + 1} of {total} for {ex.id} ({ex.slug}): {ex.hints[shown]}{more}"


def main(argv: list[str]) -> int:
    keys = [a for a in argv if not a.startswith("-")]
    if len(keys) != 1:
        names = ", ".join(f"{e.id} ({e.slug})" for e in manifest.load())
        print(f"usage: nox -s hint -- ID [--all | --reset]; the exercises are: {names}", file=sys.stderr)
        return 2
    try:
        print(next_hint(keys[0], reset="--reset" in argv, again="--all" in argv))
    except KeyError as e:
        print(e.args[0], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
