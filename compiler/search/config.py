"""Settings of the search stage."""

from __future__ import annotations

import dataclasses

from adatsq.core.config import JsonConfig

__all__ = ["ACTIVATION_BITS", "SearchConfig"]

ACTIVATION_BITS = (3, 4, 8, 16)
"""Activation widths the quantized linear op supports (DESIGN.md, contract 1; 16 = not quantized)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class SearchConfig(JsonConfig):
    """Search settings.

    Attributes:
        candidates: M, the candidates per step and the beam width (paths kept per step), ≥ 1.
        bit_choices: allowed activation bits, strictly increasing, each in {3, 4, 8, 16}.
        n_clusters: the most sensitivity clusters per step, ≥ 1.
        max_engines: the most distinct bit vectors (engines) per schedule; None = unlimited.
        keep_min_bits: always keep the smallest-bits path in the beam (keeps every target ≥ min feasible).
    """

    candidates: int = 8
    bit_choices: tuple[int, ...] = (3, 4, 8)
    n_clusters: int = 3
    max_engines: int | None = None
    keep_min_bits: bool = True

    def __post_init__(self) -> None:
        if not _is_int(self.candidates) or self.candidates < 1:
            raise ValueError(f"candidates must be an integer >= 1, got {self.candidates!r}")
        bits = tuple(self.bit_choices)
        if not bits:
            raise ValueError("bit_choices must not be empty, e.g. [3, 4, 8]")
        bad = [b for b in bits if not _is_int(b) or b not in ACTIVATION_BITS]
        if bad:
            raise ValueError(
                f"bit_choices {list(bits)}: {bad} not supported; allowed: {list(ACTIVATION_BITS)}"
            )
        if any(a >= b for a, b in zip(bits, bits[1:])):
            raise ValueError(f"bit_choices {list(bits)} must be strictly increasing, e.g. [3, 4, 8]")
        if not _is_int(self.n_clusters) or self.n_clusters < 1:
            raise ValueError(f"n_clusters must be an integer >= 1, got {self.n_clusters!r}")
        if self.max_engines is not None and (not _is_int(self.max_engines) or self.max_engines < 1):
            raise ValueError(
                f"max_engines must be null (unlimited) or an integer >= 1, got {self.max_engines!r}"
            )
        if not isinstance(self.keep_min_bits, bool):
            raise ValueError(f"keep_min_bits must be true or false, got {self.keep_min_bits!r}")
        object.__setattr__(self, "bit_choices", bits)
