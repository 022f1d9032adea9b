"""``nox -s class -- SUBMISSIONS [--out DIR] [--jobs N] [--exercise ID ...] [--seed S]``: grade a class.

``SUBMISSIONS`` is a folder (or a ``.zip`` of one, as Gradescope's "Export submissions" gives it)
whose entries are the submissions: each a folder (a clone of the course, a folder holding
``exercises/``, the files of ``exercises/`` themselves, or a bare git repository) or a ``.zip``
of one. Each is graded alone, in a grade of its own, exactly as ``run_autograder`` grades a
Gradescope submission (``gradescope.find_tree`` and ``assemble``: the course's stubs with the
submission's modules copied over them), by this checkout's grader and reference outputs, in the
sandbox (refused where none can start, unless ``--unsandboxed``). Every submission gets the same
seed, so the same inputs: the class's seed is kept in ``DIR/class.json`` and reused by a rerun.

What it writes in ``DIR`` (default ``class-grades``):

- ``grades.csv``: a row per submission: its id, who made it (name, email and sid, from a
  Gradescope export's ``submission_metadata.yml``; empty otherwise), the total, the points of each
  exercise in the manifest's order, then the grade's status ("graded", "void" or "not graded") and a note. A
  grade that did not happen or was voided has empty points: never a score it did not earn.
- ``mistakes.csv``: a row per submission and named mistake ("This looks like: ...").
- ``submissions/ID/``: the grade's own ``results.json``, its output (``grade.log``) and the row.
- ``index.html``: the class on one page (``classpage.py``).

A rerun grades again only what has no valid grade yet: a submission whose files (or this grader,
seed or exercises) changed since it was graded, or whose last grade was void or did not happen
(a void can be the machine's fault: the environment changed, say); an interrupted run loses
only the grades in progress.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from harness import classpage, gradescope, manifest
else:
    from . import classpage, gradescope, manifest

SOURCE = gradescope.SOURCE
ZIP_LIMIT = 256 << 20  # bytes a submission's zip may unpack to
ZIP_FILES = 20_000
ROW_VERSION = 1
DEFAULT_TIMEOUT = 1800.0
REFUSED = "(allow-list rule: "  # in a check's message: the tree's code was refused before it ran


class NotGradable(Exception):
    """A submission that cannot be graded; the message says why, for its row."""


@dataclass
class Submission:
    id: str  # a name safe as a folder name, unique in the class
    path: Path  # a folder or a .zip
    learners: dict[str, str] = field(default_factory=dict)  # name, email, sid: from Gradescope's metadata


@dataclass
class Row:
    id: str
    status: str  # graded / void / not graded
    note: str = ""
    learners: dict[str, str] = field(default_factory=dict)  # name, email, sid (Gradescope's export)
    total: float | None = None
    points: dict[str, float] = field(default_factory=dict)  # exercise id -> points, graded exercises only
    statuses: dict[str, str] = field(default_factory=dict)  # exercise id -> passed / failing / ...
    mistakes: list[dict] = field(default_factory=list)  # {exercise, check, mistake, message}
    scoreboard: str = ""
    seconds: float = 0.0
    key: str = ""  # what the grade depended on: the tree's files, the grader, the seed, the exercises
    layout: str = ""
    reused: bool = False  # this run found it graded already, with the same key


# ------------------------------------------------------------------------------ submissions


def _safe_id(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "submission"
    out, n = base, 2
    while out.lower() in taken:
        out, n = f"{base}-{n}", n + 1
    taken.add(out.lower())
    return out


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX")


def _is_one_submission(folder: Path) -> bool:
    return (folder / "exercises").is_dir() or any(p.suffix == ".py" for p in folder.iterdir())


def discover(root: Path, scratch: Path) -> tuple[list[Submission], list[str]]:
    """The submissions under ``root`` (a folder, or a zip of one) and the entries skipped, each
    with why. Raises ``NotGradable`` when ``root`` is not a folder of submissions."""
    if root.is_file() and zipfile.is_zipfile(root):
        unpacked = scratch / "export"
        shutil.rmtree(unpacked, ignore_errors=True)
        unzip(root, unpacked)
        root = unpacked
        entries = _visible(root)
        if len(entries) == 1 and entries[0].is_dir() and not _is_one_submission(entries[0]):
            root = entries[0]  # the export's own folder
    if not root.is_dir():
        raise NotGradable(f"{root}: expected a folder of submissions (or a .zip of one), found "
                          + ("no such file or folder" if not root.exists() else "a file that is not a zip"))
    if _is_one_submission(root):
        raise NotGradable(f"{root} is one submission (it holds exercises/ or .py files): give the folder that holds "
                          "the submissions, one folder or .zip each")
    subs, skipped, taken = [], [], set()
    who, why = gradescope_learners(root / "submission_metadata.yml")
    if why:
        skipped.append(f"submission_metadata.yml: {why}")
    for entry in _visible(root):
        if entry.is_dir():
            subs.append(Submission(_safe_id(entry.name, taken), entry, who.get(entry.name, {})))
        elif entry.is_file() and entry.suffix.lower() == ".zip":
            subs.append(Submission(_safe_id(entry.stem, taken), entry, who.get(entry.stem, {})))
        elif entry.name != "submission_metadata.yml":  # Gradescope's list of who submitted what
            skipped.append(f"{entry.name}: not a folder or a .zip")
    return subs, skipped


def gradescope_learners(path: Path) -> tuple[dict[str, dict[str, str]], str]:
    """Who made each submission of a Gradescope export: ``submission_metadata.yml`` maps each folder
    (``submission_NNN``) to ``:submitters:``, a list of ``:name:``, ``:email:`` and ``:sid:`` (Ruby's
    symbols as keys; a group submission lists several, joined here by "; "). Returns the map and why
    it could not be read ("" when there is no such file or it was read)."""
    if not path.is_file():
        return {}, ""
    try:
        import yaml
    except ImportError:
        return {}, "not read (PyYAML is not installed): the rows carry no names"

    class Loader(yaml.SafeLoader):
        pass

    # Ruby's tagged objects (!ruby/object:...) read as plain mappings, anything else tagged as its value
    Loader.add_multi_constructor("!", lambda loader, suffix, node: (
        loader.construct_mapping(node) if isinstance(node, yaml.MappingNode) else
        loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else loader.construct_scalar(node)))
    try:
        data = yaml.load(path.read_text(encoding="utf-8", errors="replace"), Loader=Loader)  # noqa: S506 (SafeLoader)
    except yaml.YAMLError as e:
        return {}, f"not read ({str(e).splitlines()[0]}): the rows carry no names"
    out: dict[str, dict[str, str]] = {}
    for folder, record in (data or {}).items() if isinstance(data, dict) else ():
        people = (record.get(":submitters") or record.get("submitters") or []) if isinstance(record, dict) else []
        people = [p for p in people if isinstance(p, dict)]
        fields = {}
        for key in ("name", "email", "sid"):
            fields[key] = "; ".join(str(p.get(f":{key}", p.get(key, "")) or "") for p in people).strip("; ")
        out[str(folder)] = fields
    return out, ""


def unzip(path: Path, dest: Path) -> None:
    """Unpack ``path`` into ``dest``: no absolute paths, no ``..``, no links, at most ZIP_LIMIT bytes."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise NotGradable(f"{path.name} is not a zip file that can be read ({e})") from None
    written = 0
    with archive:
        infos = archive.infolist()
        if len(infos) > ZIP_FILES:
            raise NotGradable(f"{path.name} holds {len(infos)} files, more than a submission can ({ZIP_FILES})")
        for info in infos:
            parts = Path(info.filename.replace("\\", "/")).parts
            if not parts or info.filename.startswith("/") or ".." in parts or stat.S_ISLNK(info.external_attr >> 16):
                continue  # nothing outside dest, no links
            target = dest.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > ZIP_LIMIT:
                        raise NotGradable(f"{path.name} unpacks to more than {ZIP_LIMIT >> 20} MB")
                    out.write(chunk)


def _bare_git(folder: Path) -> bool:
    return (folder / "HEAD").is_file() and (folder / "objects").is_dir() and not (folder / "exercises").exists()


def _git_archive(repo: Path, dest: Path) -> None:
    """The files of a bare repository's HEAD, in ``dest`` (git runs no hook of the repository here)."""
    git = shutil.which("git")
    if git is None:
        raise NotGradable("a bare git repository, and git is not installed here")
    proc = subprocess.run([git, "--git-dir", str(repo), "archive", "--format=tar", "HEAD"], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    if proc.returncode != 0:
        raise NotGradable(f"git archive HEAD failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")


def prepare(sub: Submission, work: Path) -> tuple[Path, str, list[str]]:
    """The tree to grade for ``sub``, made in ``work``: the course's stubs with its modules over
    them. Returns (the tree, its layout, notes). Raises ``NotGradable``."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = sub.path
    if src.is_file():
        unzip(src, work / "unpacked")
        src = work / "unpacked"  # (find_tree takes a zip of one folder holding exercises/, as GitHub's are)
    if _bare_git(src):
        _git_archive(src, work / "unpacked-git")
        src = work / "unpacked-git"
    found, layout = gradescope.find_tree(src)
    if found is None:
        raise NotGradable(layout)
    tree = work / "tree" / "exercises"
    taken, stubs, ignored = gradescope.assemble(found, tree)
    if not taken:
        raise NotGradable(f"the submission is {layout}, but it holds no .py files")
    notes = []
    if stubs:
        notes.append(f"graded as the stubs (not submitted): {', '.join(stubs)}")
    if ignored:
        notes.append(f"left out: {', '.join(ignored)}")
    return tree, layout, notes


def tree_hash(tree: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(tree.iterdir()):
        if p.is_file():
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def grader_hash() -> str:
    """The grader this checkout grades with: its tests, harness, reference outputs and config."""
    h = hashlib.sha256()
    for top in ("tests", "reference"):
        for p in sorted((SOURCE / top).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc" and "meta" not in p.parts:
                h.update(str(p.relative_to(SOURCE)).encode() + b"\0" + p.read_bytes())
    for name in ("pyproject.toml", "noxfile.py"):
        h.update((SOURCE / name).read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------ one grade


def grade(tree: Path, report: Path, log: Path, *, seed: int, exercises: list[str], sandboxed: bool,
          timeout: float) -> tuple[int | None, str]:
    """Grade ``tree`` as ``nox -s grade`` does, its output in ``log``. Returns the exit status (None
    when it ran past ``timeout`` and was stopped) and the output."""
    chosen = [arg for ex in exercises for arg in ("--exercise", ex)]
    cmd, env, prefix = gradescope.invocation(tree, report, "--seed", str(seed), "--grade-timeout", f"{timeout:g}",
                                             *chosen, sandboxed=sandboxed)
    code: int | None
    try:
        with open(log, "w", encoding="utf-8", errors="replace") as out:
            proc = subprocess.Popen(cmd, cwd=SOURCE, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            with _LOCK:
                _RUNNING.add(proc)
            try:
                code = proc.wait(timeout=timeout + 60)  # the grade's own watchdog ends it first
            except subprocess.TimeoutExpired:
                _stop(proc)
                code = None
            finally:
                with _LOCK:
                    _RUNNING.discard(proc)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
    return code, log.read_text(encoding="utf-8", errors="replace")


_RUNNING: set[subprocess.Popen] = set()  # the grades in progress, stopped on Ctrl-C
_LOCK = threading.Lock()
_INTERRUPTED = threading.Event()


def _stop(proc: subprocess.Popen) -> None:
    """End a grade and everything it started (its own session: the worker, the sandbox)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def read_grade(row: Row, report_path: Path, output: str, code: int | None, timeout: float) -> Row:
    """Fill ``row`` from what the grade wrote; a grade that did not finish, or was voided, keeps no points."""
    if code is None:
        row.status, row.note = "not graded", f"the grade ran past {timeout:g} s and was stopped"
        return row
    try:
        data = report_path.read_bytes()
        report = json.loads(data)
    except (OSError, ValueError):
        row.status = "not graded"
        row.note = f"the grader wrote no report (exit status {code}): {_last_lines(output)}"
        return row
    sums = re.findall(r"sha256 ([0-9a-f]{64})", output)
    if not sums or sums[-1] != hashlib.sha256(data).hexdigest():
        row.status, row.note = "void", "results.json is not the report the grade wrote (its sha256 differs)"
        return row
    extra = report.get("extra_data", {})
    row.scoreboard = str(report.get("output", ""))
    if extra.get("void"):
        row.status, row.note = "void", "grade void: " + "; ".join(map(str, extra["void"]))[:500]
        return row
    if not extra.get("finished"):
        row.status, row.note = "not graded", str(report.get("output", "the grade did not finish")).strip()[:500]
        return row
    if extra.get("sandbox", "none") == "none":
        row.note = "graded without the sandbox (--unsandboxed)"
    row.status = "graded"
    for test in report.get("tests", []):
        eid = str(test.get("number"))
        row.points[eid] = float(test.get("score", 0))
        row.statuses[eid] = str(test.get("extra_data", {}).get("kata_status", test.get("status", "")))
        for check in test.get("extra_data", {}).get("check_results", []):
            mistake = check.get("mistake", "")  # named by the grader from the check's own message
            if mistake and check.get("status") != "passed":
                row.mistakes.append({"exercise": eid, "check": check.get("name", ""), "mistake": mistake,
                                     "message": shown(check.get("message", ""))})
    refused = [str(t.get("number")) for t in report.get("tests", [])
               if any(REFUSED in c.get("message", "") for c in t.get("extra_data", {}).get("check_results", []))]
    if refused:  # the tree tried what the grader forbids: scored as failing there, and said so
        row.note = "; ".join(filter(None, [row.note, f"code refused by the grader's allow-list in {', '.join(refused)}"]))
    row.total = round(sum(row.points.values()), 2)
    return row


def shown(message: str, limit: int = 1500) -> str:
    """A check's message as the learner read it, without what their code printed."""
    text = re.split(r"\n\n(?:Your code printed|What process \d+ printed):", message or "")[0].strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def grade_submission(sub: Submission, out: Path, opts: argparse.Namespace, grader: str) -> Row:
    folder = out / "submissions" / sub.id
    folder.mkdir(parents=True, exist_ok=True)
    work = out / ".work" / sub.id
    started = time.monotonic()
    row = Row(sub.id, "not graded", learners=sub.learners)
    try:
        try:
            tree, layout, notes = prepare(sub, work)
        except NotGradable as e:  # graded again by every run: it has no valid grade
            row.note = str(e)
            return row
        row.layout = layout
        row.key = hashlib.sha256(f"{tree_hash(tree)}|{grader}|{opts.seed}|{sorted(opts.exercise)}|"
                                 f"{not opts.unsandboxed}".encode()).hexdigest()
        old = _load_row(folder)
        if old is not None and old.key == row.key and old.status == "graded":
            row = old  # unchanged since it was graded: kept as it was
            row.reused, row.learners = True, sub.learners
            return row
        report = folder / "results.json"
        report.unlink(missing_ok=True)
        code, output = grade(tree, report, folder / "grade.log", seed=opts.seed, exercises=opts.exercise,
                             sandboxed=not opts.unsandboxed, timeout=opts.timeout)
        if _INTERRUPTED.is_set():
            row.note = "interrupted (Ctrl-C) while it was graded: the next run grades it"
            return row
        read_grade(row, report, output, code, opts.timeout)
        if notes and row.status == "graded":
            row.note = "; ".join(filter(None, [row.note, *notes]))
        return row
    except Exception as e:  # the class goes on: this row says what went wrong
        row.status, row.note = "not graded", f"the class grader failed on it ({type(e).__name__}: {e})"
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not row.seconds:
            row.seconds = round(time.monotonic() - started, 1)
        (folder / "row.json").write_text(json.dumps({"version": ROW_VERSION, **asdict(row)}, indent=1) + "\n")


def _load_row(folder: Path) -> Row | None:
    try:
        data = json.loads((folder / "row.json").read_text())
    except (OSError, ValueError):
        return None
    if data.pop("version", None) != ROW_VERSION:
        return None
    try:
        return Row(**{**data, "reused": False})
    except TypeError:
        return None


# ------------------------------------------------------------------------------ outputs


def text_cell(text: str) -> str:
    """A text cell a spreadsheet shows as text: one that begins like a formula (``=``, ``+``,
    ``-``, ``@``, a tab or a return) gets a leading ``'``. Names of the submission's files and text
    its code raised reach the notes and messages, and a spreadsheet would run a formula there."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_csvs(out: Path, rows: list[Row], exercises: list[manifest.Exercise]) -> None:
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["submission", "name", "email", "sid", "total", *[e.id for e in exercises], "status", "note"])
        for r in rows:
            cells = ["" if e.id not in r.points else f"{r.points[e.id]:g}" for e in exercises]
            who = [text_cell(r.learners.get(key, "")) for key in ("name", "email", "sid")]
            w.writerow([text_cell(r.id), *who, "" if r.total is None else f"{r.total:g}", *cells, r.status,
                        text_cell(r.note)])
    with open(out / "mistakes.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["submission", "exercise", "check", "mistake", "message"])
        for r in rows:
            for m in r.mistakes:
                w.writerow([text_cell(r.id), m["exercise"], m["check"], text_cell(m["mistake"]), text_cell(m["message"])])


def _seed(out: Path, given: int | None) -> int:
    if given is not None:
        return given
    try:
        return int(json.loads((out / "class.json").read_text())["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return secrets.randbelow(2**31 - 1) + 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nox -s class --", description="Grade every submission of a class.")
    p.add_argument("submissions", type=Path, help="a folder of submissions (folders or .zip files), or a .zip of one")
    p.add_argument("--out", type=Path, default=Path("class-grades"), help="where the outputs go (default: class-grades)")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1; each grade uses the cores)")
    p.add_argument("--exercise", "-e", action="append", default=[],
                   help="grade only this exercise (id or slug; repeat for more); default: the whole course")
    p.add_argument("--seed", type=int, help="the inputs' seed, the same for every submission (default: the "
                                            "class's, kept in DIR/class.json, or a new one)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds one grade may take (default 1800)")
    p.add_argument("--unsandboxed", action="store_true",
                   help="grade without the sandbox where none can start (the submissions' code then runs as you)")
    opts = p.parse_args(argv)
    if opts.jobs < 1:
        p.error(f"--jobs {opts.jobs}: expected a whole number of at least 1")
    try:
        opts.exercise = sorted({ex.id for key in opts.exercise for ex in manifest.select(key)})
    except Exception as e:
        p.error(str(e))
    return opts


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    out = opts.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not opts.unsandboxed:
        refused = gradescope.sandbox_refused()
        if refused is not None:
            print(f"nox -s class: no sandbox can run here, so no submission is graded: {refused.split('({')[0]}\n"
                  "Grading a class runs each learner's code; without the sandbox it runs as you, with your files. "
                  "Pass --unsandboxed to grade anyway.", file=sys.stderr)
            return 2
    try:
        subs, skipped = discover(opts.submissions.expanduser().resolve(), out / ".work")
    except NotGradable as e:
        print(f"nox -s class: {e}", file=sys.stderr)
        return 2
    if not subs:
        print(f"nox -s class: no submissions in {opts.submissions} (expected a folder or .zip per submission)",
              file=sys.stderr)
        return 2
    opts.seed = _seed(out, opts.seed)
    exercises = [e for e in manifest.load() if not opts.exercise or e.id in opts.exercise]
    (out / "class.json").write_text(json.dumps({"seed": opts.seed, "exercises": [e.id for e in exercises],
                                                "submissions": str(opts.submissions)}, indent=1) + "\n")
    for line in skipped:
        print(f"skipped {line}")
    grader = grader_hash()
    print(f"grading {len(subs)} submissions, {opts.jobs} at a time, seed {opts.seed}"
          + (f", exercises {' '.join(opts.exercise)}" if opts.exercise else "") + f" -> {out}")
    rows: dict[str, Row] = {}
    lock = threading.Lock()
    bar = _bar(len(subs))
    possible = sum(e.points for e in exercises)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=opts.jobs) as pool:
        futures = {pool.submit(grade_submission, s, out, opts, grader): s for s in subs}
        try:
            for fut in concurrent.futures.as_completed(futures):
                row = fut.result()
                with lock:
                    rows[row.id] = row
                    total = f"{row.total:g}/{possible:g}" if row.total is not None else "-"
                    note = f"  ({row.note})" if row.note else ""
                    took = "unchanged, kept" if row.reused else f"{row.seconds:.0f} s"
                    _say(bar, f"{row.id:<24} {total:>9}  {row.status}{note}  {took}")
                    bar.update(1)
        except KeyboardInterrupt:
            _INTERRUPTED.set()
            pool.shutdown(wait=False, cancel_futures=True)
            with _LOCK:
                running = list(_RUNNING)
            for proc in running:
                _stop(proc)
            bar.close()
            print("\ninterrupted: the submissions graded so far are kept (submissions/*/row.json); run the same "
                  "command again to grade the rest", file=sys.stderr)
            return 130
    bar.close()
    ordered = [rows[s.id] for s in subs]
    write_csvs(out, ordered, exercises)
    page = classpage.write(out / "index.html", ordered, exercises, seed=opts.seed)
    graded = sum(r.status == "graded" for r in ordered)
    print(f"{graded} of {len(ordered)} graded in {time.monotonic() - started:.0f} s: {out / 'grades.csv'}, "
          f"{out / 'mistakes.csv'}, {page}")
    shutil.rmtree(out / ".work", ignore_errors=True)
    return 0


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="submission", dynamic_ncols=True, file=sys.stderr)


def _say(bar, line: str) -> None:
    if isinstance(bar, _NoBar):
        print(line, flush=True)
    else:
        bar.write(line, file=sys.stdout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
