"""Every command a learner, instructor or maintainer runs.

    nox -s grade                      grade exercises/ (the stubs you fill in): the scoreboard
    nox -s grade -- 01 layernorm      grade some exercises, by id or slug
    nox -s grade -- --impl solutions  grade another tree: solutions, or any PATH with the same modules
    nox -s grade -- --report r.json   also write Gradescope's results.json
    nox -s tests                      the project's own test suite (what CI runs)
    nox -s stubs                      rewrite exercises/ from the markers in solutions/
    nox -s reference                  rewrite reference/ from the oracles
    nox -s bench                      the benchmarks (tests/bench/bench_*.py); `-- NAME` for some
    nox -s gpt2 -- "prompt"           OpenAI's GPT-2 (downloaded once) completes a prompt, run by solutions/
    nox -s hint -- ID                 the next hint for an exercise (`--all`, `--reset`)
    nox -s watch                      re-grade the exercise whose file you save
    nox -s release -- DIR             the learners' repository (no solutions), with a fresh history

All sessions share one virtual environment, .nox/kata, made on first use and reused after; it is
remade only when pyproject.toml's dependencies change. torch comes from a wheel already on this
machine when pip's find-links has one (a CPU build, say), else from the package index; set
KATA_TORCH (e.g. KATA_TORCH="torch==2.5.1") to choose it yourself.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
ENV = ROOT / ".nox" / "kata"
PYPROJECT = ROOT / "pyproject.toml"
# Installed without their dependencies: only a data file of openai-whisper is used (GPT-2's ranks).
NO_DEPS = ("openai-whisper",)

nox.options.sessions = ["grade"]
nox.options.default_venv_backend = "none"


def _python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def kata_env(session: nox.Session, extras: tuple[str, ...] = ()) -> str:
    """The shared environment's python, made or updated only when needed."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    deps = list(project["dependencies"])
    for extra in extras:
        deps += project["optional-dependencies"][extra]
    torch_spec = os.environ.get("KATA_TORCH") or next(d for d in deps if d.startswith("torch"))
    py = _python(ENV)
    stamp_file = ENV / "kata-env.json"
    stamp = {"python": list(sys.version_info[:2]), "deps": sorted(deps), "torch": torch_spec}
    try:
        have = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        have = {}
    if py.exists() and have.get("python") == stamp["python"] and have.get("torch") == torch_spec and set(stamp["deps"]) <= set(have.get("deps", [])):
        return str(py)
    if sys.version_info < (3, 11):
        session.error(f"Python 3.11 or newer is needed; nox runs on {sys.version.split()[0]} (try `pipx install nox --python python3.11`)")
    if not py.exists() or have.get("python") != stamp["python"]:
        session.log(f"making the shared environment {ENV.relative_to(ROOT)} (once)")
        session.run(sys.executable, "-m", "venv", "--clear", str(ENV))
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    # Prefer a torch wheel that is already on this machine (pip's find-links), so that a CPU-only
    # machine does not download a multi-GB CUDA build; fall back to the index when there is none.
    code = session.run(*pip, "--no-index", "--no-deps", torch_spec, success_codes=[0, 1], silent=True)
    if code is not True and code != 0:
        session.log(f"no local wheel for {torch_spec}: installing it from the package index")
    session.run(*pip, torch_spec, *[d for d in deps if not d.startswith(("torch", *NO_DEPS))])
    if no_deps := [d for d in deps if d.startswith(NO_DEPS)]:
        session.run(*pip, "--no-deps", *no_deps)
    stamp["deps"] = sorted(set(stamp["deps"]) | set(have.get("deps", [])) if have.get("torch") == torch_spec else stamp["deps"])
    stamp_file.write_text(json.dumps(stamp, indent=1))
    return str(py)


def _exercise_args(posargs: list[str]) -> list[str]:
    """`nox -s grade -- 01 layernorm --impl solutions`: bare words are exercises, the rest pytest's."""
    out: list[str] = []
    takes_value = {"--impl", "--report", "--seed", "--exercise", "--probe-timeout", "--worker-memory", "-k", "-m", "-p"}
    prev = None
    for arg in posargs:
        if not arg.startswith("-") and prev not in takes_value:
            out += ["--exercise", arg]
        else:
            out.append(arg)
        prev = arg
    return out


def pytest(session: nox.Session, py: str, *args: str) -> None:
    # An explicit config and rootdir: with `--impl PATH` outside the checkout, pytest would
    # otherwise look for its configuration next to PATH and not find the harness.
    config = ("-c", str(PYPROJECT), "--rootdir", str(ROOT))
    session.run(py, "-m", "pytest", *config, *args, external=True)


@nox.session
def grade(session: nox.Session) -> None:
    """Grade a tree (exercises/ by default) and print the scoreboard; exit 0 only if all pass."""
    py = kata_env(session)
    pytest(session, py, str(ROOT / "tests"), "--grade", "-q", *_exercise_args(session.posargs))


def needs_solutions(session: nox.Session) -> None:
    if not (ROOT / "solutions").is_dir():
        session.error("solutions/ is not part of this release: this session is for the course's maintainers")


@nox.session
def tests(session: nox.Session) -> None:
    """The project's own suite: the graded checks on solutions/, stubs in sync, the harness's own tests."""
    needs_solutions(session)
    py = kata_env(session)
    pytest(session, py, str(ROOT / "tests"), "--impl", "solutions", *session.posargs)


@nox.session
def stubs(session: nox.Session) -> None:
    """Write exercises/ from solutions/ (each marked region becomes a NotImplementedError)."""
    needs_solutions(session)
    py = kata_env(session)
    session.run(py, str(ROOT / "tests" / "harness" / "stubs.py"), *session.posargs, external=True)


@nox.session
def reference(session: nox.Session) -> None:
    """Rewrite the reference outputs in reference/ from the oracles (PyTorch, tiktoken, transformers)."""
    py = kata_env(session, extras=("reference",))
    session.run(py, str(ROOT / "reference" / "generate.py"), *session.posargs, external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Speed and memory targets, measured (never asserted in the tests): tests/bench/bench_*.py."""
    py = kata_env(session, extras=("reference",))
    scripts = sorted((ROOT / "tests" / "bench").glob("bench_*.py"))
    if session.posargs:
        scripts = [s for s in scripts if any(arg in s.stem for arg in session.posargs)]
    if not scripts:
        session.error("no benchmark matches: " + " ".join(session.posargs))
    for script in scripts:
        session.run(py, str(script), external=True, env={"PYTHONPATH": str(ROOT / "tests")})


@nox.session
def gpt2(session: nox.Session) -> None:
    """OpenAI's GPT-2 through a tree's model, loader and generate: `nox -s gpt2 -- "prompt"`.

    Options (after --): --model 124M|355M|774M|1558M, --max-new-tokens N, --temperature T,
    --top-k K, --top-p P, --seed S, --device auto|cpu|cuda|mps, --impl solutions|exercises.
    The weights are downloaded once into the Hugging Face cache (about 550 MB for 124M).
    """
    args, tree = list(session.posargs), "solutions"
    if "--impl" in args:
        at = args.index("--impl")
        tree = args[at + 1] if at + 1 < len(args) else ""
        del args[at : at + 2]
    if tree not in ("solutions", "exercises") or not (ROOT / tree).is_dir():
        session.error(f"--impl {tree}: expected solutions or exercises (a tree of this checkout)")
    py = kata_env(session, extras=("reference",))
    # GPT-2's ranks, found offline by the one helper that tests and benchmarks use too
    ranks = session.run(py, str(ROOT / "reference" / "gpt2_encoding.py"), silent=True, external=True).strip().splitlines()[-1]
    session.run(py, "-m", f"{tree}.pretrained", "--ranks", ranks, *args, external=True)


@nox.session
def hint(session: nox.Session) -> None:
    """The next hint for an exercise: `nox -s hint -- 01` (`--all` to see them again, `--reset`)."""
    py = kata_env(session)
    session.run(py, str(ROOT / "tests" / "harness" / "hints.py"), *session.posargs, external=True)


@nox.session
def watch(session: nox.Session) -> None:
    """Re-grade the exercise whose file you save (`-- --impl PATH` to watch another tree)."""
    py = kata_env(session, extras=("watch",))
    session.run(py, str(ROOT / "tests" / "harness" / "watch.py"), *session.posargs, external=True)


@nox.session
def release(session: nox.Session) -> None:
    """Write the learners' repository to DIR: no solutions, tests intact, a fresh git history."""
    needs_solutions(session)
    py = kata_env(session)
    session.run(py, str(ROOT / "tests" / "harness" / "release.py"), *session.posargs, external=True)
