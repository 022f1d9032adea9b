"""The grading harness. Before any check, the grader reads the tree's ``.py`` files once, as regular
files only (``treefiles.py``), and checks their text against the allow-list (``allowlist.py``,
``tests/allowlist.toml``): an exercise whose code breaks it fails unrun. The path one graded check
takes:

1. **The test** (``tests/test_<id>_<slug>.py``) draws fresh inputs and asks the seam for the
   learner's answer: ``impl.call("attention.softmax", x)``, ``impl.module(...)`` or
   ``impl.scenario("steps.train_step", ...)`` (``impl.py``).
2. **The request** carries those values in the one encoding (``worker/wire.py``: a JSON header
   plus raw arrays, never a pickle), with the source of each trusted reference part the check
   needs (``parts/``), never the part that implements the exercise being graded.
3. **The worker** (``runner.py`` starts it, ``worker/host.py`` runs in it) serves one exercise per
   process: on Linux a host that has imported torch forks a child per exercise, inside a
   bubblewrap sandbox where one runs (``sandbox.py``). The child installs the exercise's refusals
   for the whole process (``worker/guard.py``), imports the tree as the package ``tree`` from the
   texts the grader read and checked, never from the tree's files (``worker/tree.py``), and runs
   the probe (``worker/probes.py``): it calls the learner's code and packs what came back as plain
   data.
4. **The reply** comes back through the same encoding, with what the learner's code printed;
   the grader times the round trip itself.
5. **The comparison** happens here, in the grader's process, which never imports the tree:
   ``compare.py`` checks the answer against an oracle (PyTorch's built-ins, tiktoken, a naive
   implementation, committed reference outputs) and names known mistakes; ``plugin.py`` scores
   the exercise, prints the scoreboard and writes the report, last.

Only ``worker/`` (and this file) is visible inside the sandbox. ``integrity.py`` and
``environment.py`` notice a grader or an environment changed during a grade; ``watchdog.py`` ends a
grade whose grader is stopped or runs past its time.
"""
