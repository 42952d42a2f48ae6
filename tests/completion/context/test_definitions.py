"""Definitions in other workspace files of the names used near a cursor (analysis/definitions.py, jedi)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from superpie.analysis.definitions import DefinitionFinder, imported_near, names_near

SHAPES = '''import math

SCALE = 3


class Point:
    """A point in the plane."""

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm(self):
        return math.hypot(self.x, self.y)


def clamp(x, low, high):
    return max(low, min(x, high))
'''

MAIN = """from pkg.shapes import Point, clamp
from pkg import shapes
from secret import leaked


def local_helper():
    return 1


def run(values):
    p = Point(1, 2)
    n = p.norm() + local_helper() + leaked()
    return clamp(n, 0, shapes.SCALE)
"""


def workspace(tmp_path: Path) -> Path:
    """A workspace with a package, and a module outside it reached through a link."""
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "shapes.py").write_text(SHAPES)
    (root / "main.py").write_text(MAIN)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("def leaked():\n    return 'secret'\n")
    (root / "secret.py").symlink_to(outside / "secret.py")
    return root


def test_names_near_the_cursor_nearest_first_without_keywords() -> None:
    cursor = MAIN.index("    return clamp")
    names = [n for n, _ in names_near(MAIN, cursor, lines_before=2, lines_after=1, limit=20)]
    assert names[:2] == ["leaked", "local_helper"]  # the end of the line above is nearest
    assert {"p.norm", "Point", "clamp", "shapes.SCALE"} <= set(names)
    assert "return" not in names and "self" not in names
    assert "def" not in names and "from" not in names
    assert "local_helper" in names and "run" not in names  # `def run` is 3 lines up


def test_definitions_in_other_files_only_inside_the_workspace(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    finder = DefinitionFinder(root)
    main = root / "main.py"
    found = finder.near(str(main), MAIN, MAIN.index("    return clamp"))
    shapes = (root / "pkg" / "shapes.py").resolve()
    got = {(d.name, d.start_line, d.end_line) for d in found}
    lines = SHAPES.splitlines()
    assert ("clamp", 16, 18) in got and lines[16].startswith("def clamp")
    assert ("p.norm", 12, 14) in got and lines[12].strip() == "def norm(self):"
    assert ("Point", 5, 14) in got and ("shapes.SCALE", 2, 3) in got
    assert ("shapes", 0, 1) in got  # the module, shown as its outline
    kinds = {d.name: d.kind for d in found}
    assert kinds["shapes"] == "module" and kinds["Point"] == "class" and kinds["clamp"] == "function"
    # not main.py's own local_helper, not the linked secret.py; the package's __init__.py for `pkg`
    assert {d.path for d in found} == {shapes, (root / "pkg" / "__init__.py").resolve()}
    assert len({(d.path, d.start_line) for d in found}) == len(found)  # each place once


def test_answers_are_cached_and_a_spent_budget_asks_nothing(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    finder = DefinitionFinder(root)
    cursor = MAIN.index("    return clamp")
    assert finder.near(str(root / "main.py"), MAIN, cursor, budget_s=0.0) == []
    assert finder.asked == 0
    first = finder.near(str(root / "main.py"), MAIN, cursor, budget_s=math.inf)
    asked = finder.asked
    typed = MAIN[:cursor] + "    p\n" + MAIN[cursor:]  # typing in the function: the same names
    again = finder.near(str(root / "main.py"), typed, cursor + 6)
    assert finder.asked == asked and {(d.path, d.start_line) for d in first} <= {(d.path, d.start_line) for d in again}
    finder.forget()
    finder.near(str(root / "main.py"), MAIN, cursor)
    assert finder.asked > asked


@pytest.mark.parametrize("offset", [0, len(MAIN)])
def test_the_ends_of_the_document(offset: int, tmp_path: Path) -> None:
    finder = DefinitionFinder(workspace(tmp_path))
    finder.near(None, MAIN, offset)  # no path: an unsaved buffer; no error at either end


def test_imported_names_most_recently_used_first_at_their_import() -> None:
    code = "from pkg.shapes import Point, clamp as cl\nfrom pkg import (shapes,\n    other)  # note\n\nx = cl(1)\n"
    found = imported_near(code, len(code), limit=10)
    assert [n for n, _ in found] == ["cl", "shapes", "other", "Point"]  # used, then unused in reverse order
    assert [code[at : at + 5] for _, at in found] == ["clamp", "shape", "other", "Point"]


def test_an_imported_name_not_used_near_the_cursor_is_looked_up_too(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    code = "from pkg.shapes import clamp\n\n\ndef f(v):\n    return "
    found = DefinitionFinder(root).near(str(root / "main.py"), code, len(code), lines_before=1)
    assert [(d.name, d.start_line) for d in found] == [("clamp", 16)]


def test_a_local_name_leads_to_the_class_of_its_type(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    code = "from pkg.shapes import Point\n\n\ndef f(p: Point):\n    return p."
    found = DefinitionFinder(root).near(str(root / "main.py"), code, len(code), lines_before=0, max_imported=0)
    assert [(d.name, d.start_line, d.kind) for d in found] == [("p", 5, "class")]  # `p` is a parameter: infer


def test_the_words_of_a_comment_are_not_names() -> None:
    code = "x = 1  # see helper_one\ns = '# not_a_comment' + other  # word\ny = x + "
    names = {n for n, _ in names_near(code, len(code), lines_before=3, lines_after=0, limit=20)}
    assert names == {"x", "y", "s", "not_a_comment", "other"}  # a string's words stay: jedi ignores them
