import random
import threading

import paths
import pytest

from superpie.analysis import lexical, syntax
from superpie.analysis.syntax import SyntaxFacts, error_count, facts_at, line_indent, parse, region_at

DATA = paths.DATA / "analysis"


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ('x = "abc', "string"),
        ('x = "abc"', "code"),
        ("x = 1 # comm", "comment"),
        ("x = 1 #", "comment"),
        ("x = 1 # 'a\ny", "code"),
        ("x = '''abc\ndef", "string"),
        ('x = """abc""" + y', "code"),
        ('x = "a\\"', "string"),
        ('x = r"a\\"', "string"),
        ("s = rb'\\'", "string"),
        ('x = "a\nb', "code"),  # a single-quoted string ends at the line end
        ('x = "a\\\nb', "string"),  # ... unless the newline is escaped
        ('x = f"a{b.c', "code"),
        ('x = f"a{b.c}', "string"),
        ('x = f"a{b}"', "code"),
        ('x = f"{{b', "string"),  # {{ is a literal brace
        ('x = f"{x!r}', "string"),
        ('x = f"a{b:>10', "string"),  # format spec
        ('x = f"{x:{w', "code"),  # nested field in a format spec
        ('x = f"{x:{w}', "string"),
        ('x = f"{x:>3}" ; y = z', "code"),
        ('x = f"{d["k', "string"),  # PEP 701: same quotes inside a field
        ('x = f"{d["k"]', "code"),
        ('x = f"{(1,\n2)', "code"),
        ("x = rf'\\{y", "code"),  # raw f-string: backslash does not escape the brace
        ('x = f"\\N{DASH', "string"),
        ("bar'x", "string"),  # 'r' after an identifier char is no prefix
        ("x = 'é' # ü", "comment"),
        ("x = 'é' + ü", "code"),
        ("", "code"),
        ("#", "comment"),
    ],
)
def test_region_at_end(text, region):
    assert region_at(text, len(text)) == region
    assert facts_at(text, len(text)).region == region


def test_region_inside_text():
    text = 'a = "xy" # c\nb'
    regions = [region_at(text, i) for i in range(len(text) + 1)]
    assert regions == ["code"] * 5 + ["string"] * 3 + ["code"] * 2 + ["comment"] * 3 + ["code"] * 2


def test_region_incremental_memo_matches_fresh_scan():
    source = (DATA / "lexical_sample.py").read_text()
    fresh = [lexical.lex_state(source, 0, i).region for i in range(len(source) + 1)]
    rng = random.Random(0)
    offsets = list(range(len(source) + 1))  # growing prefixes, like a draft being decoded
    offsets += [rng.randrange(len(source) + 1) for _ in range(300)]
    for i in offsets:
        assert region_at(source[:i], i) == fresh[i], (i, source[max(0, i - 20) : i])
        assert region_at(source, i) == fresh[i], i


def _tree_regions(text: str) -> dict[int, str]:
    """Positions whose region tree-sitter states unambiguously: right after a char of a leaf token."""
    char_at = {}  # byte offset of each char start -> str offset
    b = 0
    for i, ch in enumerate(text):
        char_at[b] = i
        b += len(ch.encode())
    out = {}
    stack = [parse(text).root_node]
    while stack:
        node = stack.pop()
        kind = {"string_content": "string", "comment": "comment", "identifier": "code"}.get(node.type)
        if kind is not None:
            for b in range(node.start_byte + 1, node.end_byte):
                if b in char_at and text[char_at[b] - 1] != "{":  # after "{" of "{{" a prefix opens a field
                    out[char_at[b]] = kind
        if node.type != "comment":
            stack.extend(c for c in node.children if c.type != "escape_sequence")
    return out


def test_region_agrees_with_tree_sitter_on_complete_code():
    text = (DATA / "lexical_sample.py").read_text()
    expected = _tree_regions(text)
    assert {"code", "string", "comment"} <= set(expected.values())
    mismatches = [(i, want) for i, want in expected.items() if region_at(text, i) != want]
    assert not mismatches


def test_facts_enclosing_and_indent():
    text = "def f(a):\n    return g(a, b.c)"
    facts = facts_at(text, len(text) - 1)
    assert isinstance(facts, SyntaxFacts)
    assert facts.indent == "    "
    assert facts.enclosing[0] == "identifier"
    assert "argument_list" in facts.enclosing and "function_definition" in facts.enclosing
    assert facts.enclosing[-1] == "module"
    assert facts_at(text, 0).enclosing == ("module",)


BLOCKS = "def f():\n    x = 1\n    y = (1,\n2)\n\n    # c\nz = 3\n"


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("def", len(BLOCKS)),  # module level
        ("x = 1", BLOCKS.index("2)") + 2),  # inside f: ends after the bracketed continuation line
        ("2)", BLOCKS.index("2)") + 2),  # on a continuation line: its logical line decides
        ("z = 3", len(BLOCKS)),
    ],
)
def test_block_end(marker, expected):
    assert facts_at(BLOCKS, BLOCKS.index(marker) + 1).block_end == expected


def test_block_end_nested_and_comment_lines():
    text = "class A:\n    def m(self):\n        a = 1\n# flush-left comment\n        b = 2\n\n    def n(self):\n"
    assert facts_at(text, text.index("a = 1")).block_end == text.index("b = 2") + 5
    assert facts_at(text, text.index("def m")).block_end == len(text) - 1  # class body ends at def n(...):


def test_block_end_blank_cursor_line_uses_cursor_column():
    text = "def f():\n    x = 1\n    \nprint(x)\n"
    cursor = text.index("    \n") + 4
    assert facts_at(text, cursor).block_end == cursor
    assert facts_at(text, cursor - 4).block_end == len(text)  # column 0 is module level


def test_logical_lines_skip_continuations():
    text = "a = (1,\n2)\nb = 1 + \\\n  2\nc = 3 + \\\r\n  4\nd"
    starts = lexical.logical_line_starts(text)
    assert [text[s] for s in starts] == ["a", "b", "c", "d"]


def test_block_end_draft_cut():
    doc = "def f(xs):\n    for x in xs:\n        "
    draft = "print(x)\n        y = x\n    return y\n\nf([1])"
    text = doc + draft
    assert text[len(doc) : facts_at(text, len(doc)).block_end] == "print(x)\n        y = x"


def test_non_ascii_offsets():
    text = "é = 'ü'\nif é:\n    x = ü.a  # ç\n    y = 'ß"
    assert facts_at(text, text.index("ü.a") + 3).enclosing[:2] == ("identifier", "attribute")
    assert region_at(text, text.index("ç")) == "comment"
    assert region_at(text, len(text)) == "string"
    assert facts_at(text, text.index("x =")).block_end == len(text)
    assert facts_at("𝔘 = 1\nif 𝔘:\n    z = 2\nw", 18).block_end == len("𝔘 = 1\nif 𝔘:\n    z = 2")


def test_error_count():
    assert error_count("x = 1\n") == 0
    assert error_count("x = (1,") >= 1
    assert error_count("def f(:\n  x = (\n") > error_count("def f():\n  x = (\n")


def test_line_indent():
    assert line_indent("  \tx = 1") == "  \t"
    assert line_indent("x") == ""
    assert line_indent("   ") == "   "


def test_parse_is_cached_and_thread_safe():
    assert parse("x = 1").root_node.type == "module"
    assert parse("x = 1") is parse("x = 1")
    results = []

    def work():
        results.append(all(error_count(f"x{i} = {i}\n") == 0 for i in range(50)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4
    assert syntax._TREE_CACHE_SIZE >= 1


def test_lex_state_resumes_a_scan() -> None:
    text = 'x = f"{a[\'k\']:>{w}}" + (1,  # (\n 2)\ns = """doc\n'
    for cut in [i for i in range(len(text) + 1) if text[i - 1 : i] in ("", " ", "\n")]:  # no token split
        resumed = lexical.lex_state(text, cut, state=lexical.lex_state(text, 0, cut))
        assert resumed == lexical.lex_state(text), cut
    assert lexical.lex_state("x = 1  # c").in_comment and lexical.lex_state("x = 1  # c").region == "comment"
    assert lexical.lex_state('x = "a').region == "string" and lexical.lex_state("x = (").region == "code"


def test_logical_line_starts_from_a_state() -> None:
    text = "a = (1,\n2)\nb = 1  # c (\nc = [\n]\nd"
    full = lexical.logical_line_starts(text)
    assert [text[s] for s in full] == ["a", "b", "c", "d"]
    cut = text.index("# c") + 2  # inside the comment: the scan resumes at its newline
    assert lexical.logical_line_starts(text, cut, lexical.lex_state(text, 0, cut)) == [s for s in full if s > cut]
    tail = full[1]  # a logical line start: the rest scans as a file of its own
    assert lexical.logical_line_starts(text, tail) == full[1:]


def test_code_brackets_and_open_brackets() -> None:
    text = "f(a, '(', [b  # ]\n, {c: f'{d}'}"
    assert "".join(ch for _, ch in lexical.code_brackets(text)) == "([{}"
    assert all(text[at] == ch for at, ch in lexical.code_brackets(text))
    assert lexical.open_brackets(text) == ("(", "[")
    assert lexical.open_brackets("x = 1\ny = (2,\n") == ("(",)
    start = text.index("]")  # in the comment: the scan resumes at its newline
    assert [ch for _, ch in lexical.code_brackets(text, start, state=lexical.lex_state(text, 0, start))] == ["{", "}"]


def test_block_extent_says_whether_a_dedent_closed_the_block() -> None:
    text = "def f():\n    x = 1\n    # c\n"
    assert syntax.block_extent(text, text.index("x")) == (text.index("1") + 1, False)
    closed = text + "y = 2\n"
    assert syntax.block_extent(closed, text.index("x")) == (text.index("1") + 1, True)
    assert syntax.block_extent(closed + "z", 0) == (len(closed) + 1, False)  # module level: never closed
