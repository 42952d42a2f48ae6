"""Repository formats detected from special tokens, and snippets chosen under a budget without duplicates."""

from __future__ import annotations

from test_fim_cache import with_tokens
from tiny import tiny_tokenizer

from superpie.completion.context.format import PLAIN, detect_repo_format
from superpie.completion.context.select import Candidate, choose

FILE = "".join(f"line_{i} = {i}\n" for i in range(60))


def test_the_format_comes_from_the_tokenizer_s_special_tokens() -> None:
    qwen = with_tokens(["<|repo_name|>", "<|file_sep|>", "<|fim_prefix|>"])
    fmt = detect_repo_format(qwen)
    assert fmt.name == "qwen"
    ids = fmt.snippet(qwen, "pkg/a.py", "x = 1")
    assert ids[0] == qwen.token_to_id("<|file_sep|>")
    assert qwen.decode(ids[1:]) == "pkg/a.py\nx = 1\n"
    assert fmt.repo(qwen, "proj")[0] == qwen.token_to_id("<|repo_name|>")
    star = with_tokens(["<repo_name>", "<file_sep>", "<filename>"])
    fmt = detect_repo_format(star)
    assert fmt.name == "starcoder" and fmt.file_sep == star.token_to_id("<file_sep>")
    assert star.decode(fmt.repo(star, "proj")[1:]) == "proj"  # StarCoder2: no newline after the name
    plain = tiny_tokenizer()
    assert detect_repo_format(plain) == PLAIN
    assert plain.decode(PLAIN.snippet(plain, "a.py", "x = 1\n")) == "# a.py\nx = 1\n\n"
    assert PLAIN.repo(plain, "proj") == []


def spell(path: str, code: str) -> list[int]:
    return PLAIN.snippet(tiny_tokenizer(), path, code)


def test_snippets_fit_the_budget_best_first_in_file_order() -> None:
    cands = [Candidate("b.py", FILE, 10, 20), Candidate("a.py", FILE, 0, 5), Candidate("c.py", FILE, 0, 50)]
    small = len(spell("b.py", "".join(FILE.splitlines(keepends=True)[10:20])))
    chosen = choose(cands, small + len(spell("a.py", "".join(FILE.splitlines(keepends=True)[:5]))) + 30, spell)
    assert [s.path for s in chosen] == ["a.py", "b.py", "c.py"]  # file order, not priority order
    assert sum(len(s.ids) for s in chosen) <= small + 200
    c = next(s for s in chosen if s.path == "c.py")
    assert c.start == 0 and 0 < c.end < 50  # cut from the end to fit what was left
    assert choose(cands, 5, spell) == []  # nothing fits


def test_duplicates_are_dropped_and_overlaps_merged() -> None:
    cands = [
        Candidate("a.py", FILE, 10, 20),
        Candidate("a.py", FILE, 12, 18),  # inside the first: a duplicate
        Candidate("a.py", FILE, 15, 30),  # overlapping: merged
        Candidate("b.py", FILE, 12, 18),  # another file: kept
    ]
    chosen = choose(cands, 10_000, spell)
    assert [(s.path, s.start, s.end) for s in chosen] == [("a.py", 10, 30), ("b.py", 12, 18)]
    assert chosen[0].code == "".join(FILE.splitlines(keepends=True)[10:30])


def test_an_outline_is_never_merged_with_its_file_s_lines() -> None:
    stub = "class A:\n    def f(self): ...\n    def g(self): ...\n"
    cands = [
        Candidate("a.py", stub, 0, 3, outline=True),
        Candidate("a.py", FILE, 0, 5),  # the same file's lines 0-5: not inside the outline
        Candidate("a.py", stub, 0, 3, outline=True),  # the same outline again: a duplicate
        Candidate("a.py", "def h(): ...\nX = 1\n", 0, 2, outline=True),  # another outline of the file
    ]
    chosen = choose(cands, 10_000, spell)
    assert [(s.outline, s.code) for s in chosen] == [
        (False, "".join(FILE.splitlines(keepends=True)[:5])),
        (True, stub),
        (True, "def h(): ...\nX = 1\n"),
    ]
    cut = choose(cands[:1], len(spell("a.py", "class A:\n    def f(self): ...\n")), spell)
    assert [s.code for s in cut] == ["class A:\n    def f(self): ...\n"]  # cut from the end to fit
