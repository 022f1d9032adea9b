"""``nox -s watch``: re-grade the exercise whose file you save, and print its scoreboard line.

Watches the tree under test (``exercises/`` by default, ``--impl PATH`` for another) with
watchfiles; on each save, the exercises of the changed module are graded with the same checks as
``nox -s grade`` and their lines printed. Ctrl-C stops it.

What the learner just changed comes first: the functions and classes of the saved file whose code
differs from the last save (their syntax trees compared, never imported) are matched with the
checks that called them (or whose message names them); the first such check that fails is printed,
its whole message with any "This looks like", as soon as it ends, before the exercise's line.

To answer within a second or two, this process stays warm: it has imported torch, pytest and the
grader once, and keeps worker hosts started (each with torch imported) for the next grade. A save
forks a child of it that runs the grade (``pytest.main``) and adopts those hosts, so each grade is
still a fresh grader process with fresh workers; then new hosts start for the next save. Where
fork is not available (Windows) each grade is a fresh pytest process.
"""

from __future__ import annotations

import ast
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from harness import manifest, options
else:
    from . import manifest, options

MARK = {"passed": "✓", "failing": "✗", "not started": "·", "error": "!", "no checks": "?"}


def exercises_for(paths: list[Path | str]) -> list[manifest.Exercise]:
    """The exercises whose module is one of the changed files, in course order."""
    stems = {Path(p).stem for p in paths if str(p).endswith(".py")}
    return [e for e in manifest.load() if e.module in stems]


WARM = hasattr(os, "fork") and sys.platform.startswith("linux")


# --------------------------------------------------------------------------- what the save changed


def definitions(source: str) -> dict[str, str] | None:
    """The functions and classes defined at the top of ``source``, and the methods of its classes
    (as ``Class.method``): name -> a dump of its syntax tree, line numbers left out (so code that
    only moved is unchanged). None when ``source`` does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, kinds):
            if isinstance(node, ast.ClassDef):
                for inner in node.body:
                    if isinstance(inner, kinds):
                        found[f"{node.name}.{inner.name}"] = ast.dump(inner)
            found[node.name] = ast.dump(node)
    return found


def changed_functions(before: str | None, after: str) -> list[str] | None:
    """The names (``definitions``) whose code differs between two versions of a file, added and
    removed ones included, methods before their class, in the order of the file; None when either
    version does not parse or there is no earlier one (then every check of the file counts)."""
    old = definitions(before) if before is not None else None
    new = definitions(after)
    if old is None or new is None:
        return None
    names = [name for name, dump in new.items() if old.get(name) != dump]
    return names + [name for name in old if name not in new]


def met(name_list: list[str] | None, called: list[str], message: str) -> str | None:
    """The first of the changed ``name_list`` that a check met: a target it called
    (``module.name`` or ``module.Class.method``: the name, or its class) or a name its message's
    first line gives (``gelu(x) for x ...``). With no list (the file did not parse) any check
    counts: "" is returned."""
    if name_list is None:
        return ""
    first = message.strip().splitlines()[0] if message.strip() else ""
    targets = [t.split(".", 1)[1] for t in called if "." in t]
    for name in name_list:
        top = name.split(".")[0]
        if any(t == name or t.split(".")[0] == top for t in targets):
            return name
        if re.search(rf"(?<![\w.]){re.escape(name)}\b", first):
            return name
    return None


class Follow:
    """A pytest plugin for the forked grade: as soon as a check of the grade ends failing and it
    met one of the ``names`` changed by the save (``met``), it sends that check through the file
    descriptor ``fd`` (one JSON line); once, for the first. When the grade has written its report it
    sends ``{"done": ...}`` with the changed names that some check met, all of whose checks passed.
    It only reads what the grader recorded: it changes nothing of the grade."""

    def __init__(self, fd: int, names: list[str] | None):
        self.fd, self.names = fd, names
        self.sent = False
        self.seen: dict[str, int] = {}  # exercise id -> its checks already looked at
        self.passing: dict[str, bool] = {}  # a changed name met by a check -> every such check passed

    def send(self, message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data):]

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item, call):
        """After the grader's own hook (this one is its outer wrapper) has recorded the check."""
        rep = yield
        try:
            self.look(item)
        except Exception:  # noqa: BLE001 (what watch shows must never change the grade)
            pass
        return rep

    def look(self, item) -> None:
        from harness import plugin

        impl = getattr(item, "funcargs", {}).get("impl")
        called = list(getattr(impl, "called", []))
        for eid, outcome in plugin._kata(item.config).outcomes.items():
            new = outcome.checks[self.seen.get(eid, 0):]
            self.seen[eid] = len(outcome.checks)
            for check in new:
                name = met(self.names, called, check.message)
                if name is None:
                    continue
                if name:
                    self.passing[name] = self.passing.get(name, True) and check.status == "passed"
                if check.status != "passed" and not self.sent:
                    self.sent = True
                    self.send({"exercise": eid, "check": check.name, "status": check.status, "message": check.message,
                               "function": name})

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session) -> None:
        self.send({"done": [name for name, ok in self.passing.items() if ok]})


def show_check(message: dict) -> list[str]:
    """The lines of a failing check sent by ``Follow``: the function, the check, its whole message."""
    mark = MARK.get(message["status"], " ")
    what = f"{message['function']}: " if message.get("function") else ""
    lines = [f" {mark} {what}{message['check']} {message['status']}"]
    lines += [f"       {line}" for line in message["message"].rstrip().splitlines()]
    return lines


# --------------------------------------------------------------------------- the grade


def warm_up(tree: str, extra: list[str]) -> None:
    """Import the grader (and torch) once, and start worker hosts for the next grade."""
    if not WARM:
        return
    import importlib
    from importlib.metadata import entry_points

    from harness import runner, sandbox

    # what every grade imports, imported once here: each forked grade starts with it
    modules = ["torch._dynamo", "gpt_oracle", *(Path(e.test_file).stem for e in manifest.load())]
    modules += [ep.module for ep in entry_points(group="pytest11")]  # the plugins pytest loads itself
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # a test module that does not import is reported by the grade itself
            pass

    box = None if "--no-sandbox" in extra else sandbox.find()[0]
    path = options.tree_path(tree).resolve()
    runner.prestart(path, box, [(tuple(e.hidden_modules), tuple(e.worker_imports)) for e in manifest.load()])
    # What is here now lives as long as this process: the collector leaves it alone from now on, in
    # this process and in the grades forked from it (whose collections would walk all of torch).
    gc.collect()
    gc.freeze()


def run_grade(args: list[str], names: list[str] | None, show) -> None:
    """One grade with ``args`` for pytest: in a forked child of this warm process, or a new one.
    ``show(message)`` is called with each message of ``Follow`` as it comes."""
    if not WARM:
        subprocess.run([sys.executable, "-m", "pytest", *args], cwd=manifest.ROOT, capture_output=True, text=True)
        return
    ours, theirs = os.pipe()
    gc.freeze()  # what this process made since ``warm_up``
    pid = os.fork()
    if pid == 0:  # the child: a grader of its own, adopting the hosts this process started
        code = 1
        try:
            os.close(ours)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.chdir(manifest.ROOT)
            code = int(pytest.main(args, plugins=[Follow(theirs, names)]))
        finally:
            os._exit(code)
    os.close(theirs)
    with os.fdopen(ours, "rb") as pipe:
        for line in pipe:
            try:
                show(json.loads(line))
            except ValueError:
                pass
    os.waitpid(pid, 0)
    while True:  # the hosts the child used and killed are this process's children: collect them
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def scoreboard_lines(report: Path) -> list[str]:
    """The exercises' lines of a grade's report, each with its first failure's reason below."""
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ["the grader did not finish: run `nox -s grade` to see why"]
    lines = []
    for t in data.get("tests", []):
        status = t["extra_data"]["kata_status"]
        first = t["output"].splitlines()[0] if t.get("output") else ""
        reason = first.split(": ", 1)[1] if ": " in first and status != "passed" else ""
        lines.append(f" {MARK.get(status, ' ')} {t['number']}  {t['name'].split(': ', 1)[-1]}  {t['score']:g}/{t['max_score']:g}  {status}")
        if reason:
            lines.append(f"       {reason}")
    return lines


def report_checks(report: Path) -> list[dict]:
    """The failing checks of a report's exercises, as ``Follow`` sends them (no targets known)."""
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found = []
    for t in data.get("tests", []):
        for block in re.split(r"\n(?=\[)", t.get("output", ""))[1:]:
            head, _, body = block.partition("\n")
            m = re.fullmatch(r"\[([^]]+)\] (.+)", head)
            if m and m.group(1) != "passed":
                message = "\n".join(line.removeprefix("    ") for line in body.splitlines())
                found.append({"exercise": t["number"], "check": m.group(2), "status": m.group(1), "message": message})
    return found


def grade(tree: str, exercises: list[manifest.Exercise], extra: list[str], names: list[str] | None = None,
          out=print) -> None:
    """Grade ``exercises`` of ``tree`` as ``nox -s grade -- ID`` does, and ``out`` each line: first
    the failing check that met a function of ``names`` (those the save changed; None: any), as
    soon as it fails, then the exercises' lines, then which changed functions passed every check
    that called them."""
    sent: list[dict] = []
    done: list[str] = []

    def show(message: dict) -> None:
        if "done" in message:
            done.extend(message["done"])
        else:
            sent.append(message)
            out("\n".join(show_check(message)))

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        selection = [arg for e in exercises for arg in ("--exercise", e.id)]
        args = ["-c", str(manifest.ROOT / "pyproject.toml"), "--rootdir", str(manifest.ROOT), str(manifest.ROOT / "tests"),
                "--grade", "-q", "--assert=plain", "--impl", tree, "--report", str(report), *selection, *extra]
        run_grade(args, names, show)
        if not WARM:  # no check was followed as it ran: the report's, matched by their messages
            first = next((c for c in report_checks(report) if met(names, [], c["message"]) is not None), None)
            if first is not None:
                show({**first, "function": met(names, [], first["message"])})
        lines = scoreboard_lines(report)
    if done:
        lines.append(f"       {', '.join(done)}: every check that calls {'it' if len(done) == 1 else 'them'} passes")
    out("\n".join(lines))


def snapshot(path: Path) -> dict[Path, str]:
    """The text of every Python file of the tree, to compare the next save with."""
    texts = {}
    for file in path.rglob("*.py"):
        try:
            texts[file.resolve()] = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pass
    return texts


def main(argv: list[str]) -> int:
    try:
        from watchfiles import PythonFilter, watch
    except ImportError:
        print("watch needs watchfiles: run it as `nox -s watch`, which installs it", file=sys.stderr)
        return 2
    args = list(argv)
    tree, exit_after = "exercises", None
    if "--impl" in args:
        i = args.index("--impl")
        tree = args[i + 1]
        del args[i : i + 2]
    if "--exit-after" in args:
        i = args.index("--exit-after")
        exit_after = int(args[i + 1])
        del args[i : i + 2]
    path = options.tree_path(tree).resolve()
    if not path.is_dir():
        print(f"--impl {tree}: {path} is not a directory", file=sys.stderr)
        return 2
    warm_up(str(path), args)
    last = snapshot(path)
    print(f"watching {path} for saved changes (Ctrl-C to stop)", flush=True)
    regrades = 0
    try:
        for changes in watch(path, watch_filter=PythonFilter(), debounce=100, step=20, rust_timeout=0):
            saved = sorted({Path(p).resolve() for _, p in changes})
            now = {p: _read(p) for p in saved}
            saved = [p for p in saved if now[p] != last.get(p)]  # a file written again unchanged: nothing to do
            names: list[str] | None = []
            for p in saved:
                changed = changed_functions(last.get(p), now[p] or "") if now[p] is not None else None
                names = None if names is None or changed is None else names + changed
                last[p] = now[p]
            exercises = exercises_for(saved)
            if not exercises:
                continue
            what = ", ".join(e.name for e in exercises)
            print(f"\n{saved[0].name} changed: grading {what}", flush=True)
            grade(str(path), exercises, args, names, out=lambda text: print(text, flush=True))
            warm_up(str(path), args)  # hosts for the next save, starting now
            regrades += 1
            if exit_after is not None and regrades >= exit_after:
                return 0
    except KeyboardInterrupt:
        pass
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
