"""The grading harness: the pytest plugin, the worker that runs the tree under test, and tools.

The process that compares and scores imports only this package, torch and numpy: never the tree
under test. The tree runs in ``worker.py``, a separate process, which sends back plain arrays.
"""
