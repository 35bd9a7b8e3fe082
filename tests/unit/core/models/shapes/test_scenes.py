"""Shape scenes: determinism, geometry (inside the canvas, apart), ground truth meets its spec, split-disjoint
sentences, training tensors and the fixed eval set."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from adatsq.core.models.shapes.scenes import (
    CATEGORIES,
    COLORS,
    EVAL_TEMPLATES,
    NUMBERS,
    RELATIONS,
    SHAPES,
    TRAIN_TEMPLATES,
    Group,
    Obj,
    PromptSpec,
    Scene,
    evaluation_set,
    min_gap,
    relations,
    render,
    sample,
    training_pairs,
)


def _all_sentences(templates: dict[str, tuple[str, ...]]) -> set[str]:
    """Every sentence the templates can produce (all fillers, exhaustively)."""
    out: set[str] = set()
    fillers = itertools.product(SHAPES, SHAPES, COLORS, COLORS, NUMBERS.values(), RELATIONS.values())
    combos = list(fillers)
    for tmpls in templates.values():
        for t in tmpls:
            out.update(t.format(a=a, b=b, c=c, d=d, n=n, rel=r) for a, b, c, d, n, r in combos)
    return out


def _satisfies(scene: Scene, spec: PromptSpec) -> bool:
    """Ground-truth check of the GenEval rules on the scene's own objects (no detector)."""
    hits = [
        [o for o in scene.objects if o.shape == g.shape and (g.color is None or o.color == g.color)]
        for g in spec.groups
    ]
    for g, h in zip(spec.groups, hits):
        if (len(h) != g.count) if spec.category == "counting" else (len(h) < g.count):
            return False
    if spec.relation is not None:
        return all(
            spec.relation in relations((a.cx, a.cy, a.size, a.size), (b.cx, b.cy, b.size, b.size))
            for a in hits[0]
            for b in hits[1]
        )
    return True


@pytest.mark.parametrize("category", CATEGORIES)
def test_sample_is_deterministic(category: str) -> None:
    a = [sample(np.random.default_rng(7), category, split=s) for s in ("train", "eval")]
    b = [sample(np.random.default_rng(7), category, split=s) for s in ("train", "eval")]
    assert a == b
    assert np.array_equal(render(a[0][0]), render(b[0][0]))


@pytest.mark.parametrize("size", [32, 64])
def test_objects_inside_canvas_and_apart(size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(600):
        scene, _spec, _text = sample(rng, CATEGORIES[i % len(CATEGORIES)], size)
        assert 1 <= len(scene.objects) <= 4
        for o in scene.objects:
            h = o.size / 2
            assert h <= o.cx <= size - h and h <= o.cy <= size - h
        for p, q in itertools.combinations(scene.objects, 2):
            assert max(abs(p.cx - q.cx), abs(p.cy - q.cy)) - (p.size + q.size) / 2 >= min_gap(size) - 1e-9
        img = render(scene, size)
        painted = sum(render(Scene((o,)), size).any(-1).sum() for o in scene.objects)
        assert img.any(-1).sum() == painted  # no pixel painted twice


@pytest.mark.parametrize("category", CATEGORIES)
def test_ground_truth_satisfies_spec(category: str) -> None:
    rng = np.random.default_rng(1)
    expected_objects = {"single_object": {1}, "colors": {1}, "counting": {2, 3, 4}}
    for _ in range(300):
        scene, spec, _text = sample(rng, category)
        assert spec.category == category
        assert _satisfies(scene, spec)
        assert len(scene.objects) in expected_objects.get(category, {2})
    # and the rule is not vacuous: a mirrored position scene fails its relation
    scene, spec, _ = sample(rng, "position")
    flipped = Scene(tuple(Obj(o.shape, o.color, 32 - o.cx, 32 - o.cy, o.size) for o in scene.objects))
    assert not _satisfies(flipped, spec)


def test_render_is_crisp_palette() -> None:
    scene = Scene((Obj("square", "red", 8.0, 8.0, 8.0), Obj("circle", "blue", 22.0, 22.0, 10.0)))
    img = render(scene)
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
    colours = {tuple(int(v) for v in px) for px in img.reshape(-1, 3)}
    assert colours == {(0, 0, 0), COLORS["red"], COLORS["blue"]}
    assert (img == COLORS["red"]).all(-1).sum() == 64  # an 8-px square on integer edges: exactly 8 x 8


def test_eval_sentences_disjoint_from_train() -> None:
    train, evals = _all_sentences(TRAIN_TEMPLATES), _all_sentences(EVAL_TEMPLATES)
    assert not train & evals
    rng = np.random.default_rng(2)
    sampled = {
        split: {sample(rng, c, split=split)[2] for c in CATEGORIES for _ in range(200)}
        for split in ("train", "eval")
    }
    assert not sampled["train"] & sampled["eval"]
    assert sampled["train"] <= train and sampled["eval"] <= evals
    assert len(sampled["eval"]) > 100


def test_training_pairs_shapes_range_determinism() -> None:
    x, prompts = training_pairs(seed=3, n=64)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    assert len(prompts) == 64 and all(isinstance(p, str) and p for p in prompts)
    assert set(torch.unique(x).tolist()) == {-1.0, 1.0}  # palette channels are 0 or 255
    x2, prompts2 = training_pairs(seed=3, n=64)
    assert torch.equal(x, x2) and prompts == prompts2
    x3, _ = training_pairs(seed=4, n=64)
    assert not torch.equal(x, x3)
    assert set(prompts) <= _all_sentences(TRAIN_TEMPLATES)
    big, _ = training_pairs(seed=0, n=8, size=64)
    assert big.shape == (8, 3, 64, 64)


def test_evaluation_set_is_fixed() -> None:
    a, b = evaluation_set(10), evaluation_set(10)
    assert a == b and len(a) == 10 * len(CATEGORIES)
    assert [s.category for s, _ in a] == [c for c in CATEGORIES for _ in range(10)]
    assert {t for _, t in a} <= _all_sentences(EVAL_TEMPLATES)
    assert evaluation_set(10, seed=5) != a


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="category"):
        PromptSpec("nonsense", (Group("circle", None, 1),))
    with pytest.raises(ValueError, match="relation"):
        PromptSpec("two_object", (Group("circle", None, 1), Group("square", None, 1)), "above")
    with pytest.raises(ValueError, match="category"):
        sample(np.random.default_rng(0), "nonsense")
