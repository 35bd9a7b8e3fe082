"""Detector validation: ground-truth renders score True (clean, noisy, noisy + blurred), altered scenes score
False, noise specks are ignored, and the scipy-free fallback agrees with scipy."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import pytest
from scipy import ndimage

from adatsq.compiler.geneval.detect import Detection, detect
from adatsq.compiler.geneval.score import score
from adatsq.core.models.shapes.scenes import (
    CATEGORIES,
    COLORS,
    SHAPES,
    Obj,
    PromptSpec,
    Scene,
    render,
    sample,
)

N = 300
detect_mod = importlib.import_module("adatsq.compiler.geneval.detect")  # the package re-exports detect()


def _noisy(img: np.ndarray, rng: np.random.Generator, sigma: float, blur: float = 0.0) -> np.ndarray:
    """Gaussian blur (σ in pixels, per channel), then additive Gaussian noise (σ in 0-255 units), clipped."""
    x = img.astype(np.float32)
    if blur:
        x = ndimage.gaussian_filter(x, sigma=(blur, blur, 0))
    x = x + rng.normal(0.0, sigma, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _accuracy(
    category: str, perturb: Callable[[np.ndarray, np.random.Generator], np.ndarray], n: int = N
) -> float:
    rng = np.random.default_rng(100 + CATEGORIES.index(category))
    hits = 0
    for _ in range(n):
        scene, spec, _text = sample(rng, category)
        hits += score(spec, detect(perturb(render(scene), rng)))
    return hits / n


@pytest.mark.parametrize("category", CATEGORIES)
def test_clean_renders_score_true(category: str) -> None:
    assert _accuracy(category, lambda img, _rng: img) >= 0.99


@pytest.mark.parametrize("category", CATEGORIES)
def test_noisy_renders_score_true(category: str) -> None:
    assert _accuracy(category, lambda img, rng: _noisy(img, rng, sigma=20.0)) >= 0.99


@pytest.mark.parametrize("category", CATEGORIES)
def test_noisy_blurred_renders_score_true(category: str) -> None:
    """Mild blur (σ = 0.6 px) on top of the noise; measured ≥ 0.999 per category over 1000 scenes."""
    assert _accuracy(category, lambda img, rng: _noisy(img, rng, sigma=20.0, blur=0.6), n=200) >= 0.97


def _other(options: tuple[str, ...] | list[str], *exclude: str, rng: np.random.Generator) -> str:
    rest = [o for o in options if o not in exclude]
    return rest[int(rng.integers(len(rest)))]


def _altered(scene: Scene, spec: PromptSpec, rng: np.random.Generator) -> Scene:
    """A different scene that violates ``spec``: wrong shape / missing class / count off by one / wrong colour /
    positions mirrored through the canvas centre / colours swapped."""
    objs = list(scene.objects)
    c = spec.category
    if c == "single_object":
        o = objs[0]
        objs[0] = Obj(_other(SHAPES, o.shape, rng=rng), o.color, o.cx, o.cy, o.size)
    elif c == "two_object":
        o, third = objs[1], _other(SHAPES, objs[0].shape, objs[1].shape, rng=rng)
        objs[1] = Obj(third, o.color, o.cx, o.cy, o.size)
    elif c == "counting":
        n = spec.groups[0].count
        if n < 4 and rng.random() < 0.5:  # one more: a counting scene of the same shape with n + 1 objects
            while True:
                other, other_spec, _ = sample(rng, "counting")
                if other_spec.groups[0].count == n + 1:
                    return Scene(
                        tuple(Obj(spec.groups[0].shape, o.color, o.cx, o.cy, o.size) for o in other.objects)
                    )
        objs.pop(int(rng.integers(len(objs))))
    elif c == "colors":
        o = objs[0]
        objs[0] = Obj(o.shape, _other(list(COLORS), o.color, rng=rng), o.cx, o.cy, o.size)
    elif c == "position":
        objs = [Obj(o.shape, o.color, 32 - o.cx, 32 - o.cy, o.size) for o in objs]
    elif c == "color_attr":
        a, b = objs
        objs = [Obj(a.shape, b.color, a.cx, a.cy, a.size), Obj(b.shape, a.color, b.cx, b.cy, b.size)]
    return Scene(tuple(objs))


@pytest.mark.parametrize("category", CATEGORIES)
def test_altered_scenes_score_false(category: str) -> None:
    """A metric that says True to everything fails here: every altered render must score False (≥ 0.99)."""
    rng = np.random.default_rng(200 + CATEGORIES.index(category))
    false_clean = false_noisy = 0
    for _ in range(N):
        scene, spec, _text = sample(rng, category)
        img = render(_altered(scene, spec, rng))
        false_clean += not score(spec, detect(img))
        false_noisy += not score(spec, detect(_noisy(img, rng, sigma=20.0)))
    assert false_clean / N >= 0.99
    assert false_noisy / N >= 0.99


def test_detections_match_ground_truth_exactly() -> None:
    scene = Scene(
        (
            Obj("square", "red", 8.0, 8.0, 10.0),
            Obj("circle", "cyan", 24.0, 8.0, 10.0),
            Obj("triangle", "purple", 16.0, 24.0, 10.0),
        )
    )
    dets = detect(render(scene))
    assert [(d.shape, d.color) for d in dets] == [
        ("square", "red"),
        ("circle", "cyan"),
        ("triangle", "purple"),
    ]
    square = dets[0]
    assert (square.cx, square.cy, square.area, square.width, square.height) == (8.0, 8.0, 100, 10, 10)


def test_specks_below_min_area_are_ignored() -> None:
    rng = np.random.default_rng(5)
    img = render(Scene((Obj("circle", "green", 16.0, 16.0, 10.0),)))
    for _ in range(12):  # isolated palette-coloured pixels and one 2x2 blob on the background
        y, x = (int(v) for v in rng.integers(0, 6, size=2))
        img[y * 5 % 32, x] = COLORS["red"]
    img[28:30, 28:30] = COLORS["blue"]
    dets = detect(img)
    assert [(d.shape, d.color) for d in dets] == [("circle", "green")]
    assert detect(np.zeros((32, 32, 3), dtype=np.uint8)) == []


def test_float_input_and_fallback_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    images = [_noisy(render(sample(rng, c)[0]), rng, sigma=20.0) for c in CATEGORIES for _ in range(5)]
    reference: list[list[Detection]] = [detect(img) for img in images]
    assert [detect(img.astype(np.float32) / 255.0) for img in images] == reference
    monkeypatch.setattr(detect_mod, "_ndimage", None)
    assert [detect(img) for img in images] == reference


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="H x W x 3"):
        detect(np.zeros((32, 32), dtype=np.uint8))
