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


def test_allowed_imports_are_read():
    granted = GOOD.replace('depends_on = ["01"]', 'depends_on = ["01"]\nallowed_imports = ["socket"]')
    assert manifest.parse(granted)[1].allowed_imports == ("socket",)
    assert manifest.parse(GOOD)[1].allowed_imports == ()
    assert "torch.distributed" in manifest.lookup("ddp").allowed_imports


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
        (('depends_on = ["01"]', 'depends_on = ["01"]\nforbiden = ["torch.softmax"]'), "exercise 02 b has the unknown key\\(s\\) forbiden"),
        (('depends_on = ["01"]', 'depends_on = ["01"]\nallowed_import = ["socket"]'), "unknown key\\(s\\) allowed_import"),
        (('depends_on = ["01"]', 'depends_on = ["01"]\nallowed_imports = ["torch._C"]'), "not a public module name"),
        (('depends_on = ["01"]', 'depends_on = ["01"]\nallowed_imports = ["../x"]'), "not a public module name"),
    ],
)
def test_bad_manifests_are_rejected(edit, error):
    with pytest.raises(manifest.ManifestError, match=error):
        manifest.parse(GOOD.replace(*edit))


def test_readme_table_is_written_from_the_manifest():
    """The README's table is exactly what `nox -s stubs` writes from the manifest: one source."""
    from harness import stubs

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert stubs.readme_with_table(readme) == readme, "README.md's exercise table is out of date: run `nox -s stubs`"
    for e in manifest.load():
        assert f"| {e.id} | `{e.slug}` | {e.title} | `{e.module}.py` | {e.points:g} |" in readme


def test_readme_table_follows_a_manifest_change():
    from harness import stubs

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    changed = manifest.parse(GOOD)
    rewritten = stubs.readme_with_table(readme, changed)
    assert "| 02 | `b` | B | `b.py` | 5 |" in rewritten and "| 18 |" not in rewritten
    assert rewritten.split(stubs.TABLE_BEGIN)[0] == readme.split(stubs.TABLE_BEGIN)[0]
    after = stubs.NEW_COMMAND.sub(lambda m: m.group(1) + stubs.next_id(changed), readme.split(stubs.TABLE_END)[1])
    assert rewritten.split(stubs.TABLE_END)[1] == after, "only the table and the ids of `nox -s new` examples change"
    assert f"nox -s new -- {stubs.next_id(changed)} slug" in rewritten and stubs.next_id(changed) != stubs.next_id()
    with pytest.raises(stubs.MarkerError, match="needs the lines"):
        stubs.readme_with_table("# a README without the markers\n")


def test_no_scaffold_placeholder_is_left():
    """`nox -s new` marks what it could not know with TODO(maintainer); none may reach a learner."""
    from harness.scaffold import PLACEHOLDER

    places = [ROOT / "tests" / "manifest.toml", *sorted((ROOT / "solutions").glob("*.py")), *sorted((ROOT / "tests").glob("test_*.py"))]
    left = [str(p.relative_to(ROOT)) for p in places if PLACEHOLDER in p.read_text(encoding="utf-8")]
    assert not left, f"{PLACEHOLDER} is still in {', '.join(left)}: write what it marks (the README's \"Adding an exercise\")"


def test_a_package_some_exercise_forbids_is_hidden_from_every_exercise_that_does_not_need_it():
    """The sandbox of each exercise lacks every package any exercise forbids (tiktoken for 03-05,
    transformers, peft, trl), but for those its checks need in the worker (31: tiktoken): the
    tokenizer exercises' sandbox lacks tiktoken, and nearly every exercise shares one sandbox."""
    exercises = manifest.load()
    anywhere = {m for e in exercises for m in e.forbidden_modules}
    assert {"tiktoken", "transformers"} <= anywhere
    for e in exercises:
        assert set(e.forbidden_modules) <= set(e.hidden_modules), e.id
        assert set(e.hidden_modules) == (anywhere - set(e.worker_packages)) | set(e.forbidden_modules), e.id
    assert all("tiktoken" in manifest.lookup(i).hidden_modules for i in ("03", "04", "05"))
    assert [e.id for e in exercises if "tiktoken" not in e.hidden_modules] == ["31"]
    assert len({e.hidden_modules for e in exercises}) == 2


def test_an_exercise_cannot_both_forbid_and_need_a_package():
    text = GOOD.replace('points = 5\ndepends_on = ["01"]', 'points = 5\ndepends_on = ["01"]\nforbidden_modules = ["tiktoken"]\n'
                        'worker_packages = ["tiktoken"]')
    with pytest.raises(manifest.ManifestError, match="both forbids and needs tiktoken"):
        manifest.parse(text)
    parsed = manifest.parse(GOOD.replace('points = 5\ndepends_on = ["01"]', 'points = 5\ndepends_on = ["01"]\n'
                                         'forbidden_modules = ["tiktoken"]'))
    assert [e.hidden_modules for e in parsed] == [("tiktoken",), ("tiktoken",)]
