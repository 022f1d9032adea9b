"""The course's presets (config.py's MODERN_PRESETS, in solutions/ and the stubs alike) are the
published configurations that exercise 23 counts against transformers."""

import importlib.util

import pytest
import test_23_modern_model as graded

from harness.manifest import ROOT


def _presets(tree):
    spec = importlib.util.spec_from_file_location(f"_{tree}_config", ROOT / tree / "config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MODERN_PRESETS, module.ModernConfig


@pytest.mark.parametrize("tree", ["solutions", "exercises"])
def test_presets_are_the_graded_configurations(tree):
    presets, config = _presets(tree)
    assert set(presets) == set(graded.PRESETS)
    for name, want in graded.PRESETS.items():
        got = vars(config.preset(name))
        assert got == want, f"{tree}/config.py's {name} differs from test_23's published configuration"
