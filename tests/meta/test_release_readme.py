"""The learners' release, used as its pages say: every `nox -s` command in their code blocks runs.

A release is written to a scratch directory (its `.nox/kata` is this checkout's environment, so
nothing is installed), and each command its README and its other pages (the tracks' pages in
exercises/tracks/, the instructors' in tests/harness/) show runs there, as a learner would type it,
with the exit status and the words this table expects. A command the table does not know fails
the test: a new command in the README gets its expectation here. The release's default tree is
the stubs, so most commands stop early, each with a one-line reason. Nowhere in their text do the
release's pages name a command that only the maintainers' repository can run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import release

NOX = shutil.which("nox")

# session -> (exit status, words the output must hold); first match of the command's arguments wins
EXPECT: list[tuple[str, str, int, tuple[str, ...]]] = [
    # (session, a regex on the arguments, exit status, words)
    ("grade", r"--impl \.\./student-copy", 1, ("--impl ../student-copy/exercises",)),
    ("grade", r"--in-process", 1, ("not a valid grade", "next: ")),
    ("grade", r".*", 1, ("not started", "next: ", "Session grade failed")),
    ("gpt2", r".*", 1, ("network connection",)),  # no network here: it says how to get the weights
    ("hf", r".*", 1, ("Qwen/Qwen3-0.6B", "Hugging Face")),  # nor Qwen3's weights: it says they are not there
    ("train", r"--data my\.txt", 1, ("--data my.txt: no such file",)),
    ("train", r"--resume", 1, ("out/train/ckpt.pt",)),
    ("train", r"--nproc", 1, ("still a stub", "exercise 18 (ddp)")),  # torchrun: 18's setup comes first
    ("train", r".*", 1, ("still a stub", "exercise 04 (bpe_train)")),
    ("sample", r".*", 1, ("no checkpoint at", "nox -s train")),
    ("finetune", r".*", 1, ("no such checkpoint", "nox -s train")),  # the release has no trained model yet
    ("chat", r"out/reason", 1, ("no checkpoint at", "nox -s reason")),
    ("chat", r".*", 1, ("no checkpoint at", "nox -s finetune")),
    ("reason", r".*", 1, ("still a stub", "exercise 09 (gpt)")),  # the base model is exercise 09's GPT
    ("hint", r".*", 0, ("hint",)),
    ("class", r".*", 1, ("no such file or folder",)),  # the README's examples name folders of its own
]
# What a release cannot run (they need solutions/, the benchmarks, or rewrite what it ships): its README names none.
MAINTAINERS_ONLY = ("nox -s bench", "nox -s tests", "nox -s stubs", "nox -s gradescope", "nox -s reference",
                    "nox -s release", "nox -s new", "--impl solutions")


def readme_commands(text: str) -> list[list[str]]:
    """Every `nox -s ...` line of the README's code blocks, as argv (comments and env vars cut)."""
    commands, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside and "nox -s " in line:
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words.pop(0)  # KATA_TORCH_INDEX=...: the environment exists already
            if words[:2] == ["nox", "-s"]:
                commands.append(words)
    return commands


def expectation(argv: list[str]) -> tuple[int, tuple[str, ...]]:
    session, rest = argv[2], " ".join(argv[3:])
    for name, pattern, code, words in EXPECT:
        if name == session and re.search(pattern, rest):
            return code, words
    raise AssertionError(f"the release's README shows `{' '.join(argv)}`, which this test does not know: add what it must give to EXPECT")


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    dest = tmp_path_factory.mktemp("release") / "gpt-kata"
    release.write(dest)
    (dest / ".nox").mkdir()
    (dest / ".nox" / "kata").symlink_to(release.ROOT / ".nox" / "kata")  # no install: this checkout's environment
    return dest


@pytest.mark.skipif(NOX is None, reason="nox is not on PATH (CI installs it: .ci/run)")
def shipped_pages(released) -> dict[str, str]:
    """Each markdown page of the release (README.md first), by its path there."""
    return {p.relative_to(released).as_posix(): p.read_text(encoding="utf-8") for p in release.pages(released)}


def test_the_release_ships_the_tracks_pages(released):
    names = set(shipped_pages(released))
    want = {f"exercises/tracks/{p.name}" for p in (release.ROOT / "solutions" / "tracks").glob("*.md")}
    assert want and want <= names, f"the tracks' pages are not all in the release: {sorted(want - names)}"


@pytest.mark.timeout(1800)  # a dozen nox commands: about 100 s on a quiet 2-core machine, 480-640 s at a load of 10
def test_every_command_of_the_release_readme_does_what_it_says(released):
    commands = [argv for text in shipped_pages(released).values() for argv in readme_commands(text)]
    assert len(commands) >= 8, f"the release's pages show only {commands}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KATA_", "PYTEST", "NOX"))}
    env["KATA_REQUIRE_SANDBOX"] = os.environ.get("KATA_REQUIRE_SANDBOX", "")
    seen = set()
    for argv in commands:
        if tuple(argv) in seen:
            continue
        seen.add(tuple(argv))
        code, words = expectation(argv)
        run = subprocess.run([NOX, *argv[1:]], cwd=released, capture_output=True, text=True, timeout=300, env=env)
        out = run.stdout + run.stderr
        assert run.returncode == code, f"`{' '.join(argv)}` exited {run.returncode}, expected {code}:\n{out[-3000:]}"
        for w in words:
            assert w in out, f"`{' '.join(argv)}` did not say {w!r}:\n{out[-3000:]}"
        assert "expected solutions or exercises" not in out, out[-2000:]
        assert "could not start the worker" not in out, out[-2000:]


def test_the_release_keeps_gitattributes_and_leaves_the_maintainers_out(released):
    assert (released / ".gitattributes").read_text() == (release.ROOT / ".gitattributes").read_text()
    readme = (released / "README.md").read_text(encoding="utf-8")
    assert "## Maintainers" not in readme
    for name, text in shipped_pages(released).items():
        assert "release: leave out" not in text and "<!--" not in text, f"{name} keeps a marker"
        assert "from solutions." not in text, name


def test_the_release_readme_names_no_command_only_the_maintainers_can_run(released):
    """In code blocks, sentences or tables alike (a command wrapped over two lines counts too), in
    the README and in every other page the release ships."""
    named = []
    for name, page in shipped_pages(released).items():
        text = " ".join(page.split())
        named += [(name, w, text[max(text.find(w) - 80, 0):text.find(w) + 60]) for w in MAINTAINERS_ONLY if w in text]
    where = "\n".join(f"{name}: {w!r}: ...{around}..." for name, w, around in named)
    assert not named, f"the release's pages name what it cannot run (mark it release: leave out in this repository):\n{where}"


def test_inline_and_block_parts_are_left_out_of_the_release_readme():
    out, end = "<!-- release: leave out -->", "<!-- release: end -->"
    text = (f"Intro.\n\n{out}\nMaintainers only.\n{end}\n\nMeasured{out} by `nox -s bench`{end} on one core.\n"
            f"<!-- times -->\n| a | b |\n|---|---|\n| x{out} (*bench*){end} | 1 s |\n<!-- end of times -->\n\n"
            "```bash\n\n\nnox -s grade\n```\n")
    want = "Intro.\n\nMeasured on one core.\n| a | b |\n|---|---|\n| x | 1 s |\n\n```bash\n\n\nnox -s grade\n```\n"
    assert release.release_readme(text) == want


def test_release_with_work_in_exercises_says_what_would_be_lost(tmp_path, monkeypatch):
    from harness import stubs

    monkeypatch.setattr(stubs, "out_of_sync", lambda *a, **k: ["attention.py: differs"])
    with pytest.raises(SystemExit) as stop:
        release.write(tmp_path / "out")
    message = str(stop.value)
    assert "exercises/attention.py" in message and "lost" in message and "copy" in message, message
    assert not (tmp_path / "out").exists()


def test_a_release_command_that_needs_solutions_says_so(released):
    if NOX is None:
        pytest.skip("nox is not on PATH")
    run = subprocess.run([NOX, "-s", "train", "--", "--impl", "solutions"], cwd=released, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "solutions/ is not part of this release" in run.stdout + run.stderr, run.stdout + run.stderr
    run = subprocess.run([NOX, "-s", "tests"], cwd=released, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "not part of this release" in run.stdout + run.stderr, run.stdout + run.stderr
    run = subprocess.run([NOX, "-s", "bench"], cwd=released, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "not part of this release" in run.stdout + run.stderr, run.stdout + run.stderr


def test_a_release_refuses_to_rewrite_its_reference_outputs(released):
    if NOX is None:
        pytest.skip("nox is not on PATH")

    def digests() -> dict[str, str]:
        files = sorted(p for p in Path(released, "reference").iterdir() if p.is_file())
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before = digests()
    run = subprocess.run([NOX, "-s", "reference"], cwd=released, capture_output=True, text=True, timeout=120)
    said = run.stdout + run.stderr
    assert run.returncode != 0 and "reference/ is not rewritten in a release" in said, said
    reason = next(line for line in said.splitlines() if "reference/ is not rewritten" in line)
    assert "maintainers' command" in reason, said  # the whole reason on one line
    assert digests() == before
