"""Pareto beam search over denoising steps in the (cumulative bits, cumulative loss) plane.

A path fixes one candidate per step so far. At step t every kept path is expanded by every candidate of t:
cum_bits += average bits of the candidate, cum_loss += its measured loss at t (sums accumulate in step
order, so equal choices give bit-identical floats). Of the expansions, only the non-dominated ones are kept
(minimising both coordinates; see :func:`pareto_front` for ties). If more than ``beam_width`` remain, the
ones closest to the ideal point are kept: each axis is min–max normalised over the current non-dominated
set, (b − b_min)/(b_max − b_min) (0 when the range is 0), and paths are ranked by squared Euclidean
distance to (0, 0).

Without an engine cap and with a beam wide enough that nothing is truncated, the result is exactly the
Pareto front of all ∏ₜ|candidatesₜ| complete paths: losses and bits add up over steps, so a prefix that is
dominated at step t stays dominated after any common suffix.

Engine cap: ``max_engines`` bounds the number of distinct bit vectors along a path (one TensorRT engine per
distinct vector); an expansion that would exceed it is discarded. Dominance still looks only at
(bits, loss), so with a cap the search is a heuristic.

Min-bits retention (``keep_min_bits``): the expansion with the smallest cum_bits (ties: lowest cum_loss,
then lexicographically smallest choices; with an engine cap, fewest distinct configs comes before loss)
always survives. Without a cap it is on the Pareto front (it is the lexicographic minimum of
(bits, loss)), so retention only matters against the distance truncation, which could drop an extreme
point. With a cap it may be dominated by an equal-bits path with lower loss but more configs; it is then
kept anyway, so only then can the returned set contain a dominated path. Keeping it keeps every target
≥ the minimum average feasible: with the
all-minimum candidate of :func:`generate_candidates` (the same bit vector at every step) that path is the
all-minimum schedule, which uses one engine, so it can always be extended under any ``max_engines ≥ 1``.
Its slot counts towards ``beam_width``: the beam never holds more than ``beam_width`` paths (when
truncating, it takes the last slot, i.e. ``beam_width − 1`` nearest others plus it).

Min-loss retention (``keep_min_loss``): the front's lowest-loss path (the most bits the budget pruning
left) survives the truncation too, when the beam has a slot besides the min-bits path. The distance rule keeps
the knee of the front and drops its high-bit end, so without it a generous target (e.g. 4.0 with 8-bit
candidates) is never reached: every path ends well under it (measured: the quick quality table's shapes-flux
at target 4.0 ended at 3.61 bits with a beam of 4). With both retentions the two ends of the front survive
every step, and the final selection's metric chooses among paths that span the budget.

Every ordering is a stable sort with an explicit final tie-break on the choice tuple, so the output does
not depend on dict or set iteration order. Cost per step: O(W·C·log(W·C)) for W kept paths and C
candidates, O(steps · M · C · log(M·C)) in all.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from adatsq.compiler.search.candidates import Candidate
from adatsq.compiler.search.errors import SearchError

__all__ = ["BEAM_RULES", "Path", "StepCandidate", "pareto_beam_search", "pareto_front"]

#: the beam's rule, in the search stage's key: a change of the rule (2: the min-loss retention) makes a cached
#: schedule of an earlier rule be searched again (from its cached candidate costs), not reused
BEAM_RULES = 2

StepCandidate = tuple[Candidate, float, float]
"""(candidate, its average bits, its measured loss at that step)."""


@dataclasses.dataclass(frozen=True)
class Path:
    """A partial or complete schedule.

    Attributes:
        choices: index into that step's candidate list, one per step so far.
        cum_bits: Σ over steps of the chosen candidate's average bits.
        cum_loss: Σ over steps of the chosen candidate's loss.
        configs: the distinct bit vectors used, in order of first use (one engine each).
    """

    choices: tuple[int, ...]
    cum_bits: float
    cum_loss: float
    configs: tuple[tuple[int, ...], ...]

    def average_bits(self, steps: int | None = None) -> float:
        """cum_bits / steps; ``steps`` defaults to the number of choices made."""
        n = len(self.choices) if steps is None else steps
        if n <= 0:
            raise ValueError(f"steps must be >= 1 to average bits, got {n}")
        return self.cum_bits / n


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, minimising both coordinates.

    p dominates q when p ≤ q in both coordinates and p < q in at least one. Tie rule: of points equal in
    both coordinates only the first (lowest index) is kept; the others count as dominated by it. Points
    equal in one coordinate only: the one worse in the other is dominated.

    Args:
        points: (x, y) pairs, finite.

    Returns:
        The indices of the front, sorted by x ascending (hence y strictly descending).

    Raises:
        ValueError: a coordinate is NaN or infinite.
    """
    for i, (x, y) in enumerate(points):
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"point {i} = ({x!r}, {y!r}) is not finite")
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    front: list[int] = []
    best_y = math.inf
    for i in order:
        # sorted by x then y: a point survives iff it is strictly below every earlier point
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def _min_bits_key(p: Path, capped: bool) -> tuple[float, int, float, tuple[int, ...]]:
    # with an engine cap, fewer distinct configs is what keeps a path extendable, so it ranks before loss
    return (p.cum_bits, len(p.configs) if capped else 0, p.cum_loss, p.choices)


def _truncate(front: list[Path], width: int, forced: Sequence[Path]) -> list[Path]:
    """Keep the ``width`` paths nearest the normalised ideal point; the ``forced`` ones stay, in their order of
    priority, as many as ``width`` allows."""
    bmin = min(p.cum_bits for p in front)
    bmax = max(p.cum_bits for p in front)
    lmin = min(p.cum_loss for p in front)
    lmax = max(p.cum_loss for p in front)
    bspan = bmax - bmin
    lspan = lmax - lmin

    def dist(p: Path) -> float:
        nb = (p.cum_bits - bmin) / bspan if bspan > 0 else 0.0
        nl = (p.cum_loss - lmin) / lspan if lspan > 0 else 0.0
        return nb * nb + nl * nl

    ranked = sorted(front, key=lambda p: (dist(p), p.cum_bits, p.cum_loss, p.choices))
    must = list(dict.fromkeys(forced))[:width]
    return [p for p in ranked if p not in must][: width - len(must)] + must


def pareto_beam_search(
    step_candidates: Sequence[Sequence[StepCandidate]],
    beam_width: int,
    max_engines: int | None = None,
    keep_min_bits: bool = True,
    budget: float | None = None,
    keep_min_loss: bool = True,
) -> list[Path]:
    """Pareto beam search over steps (rule in the module docstring).

    With ``budget`` (the most cumulative bits allowed at the end, target × steps), an expansion whose
    cum_bits plus the cheapest possible remaining steps exceeds the budget is dropped before the Pareto
    filter: it can never be selected, and keeping it would crowd feasible paths out of the M slots.

    Args:
        step_candidates: per step, a list of (candidate, average bits, loss at that step).
        beam_width: the most paths kept after each step (M in the paper), ≥ 1.
        max_engines: the most distinct bit vectors per path (None: unlimited), ≥ 1.
        keep_min_bits: always keep the smallest-cum_bits expansion (see the module docstring).
        keep_min_loss: also keep the front's lowest-loss path when a slot is left (module docstring).

    Returns:
        The surviving complete paths, sorted by cum_bits ascending (then cum_loss, then choices).

    Raises:
        ValueError: no steps, an empty step, beam_width or max_engines < 1, non-finite bits or loss.
        SearchError: the engine cap leaves no feasible expansion at some step.
    """
    if isinstance(beam_width, bool) or int(beam_width) != beam_width or beam_width < 1:
        raise ValueError(f"beam_width must be an integer >= 1, got {beam_width!r}")
    if max_engines is not None and (
        isinstance(max_engines, bool) or int(max_engines) != max_engines or max_engines < 1
    ):
        raise ValueError(f"max_engines must be None or an integer >= 1, got {max_engines!r}")
    if len(step_candidates) == 0:
        raise ValueError("step_candidates is empty: there must be at least one denoising step")
    for t, cands in enumerate(step_candidates):
        if len(cands) == 0:
            raise ValueError(f"step {t} has no candidates")
        for j, (_cand, bits, loss) in enumerate(cands):
            if not (math.isfinite(bits) and math.isfinite(loss)):
                raise ValueError(f"step {t} candidate {j}: bits={bits!r}, loss={loss!r} must be finite")

    # cheapest bits of steps t.. end, for the budget pruning
    min_rest = [0.0] * (len(step_candidates) + 1)
    for t in range(len(step_candidates) - 1, -1, -1):
        min_rest[t] = min_rest[t + 1] + min(bits for _c, bits, _l in step_candidates[t])
    if budget is not None and min_rest[0] > budget + 1e-9:
        raise SearchError(
            f"budget of {budget:g} cumulative bits is below the minimum achievable {min_rest[0]:g}"
        )

    beam = [Path(choices=(), cum_bits=0.0, cum_loss=0.0, configs=())]
    for t, cands in enumerate(step_candidates):
        expansions: list[Path] = []
        for path in beam:
            for j, (cand, bits, loss) in enumerate(cands):
                if budget is not None and path.cum_bits + bits + min_rest[t + 1] > budget + 1e-9:
                    continue
                vec = tuple(cand.bits)
                configs = path.configs if vec in path.configs else (*path.configs, vec)
                if max_engines is not None and len(configs) > max_engines:
                    continue
                expansions.append(
                    Path(
                        choices=(*path.choices, j),
                        cum_bits=path.cum_bits + float(bits),
                        cum_loss=path.cum_loss + float(loss),
                        configs=configs,
                    )
                )
        if not expansions:
            raise SearchError(
                f"step {t}: every expansion uses more than max_engines={max_engines} distinct bit vectors; "
                "raise max_engines or include the all-minimum candidate at every step"
            )
        # lexicographic choice order makes "first of equal points" = smallest choice tuple
        expansions.sort(key=lambda p: p.choices)
        front = [expansions[i] for i in pareto_front([(p.cum_bits, p.cum_loss) for p in expansions])]
        capped = max_engines is not None
        forced = min(expansions, key=lambda p: _min_bits_key(p, capped)) if keep_min_bits else None
        if forced is not None and forced not in front:
            front.append(forced)
        if len(front) > beam_width:
            lowest = min(front, key=lambda p: (p.cum_loss, p.cum_bits, p.choices)) if keep_min_loss else None
            front = _truncate(front, beam_width, [p for p in (forced, lowest) if p is not None])
        beam = sorted(front, key=lambda p: (p.cum_bits, p.cum_loss, p.choices))
    return beam
