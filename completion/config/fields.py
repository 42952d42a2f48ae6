"""The checks behind the configuration tree: one generic validator driven by the dataclasses' type hints.

The tree (`superpie.completion.config`) is plain dataclasses whose type hints are the contract:
`Literal[...]` for modes, `bool` / `int` / `float` / `str`, `X | None` where None means "decide for
me", `frozenset[str]` for name sets, and `Annotated[int, Range(low=1)]` where a number has bounds.
`Checked` makes every slice check its fields when it is built and whenever a field is assigned, so a
wrong value is a `ValueError` at the line that wrote it, not a surprise deep in decoding. The same
checks parse the CLI's flags and the language server's JSON (`leaf_hints`, `replaced`), so no front
door keeps its own list of choices or bounds.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union

T = TypeVar("T")


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of a number field (None: unbounded on that side)."""

    low: float | None = None
    high: float | None = None

    def problem(self, value: float) -> str | None:
        """Why `value` is out of bounds, or None."""
        if self.low is not None and value < self.low:
            if self.low == 0:
                return "must not be negative"
            return "must be positive" if self.low == 1 and isinstance(value, int) else f"must be at least {self.low}"
        if self.high is not None and value > self.high:
            return f"must be at most {self.high}"
        return None


def split_annotated(hint: object) -> tuple[object, tuple[Range, ...]]:
    """(the bare type, its bounds) of a possibly `Annotated` hint."""
    if typing.get_origin(hint) is Annotated:
        bare, *meta = typing.get_args(hint)
        return bare, tuple(m for m in meta if isinstance(m, Range))
    return hint, ()


def optional_arms(hint: object) -> tuple[object, bool]:
    """(the hint without None, whether None is allowed): `int | None` -> (int, True)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(arms) < len(typing.get_args(hint))
        return (arms[0] if len(arms) == 1 else Union[tuple(arms)]), nullable  # noqa: UP007
    return hint, False


def bare_type(hint: object) -> object:
    """The type under `Annotated` and `| None`: `Annotated[int, Range(low=1)] | None` -> int."""
    return split_annotated(optional_arms(hint)[0])[0]


def choices(hint: object) -> tuple[object, ...] | None:
    """The values a `Literal` field (optionally Annotated or Optional) may take, else None."""
    bare = bare_type(hint)
    return typing.get_args(bare) if typing.get_origin(bare) is Literal else None


def check(hint: object, value: object) -> Any:
    """`value` as a field typed `hint` holds it (an int where a float goes becomes a float, a list of
    strings where a frozenset goes becomes one); a ValueError says what is wrong with it."""
    bare, nullable = optional_arms(hint)
    if value is None:
        if nullable:
            return None
        raise ValueError("must not be null")
    bare, bounds = split_annotated(bare)
    held: Any = _check_type(bare, value)
    for bound in bounds:
        problem = bound.problem(held)
        if problem:
            raise ValueError(f"{problem}, got {held!r}")
    return held


def _check_type(hint: object, value: object) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        problems = []
        for arm in typing.get_args(hint):
            try:
                return check(arm, value)
            except ValueError as exc:
                problems.append(str(exc))
        raise ValueError(" or ".join(problems))
    if origin is Literal:
        allowed = typing.get_args(hint)
        if isinstance(value, bool) or value not in allowed:
            raise ValueError(f"expected one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if origin is frozenset:
        if isinstance(value, str | bytes) or not isinstance(value, frozenset | set | list | tuple):
            raise ValueError(f"expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return frozenset(check(item, v) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, hint):
            raise ValueError(f"expected a {hint.__name__}, got {type(value).__name__}")
        return value
    raise TypeError(f"a configuration field cannot be typed {hint!r}")  # a mistake in the tree, not in a value


_FIELD_HINTS: dict[type, dict[str, object]] = {}


def field_hints(cls: type) -> dict[str, object]:
    """Each dataclass field of `cls` with its resolved type hint (Annotated bounds kept); resolved once."""
    if cls not in _FIELD_HINTS:
        hints = typing.get_type_hints(cls, include_extras=True)
        _FIELD_HINTS[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    return _FIELD_HINTS[cls]


class Checked:
    """Base of the configuration slices: fields are checked against their type hints when a slice is
    built, replaced or assigned, so an invalid mode, type or bound is a ValueError naming the field."""

    def __setattr__(self, name: str, value: object) -> None:
        hint = field_hints(type(self)).get(name)
        if hint is not None:
            value = _checked_field(type(self), name, hint, value)
        super().__setattr__(name, value)

    def __post_init__(self) -> None:
        # frozen slices bypass __setattr__ in __init__; checking the others again costs microseconds
        for name, hint in field_hints(type(self)).items():
            object.__setattr__(self, name, _checked_field(type(self), name, hint, getattr(self, name)))


def _checked_field(cls: type, name: str, hint: object, value: object) -> Any:
    try:
        return check(hint, value)
    except ValueError as exc:
        raise ValueError(f"{cls.__name__}.{name}: {exc}") from None


def is_section(hint: object) -> bool:
    """Whether a field holds a nested slice (a dataclass) rather than a value."""
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def leaf_hints(cls: type, prefix: str = "") -> dict[str, object]:
    """Every value field under `cls` by dotted path ("decoding.superposed.ngram_order"), in field order."""
    out: dict[str, object] = {}
    for name, hint in field_hints(cls).items():
        if is_section(hint):
            out.update(leaf_hints(typing.cast(type, hint), f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = hint
    return out


def get_path(obj: object, path: str) -> Any:
    """The value at a dotted path."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def replaced(obj: T, path: str, value: object) -> T:
    """A copy of `obj` with the field at the dotted `path` set to `value` (checked; the ValueError
    names the path). Slices off the path are shared with `obj`; frozen slices are rebuilt, not mutated."""
    return _replaced(obj, path.split("."), value, path)


def _replaced(obj: T, parts: list[str], value: object, path: str) -> T:
    head, rest = parts[0], parts[1:]
    hint = field_hints(type(obj)).get(head)
    if hint is None or bool(rest) != is_section(hint):
        raise ValueError(f"{path}: {'a section, not a value' if hint is not None and not rest else 'no such setting'}")
    if rest:
        new = _replaced(getattr(obj, head), rest, value, path)
    else:
        try:
            new = check(hint, value)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return dataclasses.replace(obj, **{head: new})  # type: ignore[type-var]
