"""The code that runs in the worker process, next to the tree under test: the only part of the
harness that the sandbox shows it. ``wire`` is shared with the grader."""
