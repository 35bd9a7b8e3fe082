"""JsonConfig: strict JSON round trips; CompileConfig validation."""

from __future__ import annotations

import dataclasses

import pytest

from adatsq.compiler.config import ConfigError, JsonConfig
from adatsq.compiler.settings import CompileConfig, CompileError


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


def test_compile_config_round_trip() -> None:
    cfg = CompileConfig(model="tiny-flux", target=3.1, out="x", resolution=(64, 64), prompts=("a", "b"))
    assert CompileConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target": 2.9}, "outside \\[3, 16\\]"),
        ({"target": 16.5}, "outside \\[3, 16\\]"),
        ({"weight_bits": 5}, "--weight-bits"),
        ({"candidates": 0}, "--candidates"),
        ({"tau": 0.0}, "--tau"),
        ({"until": "deploy"}, "--until"),
        ({"max_engines": 0}, "--max-engines"),
    ],
)
def test_compile_config_rejects(changes: dict, message: str) -> None:
    base = {"model": "tiny-flux", "target": 3.1, "out": "x"}
    with pytest.raises(CompileError, match=message):
        CompileConfig(**{**base, **changes})


def test_weight_bits_default_follows_target() -> None:
    assert CompileConfig(model="m", target=3.1, out="x").resolved_weight_bits() == 3
    assert CompileConfig(model="m", target=4.5, out="x").resolved_weight_bits() == 4
