"""Every command a learner, instructor or maintainer runs.

    nox -s grade                      grade exercises/ (the stubs you fill in): the scoreboard
    nox -s grade -- 01 layernorm      grade some exercises, by id or slug
    nox -s grade -- --impl solutions  grade another tree: solutions, or any PATH with the same modules
    nox -s grade -- --report r.json   also write Gradescope's results.json
    nox -s tests                      the project's own test suite (what CI runs)
    nox -s stubs                      rewrite exercises/ from the markers in solutions/ (and its tracks' pages)
    nox -s new -- ID slug module "title"   scaffold exercise ID, the next (README: "Adding an exercise")
    nox -s reference                  rewrite reference/ from the oracles
    nox -s bench                      the benchmarks (tests/bench/bench_*.py); `-- NAME` for some
    nox -s gpt2 -- "prompt"           OpenAI's GPT-2 (downloaded once) completes a prompt, run by a tree
    nox -s hf -- MODEL "prompt"       a Llama or Qwen3 checkpoint of the Hugging Face Hub, run by a tree (19-25)
    nox -s train                      train a small GPT from scratch (about 8 minutes on 2 CPU cores): out/train/
    nox -s sample -- "prompt"         complete a prompt with the model `nox -s train` saved
    nox -s finetune                   fine-tune that model to answer questions (`-- --lora 4`, `-- --dpo`): out/finetune/
    nox -s chat                       talk to the fine-tuned model in the terminal, or `-- "prompt"` for one answer
    nox -s reason                     a small GPT learns 3-digit sums with its working shown: SFT, then GRPO (36-38): out/reason/
    nox -s hint -- ID                 the next hint for an exercise (`--all`, `--reset`)
    nox -s watch                      re-grade the exercise whose file you save
    nox -s env                        make or update the shared environment, and nothing else (CI builds it once so)
    nox -s classroom -- [DIR]         GitHub Classroom's workflow, from the manifest: DIR/.github/workflows/classroom.yml
    nox -s release -- DIR             the learners' repository (no solutions), with a fresh history
    nox -s gradescope -- autograder.zip   Gradescope's autograder (setup.sh, run_autograder, the grader)
    nox -s class -- SUBMISSIONS       grade a class: a folder of submissions -> grades.csv, mistakes.csv, index.html

All sessions share one virtual environment, .nox/kata, made on first use and reused after; it is
remade only when pyproject.toml's dependencies change. torch comes from a wheel already on this
machine when pip's find-links has one (a CPU build, say), else from the package index; set
KATA_TORCH (e.g. KATA_TORCH="torch==2.5.1") to choose it yourself, and KATA_TORCH_INDEX to take
torch, and only torch (with what it needs), from another index: PyTorch's CPU-only builds with
KATA_TORCH_INDEX=https://download.pytorch.org/whl/cpu (about 190 MB, where PyPI's Linux torch
brings several GB of CUDA libraries). Both are read when the environment is made or updated.
"""

from __future__ import annotations

import json
import os
import subprocess
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


CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _nvidia_gpu() -> bool:
    """Whether this machine has an NVIDIA GPU (its driver), for which PyPI's CUDA torch is worth its size."""
    import shutil

    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia/gpus").is_dir()


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
        if not all((ENV / name).exists() for name in ("kata-env-record.json", "kata-sandbox.json", "kata-pycache")):
            _record_environment(session, py)  # made before environments, their bwrap and bytecode were recorded
        return str(py)
    if sys.version_info < (3, 11):
        session.error(f"Python 3.11 or newer is needed; nox runs on {sys.version.split()[0]} (try `pipx install nox --python python3.11`)")
    if not py.exists() or have.get("python") != stamp["python"]:
        session.log(f"making the shared environment {ENV.relative_to(ROOT)} (once)")
        session.run(sys.executable, "-m", "venv", "--clear", str(ENV))
    elif py.exists() and have.get("python") == stamp["python"] and have.get("torch") == torch_spec:
        missing = sorted(set(stamp["deps"]) - set(have.get("deps", [])))
        session.log(f"`nox -s {session.name}` needs what the environment lacks; installing it, once (20-45 s): "
                    + ", ".join(missing))
    # --no-warn-conflicts: openai-whisper is installed without its dependencies on purpose (only
    # a data file of it is read), and pip would otherwise print a resolver ERROR about them.
    install = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-warn-conflicts"]
    pip, loud = [*install, "-q"], [*install, "--progress-bar", "on"]  # loud: pip's progress, for downloads
    # Prefer a torch wheel that is already on this machine (pip's find-links), so that a CPU-only
    # machine does not download a multi-GB CUDA build; fall back to the index when there is none.
    local = subprocess.run([*pip, "--no-index", "--no-deps", torch_spec], capture_output=True).returncode == 0
    downloaded = False
    if local:
        session.log(f"{torch_spec}: from a wheel already on this machine")
    elif not os.environ.get("KATA_TORCH_INDEX") and sys.platform.startswith("linux") and not _nvidia_gpu():
        # PyPI's Linux torch is the CUDA build (several GB): where no NVIDIA GPU is, the CPU build
        session.log(f"no local wheel for {torch_spec} and no NVIDIA GPU here: PyTorch's CPU build from {CPU_INDEX} "
                    "(about 190 MB; KATA_TORCH_INDEX=https://pypi.org/simple takes PyPI's CUDA build instead)")
        attempt = subprocess.run([*loud, "--index-url", CPU_INDEX, "--timeout", "30", "--retries", "1", torch_spec],
                                 stderr=subprocess.PIPE, text=True)  # the progress shown, pip's errors kept
        downloaded = attempt.returncode == 0
        if not downloaded:
            why = next((line for line in reversed(attempt.stderr.splitlines()) if line.startswith("ERROR")), "")
            session.log(f"PyTorch's CPU build could not be installed from {CPU_INDEX} ({why[:160] or 'pip failed'}): "
                        "torch from the package index instead (on Linux that is the CUDA build: several GB)")
    elif not os.environ.get("KATA_TORCH_INDEX"):
        session.log(f"no local wheel for {torch_spec}: installing it from the package index (on Linux, PyPI's torch "
                    f"brings CUDA: several GB; KATA_TORCH_INDEX={CPU_INDEX} takes the CPU build, about 190 MB)")
    # KATA_TORCH_INDEX: torch (and what it needs) from that index only, as pytorch.org's own
    # instructions do; PIP_INDEX_URL would apply to every package (tiktoken is not on PyTorch's
    # index) and PIP_EXTRA_INDEX_URL lets pip pick whichever index has the newer torch. A torch
    # installed above from a local wheel already satisfies the spec, and pip leaves it.
    if torch_index := os.environ.get("KATA_TORCH_INDEX"):
        session.log(f"torch from KATA_TORCH_INDEX={torch_index}")
        session.run(*loud, "--index-url", torch_index, torch_spec)
        downloaded = True
    # pip's progress shown while torch may still be downloading (minutes), quiet otherwise
    session.run(*(pip if local or downloaded else loud), torch_spec, *[d for d in deps if not d.startswith(("torch", *NO_DEPS))])
    if no_deps := [d for d in deps if d.startswith(NO_DEPS)]:
        session.run(*pip, "--no-deps", *no_deps)
    stamp["deps"] = sorted(set(stamp["deps"]) | set(have.get("deps", [])) if have.get("torch") == torch_spec else stamp["deps"])
    stamp_file.write_text(json.dumps(stamp, indent=1))
    _record_environment(session, py)
    return str(py)


def _record_environment(session: nox.Session, py: Path | str) -> None:
    """What every file of the environment looks like now: a grade that finds it changed is void
    (tests/harness/environment.py); with it, the bubblewrap its grades use (path and sha256: never
    one found on PATH at grade time) and the mirror of its bytecode."""
    session.run(str(py), "-I", "-B", str(ROOT / "tests" / "harness" / "environment.py"), "--record", silent=True, external=True)


def _exercise_args(posargs: list[str]) -> list[str]:
    """`nox -s grade -- 01 layernorm --impl solutions`: bare words are exercises, the rest pytest's."""
    import runpy

    out: list[str] = []
    # the grade's options that take a value (tests/harness/options.py, read from its source), and pytest's
    takes_value = runpy.run_path(str(ROOT / "tests" / "harness" / "options.py"))["TAKES_VALUE"] | {"-k", "-m", "-p"}
    prev = None
    for arg in posargs:
        if not arg.startswith("-") and prev not in takes_value:
            out += ["--exercise", arg]
        else:
            out.append(arg)
        prev = arg
    return out


def _private_bytecode(session: nox.Session) -> dict[str, str]:
    """A fresh bytecode folder for one grading process (tests/harness/environment.py
    ``fresh_prefix``: links to the environment's own bytecode, none of the checkout's), so that no
    ``__pycache__`` beside the grader's or the tree's sources is ever read; the caller removes it.
    Read from the file's source (runpy compiles it), never from bytecode."""
    import runpy

    fresh = runpy.run_path(str(ROOT / "tests" / "harness" / "environment.py"))["fresh_prefix"]
    # A grade writes no bytecode: the environment must look afterwards as it did before.
    return {"PYTHONPYCACHEPREFIX": str(fresh(ENV)), "PYTHONDONTWRITEBYTECODE": "1"}


def _run_private(session: nox.Session, *args: str) -> None:
    """``session.run(*args)`` with a private bytecode folder of its own, removed afterwards."""
    import shutil

    env = _private_bytecode(session)
    try:
        session.run(*args, external=True, env=env)
    finally:
        shutil.rmtree(env["PYTHONPYCACHEPREFIX"], ignore_errors=True)


def pytest(session: nox.Session, py: str, *args: str) -> None:
    # An explicit config and rootdir: with `--impl PATH` outside the checkout, pytest would
    # otherwise look for its configuration next to PATH and not find the harness.
    config = ("-c", str(PYPROJECT), "--rootdir", str(ROOT))
    _run_private(session, py, "-m", "pytest", *config, *args)


@nox.session
def grade(session: nox.Session) -> None:
    """Grade a tree (exercises/ by default) and print the scoreboard; exit 0 only if all pass."""
    py = kata_env(session)
    # plain asserts: the graded checks report through their own messages, and rewriting the test
    # files' asserts (without a bytecode cache, in a grade) costs most of a second
    pytest(session, py, str(ROOT / "tests"), "--grade", "-q", "--assert=plain", *_exercise_args(session.posargs))


def needs_solutions(session: nox.Session) -> None:
    if not (ROOT / "solutions").is_dir():
        session.error("solutions/ is not part of this release: this session is for the course's maintainers")


@nox.session
def tests(session: nox.Session) -> None:
    """The project's own suite: the graded checks on solutions/, stubs in sync, the harness's own tests."""
    needs_solutions(session)
    py = kata_env(session, extras=("train", "dev"))
    # -rs: each skipped test's reason in the summary (no sandbox, no browser, no GPT-2 weights)
    pytest(session, py, str(ROOT / "tests"), "--impl", "solutions", "-rs", *session.posargs)


@nox.session
def stubs(session: nox.Session) -> None:
    """Write exercises/ from solutions/ (each marked region becomes a NotImplementedError; the tracks'
    pages, solutions/tracks/*.md, copied as they are) and the README's exercise table from the manifest."""
    needs_solutions(session)
    py = kata_env(session)
    session.run(py, str(ROOT / "tests" / "harness" / "stubs.py"), *session.posargs, external=True)


@nox.session
def new(session: nox.Session) -> None:
    """Scaffold a new exercise: `nox -s new -- ID slug module "One-line title" [--function NAME]
    [--points N] [--depends-on ID ...]`; then follow the README's "Adding an exercise"."""
    needs_solutions(session)
    py = kata_env(session)
    session.run(py, str(ROOT / "tests" / "harness" / "scaffold.py"), *session.posargs, external=True)


@nox.session
def reference(session: nox.Session) -> None:
    """Rewrite the reference outputs in reference/ from the oracles (PyTorch, tiktoken, transformers, peft)."""
    if not (ROOT / "solutions").is_dir():
        session.error("reference/ is not rewritten in a release: the grader compares with the course's outputs as "
                      "committed (a maintainers' command, run in their repository)")
    py = kata_env(session, extras=("reference", "peft"))
    session.run(py, str(ROOT / "reference" / "make_outputs.py"), *session.posargs, external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Speed and memory targets, measured (never asserted in the tests): tests/bench/bench_*.py."""
    if not (ROOT / "tests" / "bench").is_dir():
        session.error("the benchmarks are not part of this release: they measure solutions/ (an instructor's command, "
                      "run in the maintainers' repository)")
    py = kata_env(session, extras=("reference", "train", "watch"))
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
    --top-k K, --top-p P, --seed S, --device auto|cpu|cuda|mps, --impl solutions|exercises
    (default: solutions where this checkout has it, else exercises). The weights are downloaded once into the Hugging Face cache (about 550 MB for 124M).
    """
    args = list(session.posargs)
    tree = _take_option(session, args, "--impl", _default_tree())
    _check_tree(session, tree)
    py = kata_env(session, extras=("reference",))
    session.run(py, "-m", f"{tree}.pretrained", "--ranks", _gpt2_ranks(session, py), *args, external=True)


@nox.session
def hf(session: nox.Session) -> None:
    """A Llama or Qwen3 checkpoint through a tree's modern model, loader and KV cache (19-25):
    `nox -s hf -- Qwen/Qwen3-0.6B "The capital of France is"`.

    MODEL is a Hugging Face Hub repository (read from the Hub's cache, downloaded once where the
    Hub can be reached) or a local directory. Options (after --): --max-new-tokens N,
    --temperature T, --top-k K, --top-p P, --seed S, --dtype float32|bfloat16,
    --device auto|cpu|cuda|mps, --impl solutions|exercises.
    """
    args = list(session.posargs)
    tree = _take_option(session, args, "--impl", _default_tree())
    _check_tree(session, tree)
    if not args or args[0].startswith("-"):
        session.error('give a model first: nox -s hf -- Qwen/Qwen3-0.6B "The capital of France is"')
    py = kata_env(session, extras=("hub",))
    session.run(py, "-m", f"{tree}.hf_complete", *args, external=True)


def _take_option(session: nox.Session, args: list[str], name: str, default: str | None = None) -> str | None:
    """Remove `name VALUE` (or `name=VALUE`) from args and return VALUE (default when absent)."""
    for i, arg in enumerate(args):
        if arg == name:
            if i + 1 >= len(args):
                session.error(f"{name} needs a value")
            value = args[i + 1]
            del args[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del args[i]
            return arg.split("=", 1)[1]
    return default


def _option(args: list[str], name: str) -> str | None:
    """The value of `name VALUE` or `name=VALUE` in args, left there; None when absent."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1] if i + 1 < len(args) else ""
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _default_tree() -> str:
    """The tree a command runs by default: solutions/ where this checkout has it (the maintainers'
    repository), else exercises/ (the learners' release)."""
    return "solutions" if (ROOT / "solutions").is_dir() else "exercises"


def _check_tree(session: nox.Session, tree: str) -> None:
    trees = [t for t in ("solutions", "exercises") if (ROOT / t).is_dir()]
    if tree not in trees:
        missing = "" if "solutions" in trees else " (solutions/ is not part of this release)"
        session.error(f"--impl {tree}: expected {' or '.join(trees)}, a tree of this checkout{missing}")


def _gpt2_ranks(session: nox.Session, py: str) -> str:
    """GPT-2's ranks, found offline by the one helper that tests and benchmarks use too."""
    return session.run(py, str(ROOT / "reference" / "gpt2_encoding.py"), silent=True, external=True).strip().splitlines()[-1]


def _ranks_where_found(session: nox.Session, py: str, args: list[str]) -> None:
    """Add `--ranks PATH` to args where GPT-2's ranks are found and none were given: only a model
    with GPT-2's tokenizer needs them (sample, chat), so their absence is no error here."""
    if _option(args, "--ranks") is None:
        found = session.run(py, str(ROOT / "reference" / "gpt2_encoding.py"), silent=True, external=True, success_codes=[0, 1])
        if isinstance(found, str) and found.strip() and Path(found.strip().splitlines()[-1]).is_file():
            args += ["--ranks", found.strip().splitlines()[-1]]


@nox.session
def train(session: nox.Session) -> None:
    """Train a small GPT from scratch: `nox -s train` (about 8 minutes on a 2-core CPU).

    Options after -- go to `python -m <tree>.train` (`-- --help` lists them: --data FILE,
    --steps N, --emb-dim D, --amp bf16, --resume PATH, --threads N, ...), plus --impl solutions|exercises (the
    tree that trains: solutions where this checkout has it, else exercises) and --nproc N (N processes on this
    machine, data-parallel, through torch.distributed.run). With --tokenizer gpt2 the session finds
    GPT-2's ranks itself. The checkpoint and the loss curve go to out/train/ (--out DIR).
    """
    args = list(session.posargs)
    tree = _take_option(session, args, "--impl", _default_tree())
    _check_tree(session, tree)
    nproc = _take_option(session, args, "--nproc")
    py = kata_env(session, extras=("train",))
    if _option(args, "--tokenizer") == "gpt2" and _option(args, "--ranks") is None:
        args += ["--ranks", _gpt2_ranks(session, py)]
    if nproc is None:
        session.run(py, "-m", f"{tree}.train", *args, external=True)
    else:
        if not nproc.isdigit() or int(nproc) < 1:
            session.error(f"--nproc {nproc}: expected a number of processes, 1 or more")
        session.run(py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", nproc, "-m", f"{tree}.train", *args,
                    external=True)


@nox.session
def sample(session: nox.Session) -> None:
    """Complete a prompt with a model trained by `nox -s train`: `nox -s sample -- "The "`.

    Reads out/train/ckpt.pt (or --checkpoint PATH). Options after --: --max-new-tokens N,
    --temperature T (0: greedy), --top-k K, --top-p P, --seed S, --device auto|cpu|cuda|mps,
    --threads N, --impl solutions|exercises.
    """
    args = list(session.posargs)
    tree = _take_option(session, args, "--impl", _default_tree())
    _check_tree(session, tree)
    checkpoint = Path(_take_option(session, args, "--checkpoint", str(ROOT / "out" / "train" / "ckpt.pt")))
    if not checkpoint.is_file():
        session.error(f"no checkpoint at {checkpoint}: train one with `nox -s train`, or pass --checkpoint PATH")
    py = kata_env(session, extras=("train",))
    _ranks_where_found(session, py, args)
    session.run(py, "-m", f"{tree}.sample", str(checkpoint), *args, external=True)


@nox.session
def finetune(session: nox.Session) -> None:
    """Fine-tune the model of `nox -s train` to answer questions about Python, offline:
    `nox -s finetune` (every weight, about 3 minutes on a 2-core CPU), `-- --lora RANK`, `-- --dpo`.

    Options after -- go to `python -m <tree>.finetune` (`-- --help` lists them: --base PATH|gpt2,
    --steps N, --lr LR, --dpo-steps N, --beta B, --out DIR, --threads N, ...), plus --impl solutions|exercises.
    Writes out/finetune/: ckpt.pt, loss.png, responses.md and metrics.json.
    """
    args = list(session.posargs)
    tree = _take_option(session, args, "--impl", _default_tree())
    _check_tree(session, tree)
    gpt2_base = _option(args, "--base") == "gpt2"
    py = kata_env(session, extras=("train", "reference") if gpt2_base else ("train",))
    if gpt2_base and _option(args, "--ranks") is None:
        args += ["--ranks", _gpt2_ranks(session, py)]
    session.run(py, "-m", f"{tree}.finetune", *args, external=True)


@nox.session
def reason(session: nox.Session) -> None:
    """Teach a small GPT to add and subtract 3-digit numbers with its working shown, offline: a base
    model, supervised fine-tuning on worked examples, then GRPO (exercises 36-38): `nox -s reason`.

    Options after -- go to `python -m <tree>.reason` (`-- --help` lists them: --grpo-steps N,
    --sft-steps N, --group-size G, --beta B, --loss-type grpo|bnpo|dr_grpo, --out DIR, --threads N,
    ...), plus --impl solutions|exercises. Writes out/reason/: ckpt.pt, reward.png, metrics.json and
    answers.md; `nox -s chat -- --checkpoint out/reason/ckpt.pt "347+285"` asks the model.
    """
    args = list(session.posargs)
    tree = _take_option(session, args, "--impl", _default_tree())
    _check_tree(session, tree)
    py = kata_env(session, extras=("train",))
    session.run(py, "-m", f"{tree}.reason", *args, external=True)


@nox.session
def chat(session: nox.Session) -> None:
    """Talk to the model of `nox -s finetune` in the terminal (answers stream; /reset, /quit), or
    answer one prompt: `nox -s chat -- "What does the pass statement do?"`.

    Options after --: --checkpoint PATH (default out/finetune/ckpt.pt), --temperature T (0:
    greedy), --top-k K, --top-p P, --max-new-tokens N, --seed S, --device auto|cpu|cuda|mps,
    --threads N, --impl solutions|exercises.
    """
    args = list(session.posargs)
    tree = _take_option(session, args, "--impl", _default_tree())
    _check_tree(session, tree)
    py = kata_env(session, extras=("train",))
    _ranks_where_found(session, py, args)
    session.run(py, "-m", f"{tree}.chat", *args, external=True)


@nox.session
def hint(session: nox.Session) -> None:
    """The next hint for an exercise: `nox -s hint -- 01` (`--all` to see them again, `--reset`)."""
    py = kata_env(session)
    session.run(py, str(ROOT / "tests" / "harness" / "hints.py"), *session.posargs, external=True)


@nox.session
def watch(session: nox.Session) -> None:
    """Re-grade the exercise whose file you save (`-- --impl PATH` to watch another tree)."""
    py = kata_env(session, extras=("watch",))
    _run_private(session, py, str(ROOT / "tests" / "harness" / "watch.py"), *session.posargs)


@nox.session(name="env")
def env_session(session: nox.Session) -> None:
    """Make or update the shared environment .nox/kata, and nothing else: a workflow builds it once
    this way (with KATA_TORCH_INDEX, say) before the steps that grade reuse it."""
    session.log(f"the shared environment is ready: {kata_env(session)}")


@nox.session
def classroom(session: nox.Session) -> None:
    """Write GitHub Classroom's autograding workflow from the manifest: one graded step per
    exercise, worth its points (`nox -s classroom -- DIR`: DIR/.github/workflows/classroom.yml;
    default: this checkout)."""
    py = kata_env(session)
    session.run(py, str(ROOT / "tests" / "harness" / "classroom.py"), *session.posargs, external=True)


@nox.session
def release(session: nox.Session) -> None:
    """Write the learners' repository to DIR: no solutions, tests intact, a fresh git history."""
    needs_solutions(session)
    py = kata_env(session)
    session.run(py, str(ROOT / "tests" / "harness" / "release.py"), *session.posargs, external=True)


@nox.session
def gradescope(session: nox.Session) -> None:
    """Write the autograder of a Gradescope programming assignment: `nox -s gradescope --
    autograder.zip` (setup.sh and run_autograder at its root, the release's grader, no solutions)."""
    needs_solutions(session)
    py = kata_env(session)
    session.run(py, str(ROOT / "tests" / "harness" / "gradescope.py"), *session.posargs, external=True)


@nox.session(name="class")
def class_session(session: nox.Session) -> None:
    """Grade a class: `nox -s class -- SUBMISSIONS [--out DIR] [--jobs N] [--exercise ID]` grades
    each submission (a folder or .zip each, or Gradescope's export) alone, sandboxed, and writes
    grades.csv, mistakes.csv and index.html (tests/harness/classgrade.py)."""
    py = kata_env(session, extras=("class",))  # the progress bar, the page's charts, Gradescope's metadata
    session.run(py, str(ROOT / "tests" / "harness" / "classgrade.py"), *session.posargs, external=True)
