"""The configuration tree checks what it is given: modes, types and bounds, from its type hints alone."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from superpie.cache.document import MODES
from superpie.completion.config import (
    STRATEGIES,
    CacheConfig,
    CacheMode,
    CompletionConfig,
    DecodingConfig,
    DType,
    EngineConfig,
    ModelConfig,
    MonitorConfig,
    NgramConfig,
    PostprocessConfig,
    RankConfig,
    SuperposedConfig,
    VerifyConfig,
)
from superpie.completion.config.fields import check, choices, field_hints, get_path, leaf_hints, replaced
from superpie.completion.model.precision import PRECISIONS


def test_the_defaults_pass_their_own_checks() -> None:
    config = EngineConfig()
    for path, hint in leaf_hints(EngineConfig).items():
        assert check(hint, get_path(config, path)) == get_path(config, path), path


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CacheConfig(mode="incremental"), "CacheConfig.mode: expected one of pie, exact, full"),
        (lambda: SuperposedConfig(top_m=0), "SuperposedConfig.top_m"),
        (lambda: VerifyConfig(repair="some"), "VerifyConfig.repair: expected one of best, all, off"),
        (lambda: ModelConfig(dtype="fp8"), "ModelConfig.dtype: expected one of auto, float32"),
        (lambda: CompletionConfig(strategy="nucleus"), "CompletionConfig.strategy: expected one of greedy"),
        (lambda: DecodingConfig(multi_strategy=None), "DecodingConfig.multi_strategy: must not be null"),
        (lambda: EngineConfig(log_level="verbose"), "EngineConfig.log_level: expected one of error, warning"),
        (lambda: CompletionConfig(drafts=0), "CompletionConfig.drafts: must be positive, got 0"),
        (lambda: CompletionConfig(drafts=True), "CompletionConfig.drafts: expected an integer, got True"),
        (lambda: CacheConfig(memory_budget_mb="2048"), "CacheConfig.memory_budget_mb: expected an integer"),
        (lambda: MonitorConfig(jedi_budget_ms=-1), "MonitorConfig.jedi_budget_ms: must not be negative"),
        (lambda: SuperposedConfig(branch_ratio=1.5), "SuperposedConfig.branch_ratio: must be at most 1"),
        (lambda: MonitorConfig(enabled="yes"), "MonitorConfig.enabled: expected true or false"),
        (lambda: NgramConfig(ignored_dirs="node_modules"), "NgramConfig.ignored_dirs: expected a list"),
        (lambda: RankConfig(max_syntax_errors=-1), "RankConfig.max_syntax_errors: must not be negative"),
        (lambda: EngineConfig(cache=ModelConfig()), "EngineConfig.cache: expected a CacheConfig"),
    ],
)
def test_an_invalid_value_is_a_value_error_naming_the_field(build, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        build()


def test_assignment_and_replace_are_checked_too() -> None:
    config = EngineConfig()
    with pytest.raises(ValueError, match="CacheConfig.mode"):
        config.cache.mode = "bogus"
    assert config.cache.mode == "pie"  # unchanged
    with pytest.raises(ValueError, match="max_lines"):
        PostprocessConfig().with_delta({"stop": {"max_lines": 0}})
    with pytest.raises(ValueError, match="verify.repair_tokens"):
        replaced(config, "decoding.verify.repair_tokens", -2)
    config.monitors.jedi_budget_ms = 20  # an int where a float goes is held as a float
    assert config.monitors.jedi_budget_ms == 20.0 and isinstance(config.monitors.jedi_budget_ms, float)
    assert ModelConfig(threads=None).threads is None and SuperposedConfig(patience=None).patience is None


def test_replaced_copies_along_the_path_and_rebuilds_frozen_slices() -> None:
    config = EngineConfig()
    new = replaced(config, "postprocess.rank.greedy_bonus", 0.5)
    assert new.postprocess.rank.greedy_bonus == 0.5
    assert config.postprocess.rank.greedy_bonus == RankConfig().greedy_bonus  # the original is untouched
    assert new.decoding is config.decoding  # off the path: shared
    assert replaced(config, "ngram.ignored_dirs", ["build"]).ngram.ignored_dirs == frozenset({"build"})
    with pytest.raises(ValueError, match="^decoding.nope: no such setting"):
        replaced(config, "decoding.nope", 1)
    with pytest.raises(ValueError, match="^decoding: a section"):
        replaced(config, "decoding", 1)


def test_every_field_has_a_type_the_checks_know() -> None:
    for cls in {type(s) for s in _slices(EngineConfig())}:
        for name, hint in field_hints(cls).items():
            if not dataclasses.is_dataclass(hint):
                check(hint, getattr(cls(), name))  # a TypeError here: a field typed beyond the checks


def test_modes_kept_in_lower_layers_match_the_tree() -> None:
    assert typing.get_args(CacheMode) == tuple(MODES)
    assert set(typing.get_args(DType)) == set(PRECISIONS)
    assert choices(field_hints(CompletionConfig)["strategy"]) == STRATEGIES
    assert choices(field_hints(DecodingConfig)["multi_strategy"]) == STRATEGIES


def _slices(obj: object) -> list[object]:
    out = [obj]
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.extend(_slices(value))
    return out
