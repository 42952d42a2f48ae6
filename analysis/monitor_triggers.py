"""Where a monitor may fire: cheap text checks on the end of (document before cursor + draft).

These run at every decoding step while no monitor is active, so they look only at the tail of the
text and never call jedi. Each returns the point where the identifier being typed starts (jedi is
asked there, with the typed characters removed, so one answer serves every prefix) or None.
`attributes_spelled` runs once per firing: what the document itself says about the object.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from superpie.analysis.syntax import parse, region_at
from superpie.analysis.token_trie import is_identifier_char

_LOOKBACK = 4000  # chars searched backwards for the call that holds an argument
_VALUE_KEYWORDS = frozenset({"True", "False", "None"})
_IMPORT = re.compile(r"^[ \t]*import[ \t]+(?:[\w.]+[ \t]*(?:as[ \t]+\w+[ \t]*)?,[ \t]*)*[\w.]*$")
_FROM_MODULE = re.compile(r"^[ \t]*from[ \t]+\.*[\w.]*$")
_FROM_IMPORT = re.compile(
    r"^[ \t]*from[ \t]+\.*[\w.]*[ \t]+import[ \t]+\(?[ \t]*(?:\w+[ \t]*(?:as[ \t]+\w+[ \t]*)?,[ \t]*)*\w*$"
)
_IMPORT_LINE = re.compile(r"^[ \t]*(?:from|import)\b")
_DEFINITION = re.compile(r"(?:^|[^\w.])(?:def|class)[ \t]+\w+$")
_EXPRESSION_START = re.compile(r"(?:=|\breturn|\bawait|\byield)[ \t]+$")
_NAME_CHAIN = re.compile(r"(?<![\w.)\]}'\"])[^\W\d]\w*(?:[ \t]*\.[ \t]*[^\W\d]\w*)*[ \t]*$")
_INSTANCE_NAMES = frozenset({"self", "cls"})  # bound to the enclosing class's instance (or the class itself)
_SCOPES = {True: ("class_definition",), False: ("function_definition", "lambda")}


@dataclass(frozen=True)
class TriggerPoint:
    """Where the identifier being typed starts, and what of it has been typed."""

    start: int  # str offset in text_before
    typed: str


def identifier_start(text: str, end: int | None = None) -> int:
    """Offset where the run of identifier characters ending at `end` starts."""
    end = len(text) if end is None else end
    k = end
    while k > 0 and is_identifier_char(text[k - 1]):
        k -= 1
    return k


def _current_line(text: str, end: int) -> str:
    return text[text.rfind("\n", 0, end) + 1 : end]


def _point(text: str) -> TriggerPoint | None:
    k = identifier_start(text)
    typed = text[k:]
    if typed[:1].isdigit():
        return None
    return TriggerPoint(k, typed)


def dereference_point(text: str) -> TriggerPoint | None:
    """`expr.` + optional identifier chars, where expr is a name, a call, a subscript or a literal."""
    point = _point(text)
    if point is None or point.start < 2 or text[point.start - 1] != ".":
        return None
    dot = point.start - 1
    before = text[dot - 1]
    if is_identifier_char(before):
        word = text[identifier_start(text, dot) : dot]
        if word[0].isdigit() or (keyword.iskeyword(word) and word not in _VALUE_KEYWORDS):
            return None  # a number literal such as `1.`, or `from .` / `import .`
    elif before not in ")]}'\"":
        return None
    if _IMPORT_LINE.match(_current_line(text, dot)):
        return None  # module paths belong to the import monitor
    return point


def import_point(text: str) -> TriggerPoint | None:
    """`import a.b`, `from a.b`, `from a import x, y`: the module or member being typed."""
    point = _point(text)
    if point is None:
        return None
    line = _current_line(text, len(text))
    if _IMPORT.match(line) or _FROM_MODULE.match(line) or _FROM_IMPORT.match(line):
        return point
    return None


def _open_paren_before(text: str, end: int) -> int:
    """Offset of the innermost unclosed bracket before `end` if it is "(", else -1 (strings ignored)."""
    depth = 0
    for i in range(end - 1, max(-1, end - _LOOKBACK - 1), -1):
        c = text[i]
        if c in ")]}":
            depth += 1
        elif c in "([{":
            if depth == 0:
                return i if c == "(" else -1
            depth -= 1
    return -1


def call_argument_point(text: str) -> TriggerPoint | None:
    """An argument start inside a call (`f(`, `f(a, `): where a keyword argument may be written."""
    point = _point(text)
    if point is None:
        return None
    j = point.start
    while j > 0 and text[j - 1] in " \t\n":
        j -= 1
    if j == 0 or text[j - 1] not in "(,":
        return None
    if text[j - 1] == "," and j == point.start:
        return None  # wait for the space after the comma, so one argument start fires once
    paren = j - 1 if text[j - 1] == "(" else _open_paren_before(text, j - 1)
    if paren <= 0:
        return None
    callee = text[paren - 1]
    if is_identifier_char(callee):
        word = text[identifier_start(text, paren) : paren]
        if keyword.iskeyword(word) or _DEFINITION.search(text, max(0, paren - 200), paren):
            return None
    elif callee not in ")]":
        return None
    return point


def expression_start_point(text: str) -> TriggerPoint | None:
    """A name begun right after `=`, `return`, `await` or `yield`: it must be a name in scope."""
    point = _point(text)
    if point is None or not point.typed:
        return None
    if not _EXPRESSION_START.search(text, max(0, point.start - 20), point.start):
        return None
    return point


@dataclass(frozen=True)
class SpelledAttributes:
    """What the document spells after the same dotted name, where it names the same object."""

    names: frozenset[str]  # `base.name` spelled in code in that scope (the cursor's own excepted)
    dynamic: bool  # an instance's class sets attributes by name (`setattr(self, ...)`, `self.__dict__`)


def _scope(code: str, offset: int, of_instance: bool) -> tuple[int, int]:
    """str range where a name means what it means at offset: for `self`/`cls` the enclosing class,
    else the innermost enclosing function; the whole module when there is none."""
    data = code.encode("utf-8")
    at = len(code[:offset].encode("utf-8"))
    node = parse(code).root_node.descendant_for_byte_range(at, at)
    while node is not None and node.type not in _SCOPES[of_instance]:
        node = node.parent
    if node is None:
        return 0, len(code)
    start = len(data[: node.start_byte].decode("utf-8", errors="ignore"))
    return start, start + len(data[node.start_byte : node.end_byte].decode("utf-8", errors="ignore"))


def defines_attribute(code: str, dot: int) -> bool:
    """Whether the `.` at `dot` is that of a `self.` which starts a statement in an `__init__`: there a statement
    usually assigns, and so defines, an attribute no list can hold yet (`self.msg = msg`)."""
    line_start = code.rfind("\n", 0, dot) + 1
    if code[line_start:dot].strip() != "self":
        return False
    at = len(code[:dot].encode("utf-8"))
    node = parse(code).root_node.descendant_for_byte_range(at, at)
    while node is not None and node.type not in ("function_definition", "lambda", "class_definition"):
        node = node.parent
    name = node.child_by_field_name("name") if node is not None and node.type == "function_definition" else None
    return name is not None and name.text == b"__init__"


def attributes_spelled(code: str, dot: int) -> SpelledAttributes | None:
    """The attributes the document spells after the dotted name that ends at `dot` (the `.` of `self.x.`),
    in the scope where that name is the same object; None when the dereferenced expression is no dotted
    name (a call, a subscript, a literal). A monitor checks jedi's list against them: a name the code
    uses that jedi does not list shows the list is incomplete (an unresolved base class, a subclass's or
    a caller's attribute)."""
    m = _NAME_CHAIN.search(code, max(0, dot - 200), dot)
    if m is None:
        return None
    parts = [p.strip() for p in m.group().split(".")]
    of_instance = parts[0] in _INSTANCE_NAMES
    lo, hi = _scope(code, dot, of_instance)
    sep = r"[ \t]*\.[ \t]*"
    chain = sep.join(re.escape(p) for p in parts)
    pattern = re.compile(r"(?<![\w.])" + chain + sep + r"([^\W\d]\w*)")
    names = {
        found.group(1)
        for found in pattern.finditer(code, lo, hi)
        if found.start(1) != dot + 1 and region_at(code, found.start(1)) == "code"
    }
    dynamic = False
    if of_instance and len(parts) == 1:
        hook = re.compile(r"\bsetattr\([ \t]*" + chain + r"[ \t]*,|(?<![\w.])" + chain + sep + r"__dict__\b")
        dynamic = any(region_at(code, h.start()) == "code" for h in hook.finditer(code, lo, hi))
    return SpelledAttributes(frozenset(names), dynamic)
