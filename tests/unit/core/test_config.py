"""JsonConfig: strict JSON round trips, unknown and missing keys, type errors."""

from __future__ import annotations

import dataclasses

import pytest

from adatsq.core.config import ConfigError, JsonConfig


@dataclasses.dataclass(frozen=True)
class _Inner(JsonConfig):
    a: int
    b: tuple[int, ...] = (1, 2)


@dataclasses.dataclass(frozen=True)
class _Outer(JsonConfig):
    name: str
    inner: _Inner
    maybe: float | None = None
    table: dict[str, int] = dataclasses.field(default_factory=dict)


def test_round_trip_nested() -> None:
    cfg = _Outer("x", _Inner(3, (4, 5)), 2.5, {"k": 1})
    assert _Outer.from_json(cfg.to_json()) == cfg


def test_unknown_key_names_key_and_allowed() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['typo'\].*allowed keys"):
        _Outer.from_dict({"name": "x", "inner": {"a": 1}, "typo": 3})
    with pytest.raises(ConfigError, match=r"_Outer.inner: unknown key"):
        _Outer.from_dict({"name": "x", "inner": {"a": 1, "c": 2}})


def test_type_and_missing_errors() -> None:
    with pytest.raises(ConfigError, match="missing required key 'name'"):
        _Outer.from_dict({"inner": {"a": 1}})
    with pytest.raises(ConfigError, match="expected int"):
        _Inner.from_dict({"a": "one"})
    with pytest.raises(ConfigError, match="not valid JSON"):
        _Inner.from_json("{")
