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
   implementation, committed reference outputs) and names known mistakes; ``plugin.py`` records
   the check (``results.py``: checks, outcomes, their scores), prints the scoreboard
   (``scoreboard.py``) and writes the report (``report.py``), last.

**Exercises cannot reach each other, nor the host that forks them.** The mechanism is the
kernel's ptrace access check, not the sandbox: the host makes itself non-dumpable before its first
fork (``worker/host.py``'s ``isolate_host``: ``PR_SET_DUMPABLE`` 0, which the children inherit),
the grader does the same when it makes its ``Runner`` (without the sandbox its workers can see it),
and each child gives up every capability before the tree runs (``isolate_child``, also in a
spawned worker: the bounding and ambient sets emptied, then ``capset`` to empty sets, and ``no_new_privs``). Without
``CAP_SYS_PTRACE`` no process may open a non-dumpable process's ``/proc/<pid>/mem``, ``environ``
or ``maps``, attach to it with ptrace or use ``process_vm_writev`` on it, whatever the uid and
with or without Yama. Tried as root on Linux 6.18 without Yama, in the sandbox and with
``--no-sandbox`` (``tests/meta/test_isolation.py``): each of those fails with EPERM or EACCES and
the host's memory is unchanged; without the two calls the same child writes into its host.
Non-dumpable alone would not hold against a child that is root outside the sandbox (root has
``CAP_SYS_PTRACE``): that is why the child drops its capabilities itself. Siblings never run at
once (one exercise at a time; the host kills what an exercise left before the next starts), and
each inherits the same protection. What remains: a child can still signal its host (same uid).
That costs only the sender's exercise: the host dies with everything below it (its death signal,
the sandbox's PID namespace), the exercise scores 0, and the next exercise gets a new host
(tested). In the sandbox a child can also write into bubblewrap's own reaper (PID 1 there,
dumpable, the same uid), which holds nothing of the grade; ``bwrap --as-pid-1`` would remove it
(not done here: ``sandbox.py`` is another part of issue 24). Without the sandbox (``--no-sandbox``, macOS, Windows) a child as root without
capabilities can still signal or overwrite any file root owns, the grader's included; the
sandbox is what closes that. The cost: two ``prctl``/``capset`` calls per exercise (microseconds).

**Resource verdicts come from outside the learner's process.** Exercises 28 and 29 measure memory
and processes with ``impl.scenario(..., fresh=True)`` (a new child where a trusted warm-up pays
PyTorch's one-time costs) and then ``measure=True``: before the probe the grader asks the host,
on its control socket, to reset the child's peak resident memory (``5`` into
``/proc/<child>/clear_refs``); after it, the host reads ``VmHWM``, ``Threads`` and ``SigIgn`` in
``/proc/<child>/status``, the processes below the child (live or zombie), the orphans that came
to the host (its child subreaper) and the child's counters of reaped children (``cminflt``,
``cmajflt``, ``cutime``, ``cstime`` in ``/proc/<child>/stat``): ``worker/processes.py``'s
``window_start`` and ``window_end``. The window spans the tree's import, so a thread or a
process started at import counts; a double-forked grandchild is an orphan of the host, or leaves
its cost in the counters. ``compare.check_resources`` decides from these numbers only. The
dispatch-mode tracker inside the worker (``parts/flash_run.py``) stays, to name an honest
learner's mistake precisely; a tree that fools it gains at most what the kernel's budget allows
(half the whole matrix). Where the grader spawns the worker itself (``KATA_WORKER_START=spawn``
on Linux) it reads the same files of its own child, but orphans go to init there and are not
seen. On macOS and Windows nothing outside the worker reads it: the checks have only the
tracker's numbers, which a hostile tree can change (weaker). A child that ignores ``SIGCHLD``
(its ended children leave no trace) is failed for it; ``SA_NOCLDWAIT`` set through ``ctypes``
would hide an ended child, and the allow-list refuses ``ctypes``.

Only ``worker/`` (and this file) is visible inside the sandbox. ``integrity.py`` and
``environment.py`` notice a grader or an environment changed during a grade; ``watchdog.py`` ends a
grade whose grader is stopped or runs past its time.
"""
