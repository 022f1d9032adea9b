"""One source: exercises/ is generated from solutions/, and both trees show the same API."""

import re

import pytest

from harness import api, manifest, stubs
from harness.manifest import ROOT

SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "exercises"


def test_exercises_are_in_sync_with_solutions():
    problems = stubs.out_of_sync()
    assert not problems, "exercises/ differs from what `nox -s stubs` writes:\n" + "\n".join(problems)


def test_public_api_of_both_trees_is_the_same():
    diff = api.differences(SOLUTIONS, EXERCISES)
    assert not diff, "the public API of exercises/ differs from solutions/:\n" + "\n".join(diff)


def test_api_differences_are_detected(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "m.py").write_text("def f(x, dim=-1):\n    '''Doc.'''\n")
    (b / "m.py").write_text("def f(x, dim=0):\n    '''Doc.'''\n")
    assert any("f differs" in line for line in api.differences(a, b))
    (b / "m.py").write_text("def f(x, dim=-1):\n    '''Other doc.'''\n")
    assert api.differences(a, b)
    (b / "m.py").write_text("def f(x, dim=-1):\n    '''Doc.'''\n    return 1\n")
    assert api.differences(a, b) == []


def test_stub_replaces_region_with_one_raise_naming_exercise_and_task():
    src = (
        "def softmax(x):\n"
        "    '''Doc.'''\n"
        "    y = 1\n"
        "    # BEGIN SOLUTION 01: subtract the max\n"
        "    return x - x.max()\n"
        "    # END SOLUTION\n"
        "\n"
        "class LayerNorm:\n"
        "    def forward(self, x):\n"
        "        # BEGIN SOLUTION 02: normalise\n"
        "        return x\n"
        "        # END SOLUTION\n"
    )
    out = stubs.stub_source(src)
    assert "return x - x.max()" not in out and "return x\n" not in out
    assert '    raise NotImplementedError("exercise 01 (attention), softmax: subtract the max")\n' in out
    assert '        raise NotImplementedError("exercise 02 (layernorm), LayerNorm.forward: normalise")\n' in out
    assert "    y = 1\n" in out and "'''Doc.'''" in out
    compile(out, "<stub>", "exec")


@pytest.mark.parametrize(
    "src, error",
    [
        ("# BEGIN SOLUTION 01: x\nx = 1\n", "never closed"),
        ("x = 1\n# END SOLUTION\n", "without a BEGIN"),
        ("# BEGIN SOLUTION 99: x\n# END SOLUTION\n", "not in the manifest"),
        ("# BEGIN SOLUTION 01: a\n# BEGIN SOLUTION 01: b\n# END SOLUTION\n", "inside the region"),
        ("# BEGIN SOLUTION: no id\n# END SOLUTION\n", "write markers as"),
    ],
)
def test_bad_markers_are_clear_errors(src, error):
    with pytest.raises(stubs.MarkerError, match=error):
        stubs.stub_source(src)


def test_every_exercise_has_markers_a_test_file_and_stubbed_functions():
    for ex in manifest.load():
        module = SOLUTIONS / f"{ex.module}.py"
        assert module.exists(), f"exercise {ex.id}: solutions/{ex.module}.py is missing"
        assert re.search(rf"# BEGIN SOLUTION {ex.id}:", module.read_text()), f"exercise {ex.id}: no BEGIN SOLUTION {ex.id} marker"
        test_file = ROOT / "tests" / ex.test_file
        assert test_file.exists(), f"exercise {ex.id}: tests/{ex.test_file} is missing"
        assert f'EXERCISE = "{ex.id}"' in test_file.read_text(), f"tests/{ex.test_file} must set EXERCISE = {ex.id!r}"
        stub_api = api.module_api((EXERCISES / f"{ex.module}.py").read_text())
        for fn in ex.functions:
            assert fn in stub_api, f"exercise {ex.id}: {fn} is not defined in exercises/{ex.module}.py"
        stub = (EXERCISES / f"{ex.module}.py").read_text()
        assert f'raise NotImplementedError("exercise {ex.id} ({ex.slug}), ' in stub


def test_no_test_file_without_an_exercise():
    ids = {e.id for e in manifest.load()}
    for path in (ROOT / "tests").glob("test_*.py"):
        m = re.match(r"test_(\d\d)_(\w+)\.py", path.name)
        assert m and m[1] in ids, f"tests/{path.name} is not named after an exercise in the manifest"
        assert manifest.lookup(m[1]).slug == m[2], f"tests/{path.name} should be tests/{manifest.lookup(m[1]).test_file}"


def test_the_tracks_pages_are_copied_as_they_are_and_checked(tmp_path):
    sol, ex = tmp_path / "solutions", tmp_path / "exercises"
    (sol / "tracks").mkdir(parents=True)
    (sol / "m.py").write_text("x = 1\n")
    (sol / "tracks" / "01-first.md").write_text("# The first track\n")
    assert stubs.out_of_sync(sol, ex) == ["m.py: missing", "tracks/01-first.md: missing"]
    stubs.write(sol, ex)
    assert (ex / "tracks" / "01-first.md").read_text() == "# The first track\n" and stubs.out_of_sync(sol, ex) == []
    (ex / "tracks" / "01-first.md").write_text("# edited by hand\n")
    (ex / "tracks" / "02-gone.md").write_text("# a page solutions/ no longer has\n")
    assert stubs.out_of_sync(sol, ex) == ["tracks/02-gone.md: not in solutions/", "tracks/01-first.md: differs"]
    stubs.write(sol, ex)
    assert stubs.out_of_sync(sol, ex) == [] and not (ex / "tracks" / "02-gone.md").exists()


def test_each_row_of_the_table_links_its_tracks_page():
    pages = stubs.track_pages()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert pages and pages[0][0] == manifest.load()[0].id, "the first exercise has no track's page"
    for e in manifest.load():
        link = stubs.track_link(e.id, pages)
        target = re.fullmatch(r"\[[a-z0-9-]+\]\((exercises/tracks/\d\d-[a-z0-9-]+\.md)\)", link)
        assert target and (ROOT / target[1]).is_file(), f"exercise {e.id}: {link!r}"
        assert f"| {e.points:g} | {link} |" in readme
    assert stubs.track_link("05", [("03", "03-a.md"), ("07", "07-b.md")]) == "[a](exercises/tracks/03-a.md)"
    assert stubs.track_link("02", [("03", "03-a.md")]) == ""
