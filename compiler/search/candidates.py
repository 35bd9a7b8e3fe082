"""Per-step candidate activation-bit configurations from Fisher sensitivity scores.

A *unit* is a group of activation-quantized layers that share one input quantizer (so they necessarily get
the same activation bits); ``unit_sizes[u]`` is the number of layers in unit u. At one denoising step t the
caller gives one sensitivity score per unit (e.g. the summed Fisher information of its layers at t).

Rule (AdaTSQ, Fisher-guided candidates):

1. Cluster the units by log-sensitivity x_u = log s_u with *optimal* 1-D k-means (dynamic programming over
   the sorted distinct values; exact and deterministic) into k = min(n_clusters, #distinct scores)
   clusters, numbered 0 … k−1 by increasing sensitivity. Equal scores are one point, so units with equal
   scores always share a cluster and hence their bits.
2. Enumerate every monotone assignment b_0 ≤ b_1 ≤ … ≤ b_{k−1} of ``bit_choices`` to the clusters
   (C(|B|+k−1, k) of them; 10 for B = {3, 4, 8}, k = 3): a more sensitive unit never gets fewer bits.
3. The all-minimum assignment is always a candidate. It is the same bit vector at every step, so a schedule
   that uses it everywhere meets any target ≥ min(bit_choices) with a single engine.
4. If there are more than m assignments, keep m of them spread evenly over average bits: the all-minimum
   one, then for each target a_j = lo + (hi − lo)·j/(m − 1), j = 1 … m−1 (lo, hi the smallest and largest
   average), the not-yet-kept candidate nearest to a_j.

Candidates are ordered by average bits; equal averages are ordered by preferring more bits on the more
sensitive clusters (the reversed assignment compared lexicographically, larger first). Every tie in the
clustering and in the selection is broken by that fixed order, so equal inputs give equal outputs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from adatsq.core.contract import QUANTIZED_ACT_BITS

__all__ = ["Candidate", "cluster_by_sensitivity", "generate_candidates", "weighted_average_bits"]

# Relative tolerance under which two clustering costs count as equal (then the earlier split wins), so that
# rounding noise in the prefix sums cannot flip a tie.
_COST_RTOL = 1e-12


def _check_unit_sizes(unit_sizes: Sequence[int]) -> list[int]:
    sizes = [int(s) for s in unit_sizes]
    if not sizes:
        raise ValueError("unit_sizes is empty: there must be at least one activation-quantized unit")
    bad = [s for s in sizes if s < 1]
    if bad or any(isinstance(s, bool) or int(s) != s for s in unit_sizes):
        raise ValueError(f"unit_sizes must be integers >= 1 (layers per unit), got {list(unit_sizes)}")
    return sizes


def weighted_average_bits(bits: Sequence[int], unit_sizes: Sequence[int]) -> float:
    """Average bits over layers: Σ_u bits_u · size_u / Σ_u size_u.

    Args:
        bits: bits of each unit.
        unit_sizes: number of layers in each unit (each layer counted once).

    Returns:
        The layer-weighted average of the bits.

    Raises:
        ValueError: lengths differ, or a size is < 1.
    """
    sizes = _check_unit_sizes(unit_sizes)
    if len(bits) != len(sizes):
        raise ValueError(f"{len(bits)} bit values for {len(sizes)} units: lengths must match")
    return sum(b * s for b, s in zip(bits, sizes)) / sum(sizes)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One activation-bit configuration of a step: ``bits[u]`` is the activation bit width of unit u."""

    bits: tuple[int, ...]

    def average_bits(self, unit_sizes: Sequence[int]) -> float:
        """Layer-weighted average bits Σ_u bits_u · size_u / Σ_u size_u (see :func:`weighted_average_bits`)."""
        return weighted_average_bits(self.bits, unit_sizes)


def _log_positions(scores: Sequence[float]) -> list[float]:
    """Log-sensitivity per unit; a zero score sits one nat below the least sensitive positive score.

    log 0 = −∞ would swamp the k-means cost, so zeros are placed just below the smallest positive score:
    they land in the least sensitive cluster without pulling every other unit into one cluster. All zeros
    give all-equal positions (one cluster).
    """
    values = [float(s) for s in scores]
    for i, s in enumerate(values):
        if not math.isfinite(s) or s < 0:
            raise ValueError(f"scores[{i}] = {s!r}: sensitivity scores must be finite and >= 0")
    positives = [s for s in values if s > 0]
    if not positives:
        return [0.0] * len(values)
    floor = math.log(min(positives)) - 1.0
    return [math.log(s) if s > 0 else floor for s in values]


def _optimal_1d_kmeans(values: np.ndarray, weights: np.ndarray, k: int) -> list[int]:
    """Optimal weighted 1-D k-means of *sorted distinct* values into exactly k contiguous clusters.

    D[c][j] = min_{i} D[c−1][i−1] + SSE(i..j), SSE from prefix sums of w, w·x, w·x² (values centred first
    for accuracy). Ties (within a relative 1e-12) take the smallest split index i.

    Returns:
        The cluster label (0 … k−1, increasing with the value) of each value.
    """
    d = len(values)
    x = values - float(np.average(values, weights=weights))
    pw = np.concatenate([[0.0], np.cumsum(weights)])
    p1 = np.concatenate([[0.0], np.cumsum(weights * x)])
    p2 = np.concatenate([[0.0], np.cumsum(weights * x * x)])

    def sse(i: np.ndarray, j: int) -> np.ndarray:
        # cost of the cluster i..j (inclusive) for every i in the array
        w = pw[j + 1] - pw[i]
        s1 = p1[j + 1] - p1[i]
        s2 = p2[j + 1] - p2[i]
        return np.maximum(s2 - s1 * s1 / w, 0.0)

    inf = math.inf
    cost = np.full((k + 1, d), inf)
    split = np.zeros((k + 1, d), dtype=np.int64)
    cost[1] = [float(sse(np.array([0]), j)[0]) for j in range(d)]
    for c in range(2, k + 1):
        for j in range(c - 1, d):
            starts = np.arange(c - 1, j + 1)  # first index of the last cluster
            total = cost[c - 1][starts - 1] + sse(starts, j)
            best = float(total.min())
            tol = _COST_RTOL * max(abs(best), 1.0)
            pick = int(np.flatnonzero(total <= best + tol)[0])
            cost[c][j] = total[pick]
            split[c][j] = starts[pick]
    labels = [0] * d
    j = d - 1
    for c in range(k, 0, -1):
        i = int(split[c][j]) if c > 1 else 0
        for idx in range(i, j + 1):
            labels[idx] = c - 1
        j = i - 1
    return labels


def cluster_by_sensitivity(scores: Sequence[float], n_clusters: int = 3) -> list[int]:
    """Cluster units by log-sensitivity with optimal 1-D k-means.

    Args:
        scores: sensitivity of each unit (finite, ≥ 0).
        n_clusters: the most clusters to form; k = min(n_clusters, number of distinct scores).

    Returns:
        A label per unit in 0 … k−1; a larger label means a more sensitive cluster. Equal scores get equal
        labels, and labels are non-decreasing in the score.

    Raises:
        ValueError: empty or invalid scores, or n_clusters < 1.
    """
    if isinstance(n_clusters, bool) or int(n_clusters) != n_clusters or n_clusters < 1:
        raise ValueError(f"n_clusters must be an integer >= 1, got {n_clusters!r}")
    if len(scores) == 0:
        raise ValueError("scores is empty: there must be at least one activation-quantized unit")
    logs = _log_positions(scores)
    distinct = sorted(set(logs))
    index = {v: i for i, v in enumerate(distinct)}
    weights = np.zeros(len(distinct))
    for v in logs:
        weights[index[v]] += 1.0
    k = min(int(n_clusters), len(distinct))
    labels_of_distinct = _optimal_1d_kmeans(np.asarray(distinct, dtype=np.float64), weights, k)
    return [labels_of_distinct[index[v]] for v in logs]


def _order_key(avg: float, assignment: tuple[int, ...]) -> tuple[float, tuple[int, ...]]:
    # increasing average; at equal average, more bits on the more sensitive clusters first
    return (avg, tuple(-b for b in reversed(assignment)))


def generate_candidates(
    scores: Sequence[float],
    unit_sizes: Sequence[int],
    m: int = 8,
    bit_choices: Sequence[int] = QUANTIZED_ACT_BITS,
    n_clusters: int = 3,
    max_average: float | None = None,
) -> list[Candidate]:
    """The candidate bit configurations of one step (rule in the module docstring).

    ``max_average`` drops assignments whose average bits exceed it before the even spread (the all-minimum
    one is always kept): a step can never use more than the budget left after every other step takes its
    minimum, so spending the M slots there would only waste them.

    Args:
        scores: sensitivity of each unit at this step (finite, ≥ 0; e.g. Fisher information).
        unit_sizes: number of layers in each unit, for the layer-weighted average bits.
        m: the most candidates to return (≥ 1).
        bit_choices: the allowed activation bit widths (deduplicated and sorted here).
        n_clusters: the most sensitivity clusters (≥ 1).

    Returns:
        At most m distinct candidates ordered by average bits; the first is the all-minimum-bits one.

    Raises:
        ValueError: mismatched lengths, empty inputs, negative or non-finite scores, m < 1, bad bit choices.
    """
    sizes = _check_unit_sizes(unit_sizes)
    if len(scores) != len(sizes):
        raise ValueError(f"{len(scores)} scores for {len(sizes)} units: one score per unit is needed")
    if isinstance(m, bool) or int(m) != m or m < 1:
        raise ValueError(f"m (candidates per step) must be an integer >= 1, got {m!r}")
    bits_sorted = sorted({int(b) for b in bit_choices})
    if not bits_sorted or any(b < 1 for b in bits_sorted) or any(isinstance(b, bool) for b in bit_choices):
        raise ValueError(
            f"bit_choices must be a non-empty list of positive integers, got {list(bit_choices)}"
        )

    labels = cluster_by_sensitivity(scores, n_clusters)
    k = max(labels) + 1
    ranked: list[tuple[tuple[float, tuple[int, ...]], Candidate]] = []
    seen: set[tuple[int, ...]] = set()
    for assignment in itertools.combinations_with_replacement(bits_sorted, k):  # non-decreasing tuples
        bits = tuple(assignment[label] for label in labels)
        if bits in seen:  # cannot happen (every cluster is non-empty); kept as a guard
            continue
        seen.add(bits)
        ranked.append((_order_key(weighted_average_bits(bits, sizes), assignment), Candidate(bits)))
    ranked.sort(key=lambda item: item[0])
    # ranked[0] is the all-minimum assignment: the unique smallest average
    if max_average is not None:
        ranked = ranked[:1] + [r for r in ranked[1:] if r[0][0] <= max_average + 1e-9]
    if len(ranked) <= m:
        return [c for _, c in ranked]
    averages = [key[0] for key, _ in ranked]
    lo, hi = averages[0], averages[-1]
    kept = {0}
    for j in range(1, m):
        target = lo + (hi - lo) * j / (m - 1)
        best = min(
            (i for i in range(len(ranked)) if i not in kept), key=lambda i: (abs(averages[i] - target), i)
        )
        kept.add(best)
    return [ranked[i][1] for i in sorted(kept)]
