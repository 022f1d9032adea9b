"""A results.json (as ``--report`` writes it) as a Markdown scoreboard, for CI step summaries:
``python tests/harness/summary.py results.json >> "$GITHUB_STEP_SUMMARY"``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

MARK = {"passed": "✅", "failing": "❌", "not started": "⬜", "error": "💥", "no checks": "❔"}


def markdown(report: dict) -> str:
    extra = report.get("extra_data", {})
    lines = ["## GPT from scratch: scoreboard", ""]
    if not extra.get("finished", True):
        return "\n".join(lines + ["Grading did not finish: **0 points**.", ""])
    if extra.get("void"):
        lines += [f"**GRADE VOID**: the grader's own files changed while it ran ({'; '.join(extra['void'][:3])}).", ""]
    lines += ["| | id | exercise | points | status | first failure |", "|---|---|---|---|---|---|"]
    for t in report.get("tests", []):
        status = t.get("extra_data", {}).get("kata_status", t.get("status", ""))
        blocked = t.get("extra_data", {}).get("blocked_by") or []
        first = t.get("output", "").splitlines()[0] if t.get("output") else ""
        first = first.split(": ", 1)[1] if ": " in first and status != "passed" else ""
        note = f" (blocked by {', '.join(blocked)})" if blocked else ""
        title = t.get("name", "").split(": ", 1)[-1]
        cell = first.replace("|", "\\|")[:160]
        lines.append(f"| {MARK.get(status, '')} | {t.get('number', '')} | {title} | {t.get('score', 0):g}/{t.get('max_score', 0):g} | {status}{note} | {cell} |")
    lines += ["", f"**Total: {report.get('score', 0):g}/{extra.get('max_score', 0):g}** (seed {extra.get('seed')})", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/harness/summary.py results.json", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"## GPT from scratch: scoreboard\n\nNo report could be read from {path}: {e}")
        return 1
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
