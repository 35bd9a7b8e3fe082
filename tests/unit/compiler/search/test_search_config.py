"""SearchConfig: JSON round trip, strict keys, validation."""

from __future__ import annotations

import pytest

from adatsq.compiler.search import SearchConfig
from adatsq.core.config import ConfigError


@pytest.mark.parametrize(
    "cfg",
    [
        SearchConfig(),
        SearchConfig(candidates=4, bit_choices=(4, 8), n_clusters=2, max_engines=3, keep_min_bits=False),
        SearchConfig(bit_choices=(3, 4, 8, 16), max_engines=1),
    ],
)
def test_round_trip(cfg: SearchConfig) -> None:
    again = SearchConfig.from_json(cfg.to_json())
    assert again == cfg
    assert isinstance(again.bit_choices, tuple)


def test_defaults() -> None:
    cfg = SearchConfig()
    assert (cfg.candidates, cfg.bit_choices, cfg.n_clusters, cfg.max_engines, cfg.keep_min_bits) == (
        8,
        (3, 4, 8),
        3,
        None,
        True,
    )
    assert SearchConfig.from_dict({}) == cfg


def test_unknown_key_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['candidate'\]"):
        SearchConfig.from_dict({"candidate": 8})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"candidates": 0}, "candidates"),
        ({"candidates": True}, "candidates"),
        ({"bit_choices": []}, "must not be empty"),
        ({"bit_choices": [8, 4, 3]}, "strictly increasing"),
        ({"bit_choices": [3, 3, 4]}, "strictly increasing"),
        ({"bit_choices": [2, 4]}, "not supported"),
        ({"n_clusters": 0}, "n_clusters"),
        ({"max_engines": 0}, "max_engines"),
        ({"keep_min_bits": 1}, "keep_min_bits"),
    ],
)
def test_validation(data: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SearchConfig.from_dict(data)
