"""schedule.json (contract 2): round trip, strict loading, invariants, model checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adatsq.core.config import ConfigError
from adatsq.core.schedule import (
    CalibrationProvenance,
    ParetoEntry,
    SamplerSpec,
    Schedule,
    load_schedule,
    save_schedule,
)


def _schedule(**changes: object) -> Schedule:
    base = dict(
        format_version=1,
        model="tiny-flux",
        model_id="black-forest-labs/FLUX.1-dev",
        revision=None,
        model_fingerprint="ab" * 32,
        steps=3,
        resolution=(64, 64),
        sampler=SamplerSpec("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, 3.5, (1000.0, 700.0, 300.0)),
        target_bits=3.5,
        achieved_bits=3.0,
        group_size=32,
        act_layers=("a.q", "a.k", "b"),
        units=(("a.q", "a.k"), ("b",)),
        weight_bits={"a.q": 3, "a.k": 3, "b": 3, "mod": 4},
        weight_only_layers=("mod",),
        configs=((3, 3, 3), (4, 4, 8)),
        step_configs=(1, 0, 0),
        pareto=(ParetoEntry(((4, 8), (3, 3), (3, 3)), 3.61, 0.5, 0.01, True),),
        calibration=CalibrationProvenance(None, 0, 4, (10000,)),
        search={"candidates": 8},
    )
    base.update(changes)
    return Schedule(**base)  # type: ignore[arg-type]


def test_round_trip_is_exact(tmp_path: Path) -> None:
    s = _schedule()
    save_schedule(tmp_path / "schedule.json", s)
    assert load_schedule(tmp_path / "schedule.json") == s
    assert s.bits_at(0) == {"a.q": 4, "a.k": 4, "b": 8}
    assert s.average_bits() == pytest.approx((16 + 9 + 9) / 9)
    assert s.bit_fractions() == pytest.approx({3: 6 / 9, 4: 2 / 9, 8: 1 / 9})


def test_unknown_keys_rejected(tmp_path: Path) -> None:
    d = _schedule().to_dict()
    d["extra"] = 1
    (tmp_path / "s.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['extra'\]"):
        load_schedule(tmp_path / "s.json")
    d = _schedule().to_dict()
    d["sampler"]["sigma"] = 1
    (tmp_path / "s.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="sampler: unknown key"):
        load_schedule(tmp_path / "s.json")


def test_corrupt_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"format_version": 1, ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_schedule(tmp_path / "s.json")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 2}, "format_version 2 is not supported"),
        ({"step_configs": (0, 0)}, "2 entries for 3 steps"),
        ({"step_configs": (0, 0, 2)}, "names configuration 2"),
        ({"configs": ((3, 3), (4, 4))}, "2 bits for 3 layers"),
        ({"configs": ((3, 4, 3), (4, 4, 8))}, "share an input"),
        ({"configs": ((3, 3, 5), (4, 4, 8))}, "activation bits \\[5\\]"),
        ({"weight_bits": {"a.q": 3, "a.k": 3, "b": 3}}, "weight_bits misses"),
        ({"weight_bits": {"a.q": 2, "a.k": 3, "b": 3, "mod": 4}}, "weight bits \\[2\\]"),
    ],
)
def test_invariants(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _schedule(**changes)


def test_model_mismatch() -> None:
    s = _schedule()
    s.check_model("tiny-flux", "ab" * 32)
    with pytest.raises(ConfigError, match="written for model 'tiny-flux', not 'flux-dev'"):
        s.check_model("flux-dev")
    with pytest.raises(ConfigError, match="other weights"):
        s.check_model("tiny-flux", "cd" * 32)
