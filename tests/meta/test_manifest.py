"""The manifest is validated, and the README's exercise table is made from it."""

import pytest

from harness import manifest
from harness.manifest import ROOT

GOOD = """
[[exercise]]
id = "01"
slug = "a"
title = "A"
module = "a"
functions = ["f"]
points = 5

[[exercise]]
id = "02"
slug = "b"
title = "B"
module = "b"
functions = ["g"]
points = 5
depends_on = ["01"]
"""


def test_parses_the_real_manifest():
    exercises = manifest.load()
    assert [e.id for e in exercises][:2] == ["01", "02"]
    assert all(e.points > 0 and e.hints for e in exercises)


def test_lookup_by_id_or_slug_and_clear_error():
    assert manifest.lookup("1").id == "01"
    assert manifest.lookup("layernorm").id == "02"
    with pytest.raises(KeyError, match="the exercises are: 01 \\(attention\\)"):
        manifest.lookup("nope")


@pytest.mark.parametrize(
    "edit, error",
    [
        (('depends_on = ["01"]', 'depends_on = ["03"]'), "does not come before"),
        (('slug = "b"', 'slug = "a"'), "listed twice"),
        (('id = "02"', 'id = "2"'), "two digits"),
        (("points = 5\ndepends", "depends"), "needs `points`"),
    ],
)
def test_bad_manifests_are_rejected(edit, error):
    with pytest.raises(manifest.ManifestError, match=error):
        manifest.parse(GOOD.replace(*edit))


def test_readme_table_lists_every_exercise():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for e in manifest.load():
        assert f"| {e.id} | `{e.slug}` | {e.title} | `{e.module}.py` | {e.points:g} |" in readme, (
            f"README.md's exercise table is missing or out of date for {e.id}"
        )
