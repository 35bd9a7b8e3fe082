"""CompileConfig: JSON round trip, validation of every option, resolved defaults."""

from __future__ import annotations

import pytest

from adatsq.compiler.settings import CompileConfig
from adatsq.core.errors import CompileError


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


def test_default_of_reads_the_dataclass() -> None:
    from adatsq.compiler.settings import default_of

    assert default_of("calib_samples") == CompileConfig(model="m", target=3.1, out="x").calib_samples
    assert default_of("resolution") is None
    with pytest.raises(KeyError, match="no default"):
        default_of("target")
    with pytest.raises(KeyError, match="no field"):
        default_of("bogus")
