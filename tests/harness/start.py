"""What the grader does as it starts, before it imports torch: the private bytecode folder, and
the worker hosts, started from the command line (``sys.argv``) so that they import torch side by
side with this process. ``plugin.py`` calls both at its import; nothing here imports torch.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys

from . import environment, manifest, options, runner
from . import sandbox as sandboxing

# The bytecode folder this process was started with (PYTHONPYCACHEPREFIX): nox, run_autograder and
# watch give every grade a fresh, private one (environment.fresh_prefix); None for a plain pytest run.
PREFIX_AT_START = sys.pycache_prefix


def private_bytecode() -> None:
    """From here on, this process and the workers it starts read bytecode only from a private
    folder (``environment.fresh_prefix``), never from ``__pycache__`` beside the checkout's
    sources, and write none. A plain pytest run gets one now; the modules it imported before this
    line were read beside their sources (``integrity.forged_bytecode`` checks them)."""
    sys.dont_write_bytecode = True
    if sys.pycache_prefix is None:
        own = environment.fresh_prefix()
        sys.pycache_prefix = str(own)
        atexit.register(shutil.rmtree, own, True)


def early_start(argv: list[str]) -> None:
    """A grade's worker hosts, started from the command line before this process imports torch
    (each host imports it too, side by side); the Runner adopts them. Anything unusual on the
    command line leaves them to the Runner, which then starts its own."""
    given = options.scan(argv)
    if "--grade" not in given.switches or "--in-process" in given.switches:
        return
    tree = options.tree_path(given.last("--impl", "exercises")).resolve()
    if not tree.is_dir():
        return
    selected = {e.id for arg in given.values["--exercise"] for x in arg.split(",") if x for e in manifest.select(x)}
    memory = given.last("--worker-memory")
    if memory is not None:
        os.environ["KATA_WORKER_MEMORY_GB"] = memory
    no_sandbox = "--no-sandbox" in given.switches
    box = None if no_sandbox else sandboxing.prefind()  # its self-check runs while torch imports
    required = "--require-sandbox" in given.switches or os.environ.get("KATA_REQUIRE_SANDBOX") == "1"
    if box is None and not no_sandbox and required:
        return  # the grade will be refused: no worker to start
    exercises = [e for e in manifest.load() if not selected or e.id in selected]
    runner.prestart(tree, box, [(tuple(e.hidden_modules), tuple(e.worker_imports)) for e in exercises])


def start(argv: list[str]) -> None:
    """Both, in order; an argument the plugin will refuse with a proper message later starts no host."""
    private_bytecode()
    try:
        early_start(argv)
    except Exception:
        pass
