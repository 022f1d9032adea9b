"""GPT from scratch: one module per step of the course, together a GPT that trains and generates.

Each module is one step of the course (see the table in README.md). Modules import each other
with relative imports only (``from .attention import softmax``), so any copy of this directory
can be graded with ``--impl PATH``. This file imports nothing on purpose: a broken module must
cost only its own exercise.
"""
