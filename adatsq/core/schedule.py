"""``schedule.json``: contract 2, the only channel from the search to quantization and export.

Versioned; loading rejects unknown keys, an unsupported version, inconsistent lengths and a schedule written
for another model. ``configs`` are the distinct activation-bit vectors (one entry per layer of
``act_layers``); ``step_configs[i]`` is the configuration id used at denoising step i. Equal bits within a
unit (linears that share an input) are part of the invariant.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from adatsq.core.config import ConfigError, JsonConfig, dump_json, load_json
from adatsq.core.contract import ACT_BITS, WEIGHT_BITS

__all__ = [
    "SCHEDULE_VERSION",
    "CalibrationProvenance",
    "ParetoEntry",
    "Schedule",
    "SamplerSpec",
    "load_schedule",
    "save_schedule",
]

SCHEDULE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SamplerSpec(JsonConfig):
    """What fixes the timestep sequence: scheduler class and config, steps, resolution, guidance."""

    scheduler: str
    scheduler_config: dict
    guidance_scale: float
    timesteps: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class ParetoEntry(JsonConfig):
    """One surviving path of the beam search."""

    step_configs: tuple[tuple[int, ...], ...]  # the unit-bit vector chosen at each step
    average_bits: float
    cumulative_loss: float
    metric: float | None
    selected: bool


@dataclasses.dataclass(frozen=True)
class CalibrationProvenance(JsonConfig):
    prompts: tuple[str, ...] | None  # None: synthetic conditioning (tiny models)
    seed: int
    samples: int
    heldout_seeds: tuple[int, ...]
    loss: str = "flow-matching MSE against v* = noise - x0 of the full-precision sample"


@dataclasses.dataclass(frozen=True)
class Schedule(JsonConfig):
    format_version: int
    model: str
    model_id: str
    revision: str | None
    model_fingerprint: str
    steps: int
    resolution: tuple[int, ...]
    sampler: SamplerSpec
    target_bits: float
    achieved_bits: float
    group_size: int
    act_layers: tuple[str, ...]
    units: tuple[tuple[str, ...], ...]
    weight_bits: dict[str, int]
    weight_only_layers: tuple[str, ...]
    configs: tuple[tuple[int, ...], ...]
    step_configs: tuple[int, ...]
    pareto: tuple[ParetoEntry, ...]
    calibration: CalibrationProvenance
    search: dict
    #: True for ``--random-weights``: the published architecture with seeded random weights, not a real model
    random_weights: bool = False

    def __post_init__(self) -> None:
        if self.format_version != SCHEDULE_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is not supported (this adatsq reads {SCHEDULE_VERSION})"
            )
        if len(self.step_configs) != self.steps:
            raise ValueError(f"step_configs has {len(self.step_configs)} entries for {self.steps} steps")
        if len(self.sampler.timesteps) != self.steps:
            raise ValueError(
                f"sampler.timesteps has {len(self.sampler.timesteps)} entries for {self.steps} steps"
            )
        for i, c in enumerate(self.step_configs):
            if not 0 <= c < len(self.configs):
                raise ValueError(f"step {i} names configuration {c}, but only {len(self.configs)} exist")
        layer_unit = {m: u for u, members in enumerate(self.units) for m in members}
        if tuple(m for u in self.units for m in u) != self.act_layers:
            raise ValueError("units do not partition act_layers in order")
        for k, cfg in enumerate(self.configs):
            if len(cfg) != len(self.act_layers):
                raise ValueError(f"configuration {k} has {len(cfg)} bits for {len(self.act_layers)} layers")
            bad = sorted({b for b in cfg if b not in ACT_BITS})
            if bad:
                raise ValueError(f"configuration {k} uses activation bits {bad}; allowed {ACT_BITS}")
            per_unit: dict[int, set[int]] = {}
            for name, b in zip(self.act_layers, cfg):
                per_unit.setdefault(layer_unit[name], set()).add(b)
            if any(len(v) > 1 for v in per_unit.values()):
                raise ValueError(f"configuration {k} gives different bits to layers that share an input")
        missing = [n for n in (*self.act_layers, *self.weight_only_layers) if n not in self.weight_bits]
        if missing:
            raise ValueError(f"weight_bits misses {missing[:3]}")
        bad_w = sorted({b for b in self.weight_bits.values() if b not in WEIGHT_BITS})
        if bad_w:
            raise ValueError(f"weight bits {bad_w} are not supported; allowed {WEIGHT_BITS}")

    # --- derived views ---------------------------------------------------------------------------------------
    def bits_at(self, step: int) -> dict[str, int]:
        return dict(zip(self.act_layers, self.configs[self.step_configs[step]]))

    def average_bits(self) -> float:
        total = sum(sum(self.configs[c]) for c in self.step_configs)
        return total / (self.steps * max(1, len(self.act_layers)))

    def bit_fractions(self) -> dict[int, float]:
        counts: Counter[int] = Counter()
        for c in self.step_configs:
            counts.update(self.configs[c])
        n = sum(counts.values()) or 1
        return {b: counts[b] / n for b in sorted(counts)}

    def check_model(self, model: str, fingerprint: str | None = None) -> None:
        if model != self.model:
            raise ConfigError(f"schedule.json was written for model {self.model!r}, not {model!r}")
        if fingerprint is not None and fingerprint != self.model_fingerprint:
            raise ConfigError(
                f"schedule.json was written for other weights of {model} (fingerprint {self.model_fingerprint[:12]} "
                f"≠ {fingerprint[:12]}); recompile into a fresh output directory"
            )


def save_schedule(path: Path, schedule: Schedule) -> None:
    dump_json(path, schedule)


def load_schedule(path: Path) -> Schedule:
    return load_json(path, Schedule)
