"""Outlines of a class or a module (analysis/outline.py): what a caller uses, bodies elided."""

from __future__ import annotations

from superpie.analysis.outline import MAX_LINES, outline

SOURCE = '''"""Shapes in the plane.

More text that is not the first line.
"""
from .base import Shape, area as _area
import math

SCALE = 3
_PRIVATE = 4


@dataclass
class Point(Shape):
    """A point in the plane.

    Its coordinates are floats.
    """

    origin: "Point | None" = None
    _cache = {}

    def __init__(self, x, y):
        self.x = x
        self.y = y
        self._secret = 0
        if x:
            self.x = x * 2

    @property
    def norm(self) -> float:
        return math.hypot(self.x, self.y)

    def scale(
        self,
        factor: float,
        around: "Point | None" = None,
    ) -> "Point":
        return Point(self.x * factor, self.y * factor)

    def _helper(self):
        return 1

    class Meta:
        ordering = 1


def clamp(x, low, high): return max(low, min(x, high))
'''


def test_a_class_outline_has_signatures_attributes_and_no_bodies() -> None:
    start = SOURCE.splitlines().index("@dataclass")
    got = outline(SOURCE, start, "class")
    assert got == (
        "@dataclass\n"
        "class Point(Shape):\n"
        '    """A point in the plane."""\n'
        '    origin: "Point | None" = None\n'
        "    def __init__(self, x, y):\n"
        "        self.x = x\n"
        "        self.y = y\n"
        "    @property\n"
        "    def norm(self) -> float: ...\n"
        '    def scale(self, factor: float, around: "Point | None" = None) -> "Point": ...\n'
        "    class Meta: ...\n"
    )
    assert outline(SOURCE, start + 1, "class") == got  # from its `class` line too
    assert "hypot" not in got and "_helper" not in got and "_secret" not in got and "_cache" not in got


def test_a_module_outline_lists_its_public_names() -> None:
    got = outline(SOURCE, 0, "module")
    assert got is not None
    assert got.splitlines() == [
        '"""Shapes in the plane."""',
        "@dataclass",
        "class Point(Shape): ...",
        "def clamp(x, low, high): return max(low, min(x, high))",
        "SCALE = 3",
    ]


def test_a_module_outline_keeps_its_star_imports_as_a_stub_does() -> None:
    code = (
        "from __future__ import annotations\n"
        "import sys\n"
        "from _codecs import *\n"
        "from typing import Any\n"
        "\n"
        "class CodecInfo(tuple): pass\n"
        "\n"
        "BOM = 1\n"
    )
    got = outline(code, 0, "module")
    assert got is not None
    assert got.splitlines() == ["from _codecs import *", "class CodecInfo(tuple): pass", "BOM = 1"]
    # a module offering nothing but a star import still has an outline: that line
    assert outline("from _codecs import *\n", 0, "module") == "from _codecs import *\n"


def test_a_function_outline_is_its_signature_and_the_first_line_of_its_docstring() -> None:
    code = 'def f(\n    a,\n    b=1,\n):\n    """Adds.\n\n    More.\n    """\n    return a + b\n\n\n'
    code += "def g(x):\n    return x\n"
    assert outline(code, 0, "function") == 'def f(a, b=1):\n    """Adds."""\n'
    assert outline(code, 11, "function") == "def g(x): ...\n"
    assert outline(
        SOURCE, SOURCE.splitlines().index("def clamp(x, low, high): return max(low, min(x, high))"), "function"
    )
    assert outline(code, 1, "function") is None


def test_no_outline_where_there_is_nothing_to_show() -> None:
    assert outline("def broken(:\n", 0, "module") is None  # does not parse
    assert outline(SOURCE, 1, "class") is None  # no class starts there
    assert outline("", 0, "module") is None
    assert outline("_x = 1\n", 0, "module") is None  # nothing public
    assert outline("x = " + "(" * 100_000 + ")" * 100_000 + "\n", 0, "module") is None  # too deep for the parser


def test_a_long_class_is_cut_and_every_line_is_bounded() -> None:
    methods = "".join(f"    def m{i}(self, {'a' * 300}): return {i}\n" for i in range(200))
    got = outline("class Big:\n" + methods, 0, "class")
    assert got is not None
    lines = got.splitlines()
    assert len(lines) == MAX_LINES and max(map(len, lines)) <= 160
    assert lines[1].endswith("...") and lines[1].startswith("    def m0(self, aaa")
