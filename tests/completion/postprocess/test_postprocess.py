from pathlib import Path

import paths
import pytest
import tomllib

from superpie.completion.config import (
    BracketConfig,
    IndentConfig,
    PostprocessConfig,
    RankConfig,
    StopConfig,
    SuffixConfig,
)
from superpie.completion.draft import Draft
from superpie.completion.postprocess.blank import drop_blank, trim_leading_blank_lines
from superpie.completion.postprocess.block import limit_lines, trim_to_block
from superpie.completion.postprocess.brackets import trim_unbalanced_brackets
from superpie.completion.postprocess.context import DraftContext, detect_indent_unit
from superpie.completion.postprocess.indentation import normalize_indentation
from superpie.completion.postprocess.line import trim_to_line
from superpie.completion.postprocess.pipeline import build_filters, postprocess
from superpie.completion.postprocess.rank import merge_duplicates, rank
from superpie.completion.postprocess.suffix import trim_repeated_suffix
from superpie.completion.postprocess.whole_line import normalize_whole_line

CURSOR = "<|>"
GOLDEN = paths.DATA / "golden"
CASES = sorted(GOLDEN.glob("*/*.toml"))


def ctx(document: str, multiline: bool = False, indent_unit: str | None = None) -> DraftContext:
    offset = document.index(CURSOR)
    return DraftContext.at(document.replace(CURSOR, "", 1), offset, multiline, indent_unit)


def text_of(out: Draft | None) -> str | None:
    return None if out is None else out.text


# ---- golden cases: the whole pipeline ---------------------------------------------------------


def _draft(i: int, spec: str | dict) -> Draft:
    if isinstance(spec, str):
        return Draft(spec, id=i)
    n = spec.get("tokens", 0)
    return Draft(
        spec["text"], logprob=spec.get("logprob"), tokens=tuple(range(n)),
        monitor_score=spec.get("monitor_score"), id=i,
    )  # fmt: skip


def _case(path: Path):
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    marks = [pytest.mark.xfail(strict=True, reason=data["xfail"])] if "xfail" in data else []
    return pytest.param(path, id=f"{path.parent.name}/{path.stem}", marks=marks)


def test_golden_cases_cover_every_behaviour() -> None:
    assert {p.parent.name for p in CASES} >= {"stop", "suffix", "brackets", "indent", "blank", "rank", "broken"}


@pytest.mark.parametrize("path", [_case(p) for p in CASES])
def test_golden(path: Path) -> None:
    case = tomllib.loads(path.read_text(encoding="utf-8"))
    assert set(case) <= {"description", "xfail", "mode", "indent_unit", "document", "drafts", "expected",
                         "expected_scores", "config"}  # fmt: skip
    assert case["mode"] in ("single", "multi")
    context = ctx(case["document"], case["mode"] == "multi", case.get("indent_unit"))
    config = PostprocessConfig().with_delta(case.get("config", {}))
    out = postprocess([_draft(i, d) for i, d in enumerate(case["drafts"])], context, config)
    assert [d.text for d in out] == case["expected"]
    if "expected_scores" in case:
        assert [d.score for d in out] == pytest.approx(case["expected_scores"])


# ---- context ------------------------------------------------------------------------------------


def test_context_lines_and_open_brackets() -> None:
    c = ctx("x = {'a': f(')', [1,  # (\n  2<|>)\ny = 1\n")
    assert c.line_prefix == "  2" and c.line_suffix == ")"
    assert c.open_brackets == ("{", "(", "[")
    assert c.closed_by_line_suffix == 1
    assert not c.at_blank_line and ctx("if x:\n    <|>\n").at_blank_line


@pytest.mark.parametrize(
    ("document", "unit"),
    [("def f():\n  return 1\n", "  "), ("def f():\n\treturn 1\n", "\t"), ("x = 1\n", "    "),
     ("class A:\n    def f(self):\n        pass\n", "    ")],
)  # fmt: skip
def test_detect_indent_unit(document: str, unit: str) -> None:
    assert detect_indent_unit(document) == unit


def test_config_delta_rejects_unknown_sections() -> None:
    assert PostprocessConfig().with_delta({"stop": {"max_lines": 3}}).stop.max_lines == 3
    with pytest.raises(ValueError, match="unknown"):
        PostprocessConfig().with_delta({"stops": {}})


# ---- one rule at a time -------------------------------------------------------------------------


def test_filters_have_verb_names_in_one_order() -> None:
    names = [f.__name__ for f in build_filters(PostprocessConfig())]
    assert names[0] == names[-2] == "drop_blank" and names[-1] == "normalize_whole_line"
    assert all(n.split("_")[0] in {"drop", "trim", "limit", "normalize"} for n in names)
    assert names.index("normalize_indentation") < names.index("trim_to_block")


def test_drop_blank() -> None:
    assert drop_blank()(Draft(" \n\t"), ctx("<|>")) is None
    assert text_of(drop_blank()(Draft(" x"), ctx("<|>"))) == " x"


def test_normalize_whole_line_before_code() -> None:
    step = normalize_whole_line()
    # at the start of a line that holds code: the finished line goes in above it, the indentation kept
    assert text_of(step(Draft("x = 1"), ctx("def f():\n<|>    return x\n"))) == "x = 1\n"
    assert text_of(step(Draft("x = 1"), ctx("def f():\n    <|>return x\n"))) == "x = 1\n    "
    # elsewhere, or unfinished (the token budget cut it), or multi-line mode: as it is
    assert text_of(step(Draft("x = 1", finished=False), ctx("def f():\n<|>    return x\n"))) == "x = 1"
    assert text_of(step(Draft("x = 1"), ctx("def f():\n    <|>\n    return x\n"))) == "x = 1"
    assert text_of(step(Draft("1)"), ctx("f(<|>)\n"))) == "1)"
    assert text_of(step(Draft("x = 1"), ctx("def f():\n<|>    return x\n", multiline=True))) == "x = 1"


def test_trim_to_line_only_in_single_line_mode() -> None:
    draft = Draft("a\nb")
    assert text_of(trim_to_line()(draft, ctx("x = <|>"))) == "a"
    assert text_of(trim_to_line()(draft, ctx("x = <|>", multiline=True))) == "a\nb"


def test_trim_leading_blank_lines_only_on_blank_lines() -> None:
    f = trim_leading_blank_lines()
    assert text_of(f(Draft("\n\n        x = 1\ny"), ctx("if a:\n    <|>\n"))) == "    x = 1\ny"
    assert text_of(f(Draft("\nx"), ctx("a = 1<|>\n"))) == "\nx"


def test_trim_to_block_uses_the_cursor_line_when_the_draft_starts_on_it() -> None:
    f = trim_to_block(StopConfig())
    c = ctx("def f(a):\n    if a<|>\n", multiline=True)
    draft = Draft(":\n        b = 1\n    c = 2\nd = 3\n")
    assert text_of(f(draft, c)) == ":\n        b = 1\n    c = 2"


def test_limit_lines() -> None:
    assert text_of(limit_lines(StopConfig(max_lines=1))(Draft("a\nb"), ctx("<|>", True))) == "a"


def test_trim_repeated_suffix_needs_all_compared_lines_to_match() -> None:
    f = trim_repeated_suffix(SuffixConfig(compare_lines=2))
    c = ctx("def f():\n    <|>\n    a = 1\n    b = 2\n", multiline=True)
    assert text_of(f(Draft("x = 0\n    a = 1\n    b = 3"), c)) == "x = 0\n    a = 1\n    b = 3"
    assert text_of(f(Draft("x = 0\n    a = 1\n    b = 2\n    c = 3"), c)) == "x = 0"
    assert f(Draft("a = 1"), c) is None
    assert text_of(trim_repeated_suffix(SuffixConfig(enabled=False))(Draft("a = 1"), c)) == "a = 1"


@pytest.mark.parametrize(
    ("document", "draft", "expected"),
    [
        ("foo(<|>", "a)) + 1", "a)"),
        ("foo(<|>)", "a)", "a"),
        ("foo(bar(<|>)", "x), y)", "x), y"),
        ("foo(<|>", "a, '))', b)", "a, '))', b)"),
        ("x = f'{y}' + (<|>", "f'{z}')", "f'{z}')"),
        ("x = <|>", "[a])", "[a]"),
        ("x = {<|>", "1: (2]", "1: (2"),
        ("s = '(<|>", ")'", ")'"),  # inside a string: nothing to balance
        ("s = '(<|>", "')'", "'"),  # the string closes first: that ) is code
        ("# note (<|>", "x)\ny)", "x)\ny"),  # the comment ends at the newline
    ],
)
def test_trim_unbalanced_brackets(document: str, draft: str, expected: str) -> None:
    out = trim_unbalanced_brackets(BracketConfig())(Draft(draft), ctx(document))
    assert text_of(out) == expected


@pytest.mark.parametrize(
    ("document", "unit", "draft", "expected"),
    [
        ("if a:<|>", "  ", "\n    b\n    c", "\n  b\n  c"),
        ("if a:<|>", "\t", "\n    b\n        c", "\n\tb\n\t\tc"),
        ("if a:<|>", "    ", "\n\tb", "\n    b"),
        ("x = 1<|>", "    ", "\n    y = 2", "\ny = 2"),
        ("if a:\n    b = 1<|>", "    ", "\n    c = (\n        1)\nd = 2", "\n    c = (\n        1)\nd = 2"),
        ("if a:\n  if b:<|>", "  ", "\n        c = (\n            1)\n  d", "\n    c = (\n        1)\n  d"),
        ("if a:<|>", "    ", "\n    b\n\n    c", "\n    b\n\n    c"),
        ("if a:<|>", "    ", "\n    b\n   \n    c", "\n    b\n\n    c"),
    ],
)
def test_normalize_indentation(document: str, unit: str, draft: str, expected: str) -> None:
    out = normalize_indentation(IndentConfig())(Draft(draft), ctx(document, True, unit))
    assert text_of(out) == expected


# ---- values, ranking, merging -------------------------------------------------------------------


def test_with_text_keeps_identity_and_the_tokens_that_fit() -> None:
    draft = Draft("ab\ncd", score=1.5, logprob=-3.0, tokens=(1, 2, 3), token_logprobs=(-1.0, -1.5, -0.5),
                  token_ends=(2, 3, 5), monitor_score=0.5, id=7)  # fmt: skip
    cut = draft.with_text("ab")
    assert (cut.id, cut.score, cut.monitor_score) == (7, 1.5, 0.5)
    assert cut.tokens == (1,) and cut.logprob == -1.0 and cut.num_tokens == 1
    assert draft.with_text("  ab\ncd").tokens == (1, 2, 3)  # re-indented: tokens stay


def test_rank_formula() -> None:
    c = ctx("def f(x):\n    return <|>\n")
    drafts = [
        Draft("x +", logprob=-1.0, tokens=(1, 2)),
        Draft("x", logprob=-1.0, tokens=(1,), monitor_score=0.25),
        Draft("x * 2", score=-0.1),  # no log-prob: the incoming score stands in
    ]
    config = RankConfig(length_alpha=1.0, syntax_penalty=2.0, monitor_penalty=4.0)
    out = rank(drafts, c, config)
    assert [(d.text, d.score) for d in out] == [("x * 2", -0.1), ("x +", -0.5 - 2.0), ("x", -1.0 - 3.0)]


def test_rank_greedy_bonus() -> None:
    c = ctx("def f(x):\n    return <|>\n")
    greedy = Draft("x", logprob=-1.0, tokens=(1, 2), greedy=True)  # mean -0.5
    close = Draft("y", logprob=-0.9, tokens=(3, 4))  # mean -0.45: within the bonus
    far = Draft("z", logprob=-0.6, tokens=(5, 6))  # mean -0.3: beyond it
    config = RankConfig(greedy_bonus=0.1)
    assert [d.text for d in rank([close, greedy], c, config)] == ["x", "y"]
    assert rank([greedy], c, config)[0].score == pytest.approx(-0.5 + 0.1)
    assert [d.text for d in rank([greedy, far], c, config)] == ["z", "x"]
    assert [d.text for d in rank([greedy, close], c, RankConfig(greedy_bonus=0.0))] == ["y", "x"]


def test_rank_monitor_hook_fills_the_score() -> None:
    out = rank([Draft("y", logprob=-1.0)], ctx("<|>"), monitor=lambda d, c: 0.0)
    assert out[0].monitor_score == 0.0 and out[0].score == pytest.approx(-1.0 - 2.0)


def test_merge_duplicates_keeps_the_best() -> None:
    out = merge_duplicates([Draft("a ", score=1.0, id=1), Draft("a", score=2.0, id=2), Draft("b", id=3)])
    assert [(d.text, d.id) for d in out] == [("a", 2), ("b", 3)]
