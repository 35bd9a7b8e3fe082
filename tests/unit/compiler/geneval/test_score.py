"""GenEval rules on hand-built detections, and the bootstrap aggregation."""

from __future__ import annotations

import numpy as np
import pytest

from adatsq.compiler.geneval.detect import Detection
from adatsq.compiler.geneval.score import GenEvalResult, bootstrap_interval, evaluate, score
from adatsq.core.models.shapes.scenes import CATEGORIES, Group, PromptSpec, render, sample


def _d(shape: str, color: str, cx: float, cy: float, side: int = 8) -> Detection:
    return Detection(shape, color, cx, cy, side * side, side, side)


def test_single_and_two_object() -> None:
    one = PromptSpec("single_object", (Group("circle", None, 1),))
    assert score(one, [_d("circle", "red", 8, 8)])
    assert score(one, [_d("circle", "red", 8, 8), _d("circle", "blue", 24, 8)])  # more is fine
    assert not score(one, [_d("square", "red", 8, 8)])
    two = PromptSpec("two_object", (Group("circle", None, 1), Group("square", None, 1)))
    assert score(two, [_d("square", "green", 24, 24), _d("circle", "red", 8, 8)])
    assert not score(two, [_d("circle", "red", 8, 8), _d("circle", "red", 24, 24)])


def test_counting_is_exact() -> None:
    spec = PromptSpec("counting", (Group("triangle", None, 3),))
    tri = [_d("triangle", c, 6 + 10 * i, 8) for i, c in enumerate(("red", "blue", "green", "cyan"))]
    assert score(spec, tri[:3])
    assert score(spec, [*tri[:3], _d("circle", "red", 20, 24)])  # other classes do not count
    assert not score(spec, tri[:2])
    assert not score(spec, tri)


def test_colors_and_color_attribution() -> None:
    spec = PromptSpec("colors", (Group("square", "yellow", 1),))
    assert score(spec, [_d("square", "blue", 8, 8), _d("square", "yellow", 24, 8)])
    assert not score(spec, [_d("square", "blue", 8, 8), _d("circle", "yellow", 24, 8)])
    attr = PromptSpec("color_attr", (Group("square", "red", 1), Group("circle", "green", 1)))
    assert score(attr, [_d("square", "red", 8, 8), _d("circle", "green", 24, 24)])
    assert not score(attr, [_d("square", "green", 8, 8), _d("circle", "red", 24, 24)])  # swapped


@pytest.mark.parametrize(
    ("relation", "a_xy", "b_xy", "ok"),
    [
        ("left of", (6, 16), (26, 16), True),
        ("left of", (26, 16), (6, 16), False),
        ("right of", (26, 16), (6, 16), True),
        ("above", (16, 6), (16, 26), True),
        ("below", (16, 6), (16, 26), False),
        ("below", (16, 26), (16, 6), True),
        ("left of", (6, 6), (26, 26), True),  # diagonal: both "left of" and "above" hold
        ("above", (6, 6), (26, 26), True),
        ("left of", (14, 6), (16, 26), False),  # |dx| within the margin: vertical, not left
    ],
)
def test_position_relation(relation: str, a_xy: tuple[int, int], b_xy: tuple[int, int], ok: bool) -> None:
    spec = PromptSpec("position", (Group("circle", None, 1), Group("square", None, 1)), relation)
    assert score(spec, [_d("circle", "red", *a_xy), _d("square", "blue", *b_xy)]) is ok


def test_position_needs_both_and_uses_largest_match() -> None:
    spec = PromptSpec("position", (Group("circle", None, 1), Group("square", None, 1)), "left of")
    assert not score(spec, [_d("circle", "red", 6, 16)])
    big_left, small_right = _d("circle", "red", 6, 16, side=10), _d("circle", "red", 30, 4, side=3)
    assert score(spec, [big_left, small_right, _d("square", "blue", 24, 16)])


def test_position_without_box_extent_falls_back_to_area() -> None:
    spec = PromptSpec("position", (Group("circle", None, 1), Group("square", None, 1)), "left of")
    assert score(spec, [Detection("circle", "red", 6, 16, 64), Detection("square", "blue", 26, 16, 64)])


def test_bootstrap_contains_point_and_shrinks() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 400, 4000):
        hits = (np.arange(n) % 10 < 7).astype(np.float64)  # accuracy exactly 0.7
        lo, hi = bootstrap_interval([hits], 1000, rng)
        assert lo <= 0.7 <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2] > 0


def _renders(k: int, seed: int) -> tuple[list[np.ndarray], list[PromptSpec]]:
    rng = np.random.default_rng(seed)
    pairs = [sample(rng, c) for c in CATEGORIES for _ in range(k)]
    return [render(s) for s, _, _ in pairs], [p for _, p, _ in pairs]


def test_evaluate_all_correct_renders() -> None:
    images, specs = _renders(20, seed=1)
    result = evaluate(images, specs, n_boot=200)
    assert isinstance(result, GenEvalResult)
    assert result.total.accuracy == 1.0 and (result.total.lo, result.total.hi) == (1.0, 1.0)
    assert list(result.per_category) == list(CATEGORIES)
    assert all(s.accuracy == 1.0 and s.n == 20 for s in result.per_category.values())
    d = result.to_dict()
    assert d["total"] == {"accuracy": 1.0, "lo": 1.0, "hi": 1.0, "n": 120}
    table = result.table()
    assert table.count("\n") == len(CATEGORIES) + 2 and "| counting | 20 | 1.000 |" in table


def test_evaluate_mixed_total_is_mean_over_categories() -> None:
    images, specs = _renders(10, seed=2)
    blank = np.zeros_like(images[0])
    # blank out every image of the first category and 5 of the second: accuracies 0, 0.5, 1, 1, 1, 1
    images = [blank if i < 15 else img for i, img in enumerate(images)]
    result = evaluate(images, specs, n_boot=500, seed=3)
    accs = [result.per_category[c].accuracy for c in CATEGORIES]
    assert accs == [0.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert result.total.accuracy == pytest.approx(sum(accs) / 6)
    assert result.total.lo <= result.total.accuracy <= result.total.hi
    assert result == evaluate(images, specs, n_boot=500, seed=3)  # deterministic in seed
    with pytest.raises(ValueError, match="specs"):
        evaluate(images[:3], specs)
