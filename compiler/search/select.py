"""Final selection: the best surviving path within the bit budget by an end-to-end metric."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from adatsq.compiler.search.beam import Path
from adatsq.compiler.search.errors import SearchError

__all__ = ["BUDGET_TOL", "SearchError", "cumulative_loss_metric", "select_path"]

BUDGET_TOL = 1e-9
"""A path is within budget when cum_bits / steps ≤ target + BUDGET_TOL (absorbs float rounding)."""


def cumulative_loss_metric(path: Path) -> float:
    """The cheapest metric: the path's summed per-step loss (a proxy for end-to-end error)."""
    return path.cum_loss


def select_path(
    paths: Sequence[Path],
    steps: int,
    target_bits: float,
    metric: Callable[[Path], float],
) -> tuple[Path, list[tuple[Path, float]]]:
    """Pick the path with the lowest metric among those whose average bits are within the target.

    Rule: feasible = {p : p.cum_bits / steps ≤ target_bits + 1e-9}. ``metric`` (lower is better) is called
    once per feasible path, in the order (cum_bits, cum_loss, choices) ascending, so an expensive or
    stateful metric sees a deterministic sequence. The best minimises (metric, cum_bits, cum_loss, choices):
    at equal metric, fewer bits win, then lower cumulative loss.

    Args:
        paths: surviving complete paths (e.g. from :func:`pareto_beam_search`).
        steps: number of denoising steps (the divisor of the average).
        target_bits: the budget on average activation bits.
        metric: end-to-end error of a path; must return a finite float.

    Returns:
        (best path, [(path, metric value)] for every feasible path in evaluation order).

    Raises:
        ValueError: steps < 1 or a non-finite target.
        SearchError: no paths, no path within the budget (the message names the smallest achievable
            average), or the metric returns a non-finite value.
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not math.isfinite(target_bits):
        raise ValueError(f"target_bits must be finite, got {target_bits!r}")
    if not paths:
        raise SearchError("no paths to select from: the beam search returned nothing")
    feasible = [p for p in paths if p.cum_bits / steps <= target_bits + BUDGET_TOL]
    if not feasible:
        lowest = min(p.cum_bits / steps for p in paths)
        raise SearchError(
            f"no path meets the target of {target_bits:g} average bits; the smallest achievable average "
            f"is {lowest:.6g} bits: raise --target to at least that, or include the all-minimum candidate"
        )
    feasible.sort(key=lambda p: (p.cum_bits, p.cum_loss, p.choices))
    evaluated: list[tuple[Path, float]] = []
    for p in feasible:
        value = float(metric(p))
        if not math.isfinite(value):
            raise SearchError(f"metric returned {value!r} for path {p.choices}: it must be a finite float")
        evaluated.append((p, value))
    best, _ = min(evaluated, key=lambda pv: (pv[1], pv[0].cum_bits, pv[0].cum_loss, pv[0].choices))
    return best, evaluated
