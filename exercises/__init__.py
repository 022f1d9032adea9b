"""GPT from scratch: one module per step of the course; written, together a GPT that trains and generates.

This package comes in two trees with the same modules, names and docstrings. In ``exercises/``,
the learner's copy, each part a learner writes is a stub that raises ``NotImplementedError`` naming
its exercise and task, until the learner writes it; in ``solutions/``, the maintainers' tree that
the stubs are generated from, every part is written. The table of exercises is in README.md, and
each track's page in ``tracks/`` beside these modules. Modules import each other with relative
imports only (``from .attention import softmax``), so any copy of this directory can be graded
with ``--impl PATH``. This file imports nothing on purpose: a broken module must cost only its own
exercise.
"""
