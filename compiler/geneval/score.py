"""GenEval-style scoring of detections against a prompt's spec, and bootstrap accuracies per category.

Rules (GenEval's, on :class:`~adatsq.compiler.geneval.detect.Detection` lists): a detection *matches* a group
when its shape equals the group's and the group's colour is None or equal to the detection's.

* counting: exactly ``count`` matching detections for its group;
* every other category: at least ``count`` matching detections for every group;
* position, additionally: with A = the ``count`` largest (by area) matches of group 0 and B those of group 1,
  every pair (a, b) has ``relation`` ∈ relations(box a, box b) (GenEval's ``relative_position``: box centres,
  margin 0.1 x the boxes' summed extents, direction cosine > 0.5). Taking the largest matches mirrors
  GenEval's taking the most confident detections.

Aggregation (GenEval): accuracy per category = mean of the per-image booleans; the total is the unweighted
mean over the categories present. Intervals are percentile bootstrap 95 % intervals: each replicate
resamples, with replacement and within each category, as many images as that category has; the total's
replicate is the mean of the categories' replicate accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from adatsq.compiler.geneval.detect import Detection, detect
from adatsq.core.models.shapes.scenes import CATEGORIES, Group, PromptSpec, relations

__all__ = ["CategoryScore", "GenEvalResult", "bootstrap_interval", "evaluate", "score"]


def _matches(group: Group, d: Detection) -> bool:
    return d.shape == group.shape and (group.color is None or d.color == group.color)


def _box(d: Detection) -> tuple[float, float, float, float]:
    side = math.sqrt(d.area)
    return (d.cx, d.cy, float(d.width) or side, float(d.height) or side)


def score(spec: PromptSpec, detections: Sequence[Detection]) -> bool:
    """Whether ``detections`` satisfy ``spec`` under the rules in the module docstring."""
    found = [[d for d in detections if _matches(g, d)] for g in spec.groups]
    for group, hits in zip(spec.groups, found):
        if spec.category == "counting" and len(hits) != group.count:
            return False
        if len(hits) < group.count:
            return False
    if spec.relation is not None:
        a_side, b_side = (sorted(h, key=lambda d: -d.area)[: g.count] for g, h in zip(spec.groups, found))
        return all(spec.relation in relations(_box(a), _box(b)) for a in a_side for b in b_side)
    return True


@dataclass(frozen=True)
class CategoryScore:
    """An accuracy, its bootstrap 95 % interval [lo, hi], and the number of images it is over."""

    accuracy: float
    lo: float
    hi: float
    n: int


@dataclass(frozen=True)
class GenEvalResult:
    """Per-category scores (CATEGORIES order, present categories only), the total, and per-image results."""

    per_category: dict[str, CategoryScore]
    total: CategoryScore
    correct: tuple[bool, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: {"total": {...}, "per_category": {name: {...}}, "correct": [...]}."""
        return {
            "total": asdict(self.total),
            "per_category": {k: asdict(v) for k, v in self.per_category.items()},
            "correct": list(self.correct),
        }

    def table(self) -> str:
        """A markdown table: one row per category and the total, accuracy with its 95 % interval."""
        lines = ["| category | n | accuracy | 95% CI |", "|---|---:|---:|---|"]
        rows = [*self.per_category.items(), ("**total**", self.total)]
        for name, s in rows:
            lines.append(f"| {name} | {s.n} | {s.accuracy:.3f} | [{s.lo:.3f}, {s.hi:.3f}] |")
        return "\n".join(lines)


def bootstrap_interval(
    groups: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean over groups of each group's resampled mean (see module docstring);
    ``n_boot`` = 0: no resampling, the point estimate twice (the search's metric needs no interval)."""
    if n_boot <= 0:
        point = float(np.mean([g.mean() for g in groups]))
        return point, point
    reps = np.zeros(n_boot, dtype=np.float64)
    for g in groups:
        idx = rng.integers(0, g.size, size=(n_boot, g.size))
        reps += g[idx].mean(axis=1)
    reps /= len(groups)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(reps, [tail, 100 - tail])
    return float(lo), float(hi)


def evaluate(
    images: Sequence[np.ndarray], specs: Sequence[PromptSpec], n_boot: int = 1000, seed: int = 0
) -> GenEvalResult:
    """Detect objects in each image, score it against its spec, and aggregate GenEval-style.

    ``images[i]`` is H x W x 3 (uint8, or float in [0, 1]) generated for ``specs[i]``. Deterministic in ``seed``.
    """
    if len(images) != len(specs):
        raise ValueError(f"{len(images)} images for {len(specs)} specs")
    if not specs:
        raise ValueError("nothing to evaluate")
    correct = tuple(score(s, detect(img)) for img, s in zip(images, specs))
    rng = np.random.default_rng(seed)
    per: dict[str, CategoryScore] = {}
    arrays: list[np.ndarray] = []
    for category in CATEGORIES:
        hits = np.array([c for c, s in zip(correct, specs) if s.category == category], dtype=np.float64)
        if hits.size == 0:
            continue
        lo, hi = bootstrap_interval([hits], n_boot, rng)
        per[category] = CategoryScore(float(hits.mean()), lo, hi, int(hits.size))
        arrays.append(hits)
    lo, hi = bootstrap_interval(arrays, n_boot, rng)
    total = CategoryScore(float(np.mean([a.mean() for a in arrays])), lo, hi, len(correct))
    return GenEvalResult(per, total, correct)
