"""``index.html`` of ``nox -s class``: the class on one self-contained page.

The page needs nothing but itself (no script, style sheet or font is fetched when it opens):

- the class table: a row per submission (its total, its status, a cell per exercise coloured by
  the exercise's status), sorted by clicking a column's heading; each submission's name leads to
  its scoreboard, further down the page, and to its ``results.json``;
- two charts drawn by matplotlib as inline SVG: per exercise, the share of the class in each
  status, and the distribution of the points it earned;
- per exercise, the mistakes the class made most often, as the grader named them ("This looks
  like: ..."), each with how many submissions made it, which ones, and the message they read.

Element ids and ``data-`` attributes are what ``tests/meta/test_class_page.py`` reads in Chromium.
"""

from __future__ import annotations

import collections
import html
import io
from pathlib import Path

COLOURS = {"passed": "#2e7d32", "failing": "#ef6c00", "not started": "#9e9e9e", "error": "#c62828",
           "no checks": "#bdbdbd", "not graded": "#6a1b9a", "void": "#6a1b9a"}
LIGHT = {"passed": "#c8e6c9", "failing": "#ffe0b2", "not started": "#eeeeee", "error": "#ffcdd2",
         "no checks": "#f5f5f5", "not graded": "#e1bee7", "void": "#e1bee7"}
ORDER = ("passed", "failing", "error", "not started")

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #212121; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #fafafa; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
td.id, th.id { text-align: left; } td.status { text-align: left; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: 12px; }
.legend span { display: inline-block; padding: 1px 8px; margin-right: 6px; }
details { margin: .2em 0 .6em 0; } .mistake .count { font-weight: bold; }
section.exercise { margin-bottom: 1em; }
"""

SCRIPT = """
document.querySelectorAll('#grades th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = document.getElementById('grades');
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var down = th.getAttribute('aria-sort') === 'ascending';
    table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', down ? 'descending' : 'ascending');
    function key(row) {
      var v = row.cells[col].getAttribute('data-sort');
      var n = parseFloat(v);
      return isNaN(n) ? v : n;
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b), r;
      if (typeof x === 'number' && typeof y === 'number') r = x - y;
      else if (typeof x === 'number') r = -1;
      else if (typeof y === 'number') r = 1;
      else r = String(x).localeCompare(String(y));
      return down ? -r : r;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _num(x: float) -> str:
    return f"{x:g}"


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: no XML declaration or doctype


def charts(rows, exercises) -> str:
    """The two charts as inline SVG, or a line saying why there are none."""
    graded = [r for r in rows if r.status == "graded"]
    if not graded:
        return "<p>No submission was graded: no charts.</p>"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "<p>matplotlib is not installed here: no charts (the table and lists below are complete).</p>"
    matplotlib.rcParams["svg.hashsalt"] = "kata"  # the same page from the same grades
    ids = [e.id for e in exercises]
    out = []
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(ids) + 1.5), 3.0))
    bottom = [0.0] * len(ids)
    for status in ORDER:
        share = [sum(r.statuses.get(i) == status for r in graded) / len(graded) for i in ids]
        ax.bar(ids, share, bottom=bottom, color=COLOURS[status], label=status, width=0.8)
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set_ylabel("share of the class")
    ax.set_ylim(0, 1)
    ax.set_title(f"Status of each exercise ({len(graded)} graded submissions)")
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    ax.tick_params(axis="x", labelsize=7)
    out.append(_svg(fig))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(ids) + 1.5), 3.0))
    for k, e in enumerate(exercises):
        values = [r.points[e.id] / e.points for r in graded if e.id in r.points and e.points]
        counts = collections.Counter(round(v, 2) for v in values)
        for v, c in counts.items():
            ax.scatter([k], [v], s=12 + 60 * c / len(graded), color="#1565c0", alpha=0.7)
    ax.set_xticks(range(len(ids)), ids, fontsize=7)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("points / exercise's points")
    ax.set_title("Points earned on each exercise (a dot's size: how many submissions)")
    out.append(_svg(fig))
    plt.close(fig)
    return "\n".join(f'<figure class="chart">{svg}</figure>' for svg in out)


def table(rows, exercises) -> str:
    head = ['<th class="id" data-col="submission">submission</th>', '<th data-col="total">total</th>',
            '<th data-col="status" class="id">status</th>']
    head += [f'<th data-col="{e.id}" title="{_e(e.title)}">{e.id}</th>' for e in exercises]
    body = []
    for r in rows:
        total = "" if r.total is None else _num(r.total)
        who = " ".join(v for v in (r.learners.get("name", ""), r.learners.get("email", "")) if v)
        cells = [f'<td class="id" data-sort="{_e(r.id)}" title="{_e(who)}"><a href="#sb-{_e(r.id)}">{_e(r.id)}</a> '
                 f'<a href="submissions/{_e(r.id)}/results.json" title="results.json">&#x2197;</a></td>',
                 f'<td class="total" data-sort="{total if total else -1}">{total or "&ndash;"}</td>',
                 f'<td class="status" data-sort="{_e(r.status)}" title="{_e(r.note)}">{_e(r.status)}'
                 + (f" <small>({_e(r.note[:80])})</small>" if r.note else "") + "</td>"]
        for e in exercises:
            if e.id in r.points:
                status = r.statuses.get(e.id, "")
                cells.append(f'<td data-ex="{e.id}" data-status="{_e(status)}" data-sort="{_num(r.points[e.id])}" '
                             f'style="background:{LIGHT.get(status, "#fff")}" title="{_e(e.name)}: {_e(status)}">'
                             f"{_num(r.points[e.id])}</td>")
            else:
                cells.append(f'<td data-ex="{e.id}" data-status="{_e(r.status)}" data-sort="-1" '
                             f'style="background:{LIGHT.get(r.status, "#fff")}">&ndash;</td>')
        body.append(f'<tr data-id="{_e(r.id)}" data-status="{_e(r.status)}">' + "".join(cells) + "</tr>")
    legend = "".join(f'<span style="background:{LIGHT[s]}">{s}</span>' for s in (*ORDER, "void"))
    return (f'<p class="legend">{legend} (click a column\'s heading to sort)</p>'
            f'<table id="grades"><thead><tr>{"".join(head)}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def summary(rows, exercises) -> str:
    graded = [r for r in rows if r.status == "graded"]
    lines = []
    for e in exercises:
        pts = [r.points[e.id] for r in graded if e.id in r.points]
        passed = sum(r.statuses.get(e.id) == "passed" for r in graded)
        share = f"{100 * passed / len(graded):.0f}%" if graded else "&ndash;"
        mean = _num(round(sum(pts) / len(pts), 2)) if pts else "&ndash;"
        lines.append(f'<tr data-ex="{e.id}"><td class="id">{_e(e.name)}</td><td class="id">{_e(e.title)}</td>'
                     f'<td class="passed">{passed} of {len(graded)} ({share})</td><td>{mean} / {_num(e.points)}</td></tr>')
    return ('<table id="exercises"><thead><tr><th class="id">exercise</th><th class="id">title</th>'
            '<th>passed</th><th>mean points</th></tr></thead><tbody>' + "".join(lines) + "</tbody></table>")


def mistakes(rows, exercises) -> str:
    """Per exercise, each named mistake: how many submissions made it (once each), most first."""
    by_ex: dict[str, dict[str, list]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rows:
        seen = set()
        for m in r.mistakes:
            if (m["exercise"], m["mistake"]) not in seen:
                seen.add((m["exercise"], m["mistake"]))
                by_ex[m["exercise"]][m["mistake"]].append((r.id, m))
    if not by_ex:
        return '<p id="no-mistakes">No graded submission made a mistake the grader names.</p>'
    out = []
    for e in exercises:
        named = by_ex.get(e.id)
        if not named:
            continue
        items = []
        for name, hits in sorted(named.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            who = ", ".join(_e(sid) for sid, _ in hits)
            first = hits[0][1]
            items.append(f'<li class="mistake" data-mistake="{_e(name)}" data-count="{len(hits)}">'
                         f'<span class="count">{len(hits)}</span> &times; {_e(name)} '
                         f'<small>({who})</small><details><summary>what they read '
                         f'({_e(first["check"])})</summary><pre>{_e(first["message"])}</pre></details></li>')
        out.append(f'<section class="exercise" data-ex="{e.id}"><h3>{_e(e.name)}: {_e(e.title)}</h3>'
                   f'<ol>{"".join(items)}</ol></section>')
    return "\n".join(out)


def scoreboards(rows) -> str:
    out = []
    for r in rows:
        text = r.scoreboard or f"{r.status}: {r.note}"
        out.append(f'<section class="scoreboard" id="sb-{_e(r.id)}"><h3>{_e(r.id)}</h3>'
                   f'<p>{_e(r.status)}{": " + _e(r.note) if r.note else ""} &middot; '
                   f'<a href="submissions/{_e(r.id)}/results.json">results.json</a> &middot; '
                   f'<a href="submissions/{_e(r.id)}/grade.log">grade.log</a></p><pre>{_e(text)}</pre></section>')
    return "\n".join(out)


def render(rows, exercises, *, seed: int) -> str:
    graded = sum(r.status == "graded" for r in rows)
    possible = sum(e.points for e in exercises)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Class grades: GPT from scratch</title>
<style>{STYLE}</style></head><body>
<h1>Class grades: GPT from scratch</h1>
<p id="counts">{len(rows)} submissions, {graded} graded, out of {_num(possible)} points; every submission graded on
the same inputs (seed {seed}). <a href="grades.csv">grades.csv</a> &middot; <a href="mistakes.csv">mistakes.csv</a></p>
<h2>The class</h2>
{table(rows, exercises)}
<h2>Each exercise</h2>
{charts(rows, exercises)}
{summary(rows, exercises)}
<h2 id="mistakes">The mistakes the class made most often</h2>
{mistakes(rows, exercises)}
<h2>Scoreboards</h2>
{scoreboards(rows)}
<script>{SCRIPT}</script>
</body></html>
"""


def write(path: Path, rows, exercises, *, seed: int) -> Path:
    path.write_text(render(rows, exercises, seed=seed), encoding="utf-8")
    return path
