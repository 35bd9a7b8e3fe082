"""Coloured-shape scenes, their prompts, and a crisp deterministic renderer (the GenEval-mini world).

World: a square canvas of ``size`` pixels with a **black** background (0, 0, 0) holding 1-4 non-overlapping
objects. Each object is a shape in :data:`SHAPES` painted in one colour of :data:`COLORS`, the six corners of the
RGB cube other than black and white: every pair of palette colours, background included, is at least 255 apart
in RGB (Euclidean), so a nearest-palette segmenter has a 127-unit margin per pixel.

Geometry (pixels, y down): an object's ``(cx, cy)`` is the centre of its axis-aligned bounding box and ``size``
its side. A pixel (x, y) is painted when its centre p = (x + 0.5, y + 0.5) lies inside the shape:

* circle: |p - c| <= size / 2;
* square: |px - cx| <= size / 2 and |py - cy| <= size / 2;
* triangle (isosceles, apex up): top = cy - size / 2 <= py <= cy + size / 2 and |px - cx| <= (py - top) / 2.

No anti-aliasing: a pixel is either background or exactly its object's colour. Objects' boxes lie inside the
canvas and are at least :func:`min_gap` pixels apart (Chebyshev gap between boxes), so no two objects touch.

Prompts follow GenEval's six categories (:data:`CATEGORIES`). A :class:`PromptSpec` is what a prompt asks for;
colours are named only where GenEval names them (``colors`` and ``color_attr``), so in the other categories
each object's colour is random and free. Sentences come from :data:`TRAIN_TEMPLATES` or :data:`EVAL_TEMPLATES`;
the two sets of templates produce disjoint sentences (every eval template has a wording no train template has).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch

__all__ = [
    "BACKGROUND",
    "CATEGORIES",
    "COLORS",
    "EVAL_TEMPLATES",
    "NUMBERS",
    "RELATIONS",
    "SHAPES",
    "TRAIN_TEMPLATES",
    "Group",
    "Obj",
    "PromptSpec",
    "Scene",
    "Split",
    "evaluation_set",
    "min_gap",
    "relations",
    "render",
    "sample",
    "training_pairs",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "purple": (255, 0, 255),  # magenta: the RGB-cube corner; "purple" is the GenEval colour word
    "cyan": (0, 255, 255),
}
BACKGROUND: tuple[int, int, int] = (0, 0, 0)
CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS: dict[str, str] = {  # relation -> its phrase in a sentence
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
NUMBERS: dict[int, str] = {2: "two", 3: "three", 4: "four"}

Split = Literal["train", "eval"]

# Placeholders: {a}, {b} shape names of group 0 and 1; {c}, {d} their colours; {n} a number word; {rel} the
# relation phrase (group 0 is {rel} group 1). Plurals are the shape name + "s".
TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "single_object": ("a {a}", "a photo of a {a}", "one {a}", "a single {a}"),
    "two_object": ("a {a} and a {b}", "a photo of a {a} and a {b}", "one {a} and one {b}"),
    "counting": ("{n} {a}s", "a photo of {n} {a}s", "there are {n} {a}s"),
    "colors": ("a {c} {a}", "a photo of a {c} {a}", "one {c} {a}"),
    "position": ("a {a} {rel} a {b}", "a photo of a {a} {rel} a {b}", "one {a} {rel} one {b}"),
    "color_attr": ("a {c} {a} and a {d} {b}", "a photo of a {c} {a} and a {d} {b}"),
}
EVAL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "single_object": ("an image of a {a}", "a picture showing a {a}"),
    "two_object": ("two objects: a {a} and a {b}", "an image of a {a} together with a {b}"),
    "counting": ("an image of {n} {a}s", "exactly {n} {a}s"),
    "colors": ("an image of a {c} {a}", "a {a} that is {c}"),
    "position": ("an image of a {a} {rel} a {b}", "a {b} with a {a} {rel} it"),
    "color_attr": ("two objects: a {c} {a} and a {d} {b}", "an image of a {c} {a} together with a {d} {b}"),
}

POSITION_THRESHOLD = 0.1
"""GenEval's margin: each centre offset is shrunk by 0.1 x (sum of the two boxes' extents) on that axis."""
SAMPLE_POSITION_THRESHOLD = 0.2
SAMPLE_DIRECTION = 0.6
"""Position scenes are drawn with a stricter rule (margin 0.2, direction 0.6) than scoring uses (0.1, 0.5), so a
detector whose boxes are off by a pixel still sees the relation."""

SIZE_RANGE = (0.28, 0.38)
"""Object sides are uniform in this fraction of the canvas side (9-12.2 px on a 32-px canvas; below 9 px a rasterised circle is a square minus its corner pixels)."""
_MAX_TRIES = 1000


class Group(NamedTuple):
    """One requirement of a prompt: ``count`` objects of ``shape`` (in ``color``, or any colour if None)."""

    shape: str
    color: str | None
    count: int


@dataclass(frozen=True)
class Obj:
    """One painted object: shape, palette colour, bounding-box centre and side (pixels)."""

    shape: str
    color: str
    cx: float
    cy: float
    size: float


@dataclass(frozen=True)
class Scene:
    """The objects of one image, in drawing order (they never overlap, so order does not matter)."""

    objects: tuple[Obj, ...]


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for (GenEval's rules, scored by ``adatsq.compiler.geneval.score``).

    * single_object: ≥ 1 object of groups[0].shape;
    * two_object: ≥ 1 of each of the two (different) shapes;
    * counting: exactly groups[0].count (2..4) objects of that shape;
    * colors: ≥ 1 object of the shape in groups[0].color;
    * position: both shapes present and group 0 is ``relation`` group 1 (:func:`relations` on box centres);
    * color_attr: ≥ 1 object of each (shape, colour) group (two different shapes, two different colours).
    """

    category: str
    groups: tuple[Group, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}; expected one of {CATEGORIES}")
        for g in self.groups:
            if g.shape not in SHAPES or (g.color is not None and g.color not in COLORS) or g.count < 1:
                raise ValueError(f"invalid group {g!r}")
        if (self.relation is not None) != (self.category == "position"):
            raise ValueError("a relation is given exactly for the position category")
        if self.relation is not None and (self.relation not in RELATIONS or len(self.groups) != 2):
            raise ValueError(f"invalid relation {self.relation!r} (two groups, one of {tuple(RELATIONS)})")


Box = tuple[float, float, float, float]
"""(cx, cy, width, height) in pixels."""


def relations(
    a: Box, b: Box, threshold: float = POSITION_THRESHOLD, direction: float = 0.5
) -> frozenset[str]:
    """GenEval's ``relative_position``: the relations in which box ``a`` stands to box ``b``.

    offset = centre(a) - centre(b); revised = sign(offset) · max(|offset| - threshold · (extent_a + extent_b), 0)
    per axis; if both revised components are ~0 there is no relation; else with (dx, dy) = revised / |offset|:
    dx < -direction → "left of", dx > direction → "right of", dy < -direction → "above", dy > direction → "below"
    (image y grows downwards). A diagonal pair may hold two relations.
    """
    offset = np.array([a[0] - b[0], a[1] - b[1]], dtype=np.float64)
    dims = np.array([a[2] + b[2], a[3] + b[3]], dtype=np.float64)
    revised = np.maximum(np.abs(offset) - threshold * dims, 0.0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return frozenset()
    dx, dy = revised / np.linalg.norm(offset)
    out = set()
    if dx < -direction:
        out.add("left of")
    if dx > direction:
        out.add("right of")
    if dy < -direction:
        out.add("above")
    if dy > direction:
        out.add("below")
    return frozenset(out)


def min_gap(size: int) -> float:
    """The least gap between two objects' boxes: max(2, size / 16) pixels (2 px on a 32-px canvas)."""
    return max(2.0, size / 16)


def _box(o: Obj) -> Box:
    return (o.cx, o.cy, o.size, o.size)


def _place(rng: np.random.Generator, shapes_colors: list[tuple[str, str]], size: int) -> tuple[Obj, ...]:
    """Random non-overlapping placement: sides from SIZE_RANGE, boxes inside the canvas, ≥ min_gap apart."""
    gap = min_gap(size)
    for _ in range(_MAX_TRIES):
        placed: list[Obj] = []
        for shape, color in shapes_colors:
            side = float(rng.uniform(SIZE_RANGE[0] * size, SIZE_RANGE[1] * size))
            h = side / 2
            for _ in range(50):
                cx, cy = (float(v) for v in rng.uniform(h, size - h, size=2))
                if all(max(abs(cx - o.cx), abs(cy - o.cy)) - h - o.size / 2 >= gap for o in placed):
                    placed.append(Obj(shape, color, cx, cy, side))
                    break
            else:
                break
        if len(placed) == len(shapes_colors):
            return tuple(placed)
    raise RuntimeError(f"could not place {len(shapes_colors)} objects on a {size}-px canvas")


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str], k: int) -> list[str]:
    """k distinct options, uniformly."""
    return [options[int(i)] for i in rng.choice(len(options), size=k, replace=False)]


def _colour(rng: np.random.Generator) -> str:
    return _pick(rng, list(COLORS), 1)[0]


def _scene_and_spec(rng: np.random.Generator, category: str, size: int) -> tuple[Scene, PromptSpec]:
    if category in ("single_object", "colors"):
        shape, color = _pick(rng, SHAPES, 1)[0], _colour(rng)
        spec = PromptSpec(category, (Group(shape, color if category == "colors" else None, 1),))
        return Scene(_place(rng, [(shape, color)], size)), spec
    if category == "counting":
        shape, n = _pick(rng, SHAPES, 1)[0], int(rng.integers(2, 5))
        objs = _place(rng, [(shape, _colour(rng)) for _ in range(n)], size)
        return Scene(objs), PromptSpec(category, (Group(shape, None, n),))
    if category in ("two_object", "color_attr"):
        a, b = _pick(rng, SHAPES, 2)
        c, d = _pick(rng, list(COLORS), 2)
        attr = category == "color_attr"
        spec = PromptSpec(category, (Group(a, c if attr else None, 1), Group(b, d if attr else None, 1)))
        return Scene(_place(rng, [(a, c), (b, d)], size)), spec
    if category == "position":
        a, b = _pick(rng, SHAPES, 2)
        rel = _pick(rng, list(RELATIONS), 1)[0]
        pair = [(a, _colour(rng)), (b, _colour(rng))]
        for _ in range(_MAX_TRIES):
            oa, ob = _place(rng, pair, size)
            if rel in relations(_box(oa), _box(ob), SAMPLE_POSITION_THRESHOLD, SAMPLE_DIRECTION):
                return Scene((oa, ob)), PromptSpec(category, (Group(a, None, 1), Group(b, None, 1)), rel)
        raise RuntimeError(f"could not place a pair {rel!r} on a {size}-px canvas")
    raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")


def _sentence(rng: np.random.Generator, spec: PromptSpec, split: Split) -> str:
    templates = {"train": TRAIN_TEMPLATES, "eval": EVAL_TEMPLATES}[split][spec.category]
    template = templates[int(rng.integers(len(templates)))]
    g = spec.groups
    fields = {
        "a": g[0].shape,
        "b": g[1].shape if len(g) > 1 else "",
        "c": g[0].color or "",
        "d": (g[1].color or "") if len(g) > 1 else "",
        "n": NUMBERS.get(g[0].count, str(g[0].count)),
        "rel": RELATIONS[spec.relation] if spec.relation else "",
    }
    return template.format(**fields)


def sample(
    rng: np.random.Generator, category: str, size: int = 32, split: Split = "train"
) -> tuple[Scene, PromptSpec, str]:
    """A random scene of ``category`` on a ``size``-px canvas, the spec it satisfies, and its sentence.

    Object counts: single_object and colors 1, two_object / position / color_attr 2, counting N ∈ {2, 3, 4}.
    Shapes in a two-group prompt differ; color_attr's two colours differ. ``split`` picks the template set.
    Deterministic given the generator's state.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    scene, spec = _scene_and_spec(rng, category, size)
    return scene, spec, _sentence(rng, spec, split)


def _mask(o: Obj, size: int) -> np.ndarray:
    p = np.arange(size, dtype=np.float64) + 0.5
    px, py = p[None, :], p[:, None]
    h = o.size / 2
    if o.shape == "circle":
        return (px - o.cx) ** 2 + (py - o.cy) ** 2 <= h * h
    if o.shape == "square":
        return (np.abs(px - o.cx) <= h) & (np.abs(py - o.cy) <= h)
    if o.shape == "triangle":
        top = o.cy - h
        return (py >= top) & (py <= o.cy + h) & (np.abs(px - o.cx) <= (py - top) / 2)
    raise ValueError(f"unknown shape {o.shape!r}")


def render(scene: Scene, size: int = 32) -> np.ndarray:
    """The scene as a uint8 [size, size, 3] RGB image: black background, crisp (aliased) palette pixels."""
    img = np.zeros((size, size, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    for o in scene.objects:
        img[_mask(o, size)] = COLORS[o.color]
    return img


def training_pairs(seed: int, n: int, size: int = 32) -> tuple[torch.Tensor, list[str]]:
    """n training images, float32 [n, 3, size, size] in [-1, 1] (x / 127.5 - 1), and their train-split prompts.

    Each pair's category is drawn uniformly from CATEGORIES; everything is a function of ``seed`` alone.
    """
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    prompts: list[str] = []
    for i in range(n):
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
        scene, _spec, text = sample(rng, category, size, split="train")
        images[i] = render(scene, size)
        prompts.append(text)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
    return x.contiguous(), prompts


def evaluation_set(prompts_per_category: int, seed: int = 1234) -> list[tuple[PromptSpec, str]]:
    """A fixed eval prompt set: ``prompts_per_category`` (spec, eval-split sentence) pairs per category, in
    CATEGORIES order. Deterministic in (prompts_per_category, seed); prompts may repeat (the world is small)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[PromptSpec, str]] = []
    for category in CATEGORIES:
        for _ in range(prompts_per_category):
            _scene, spec, text = sample(rng, category, split="eval")
            out.append((spec, text))
    return out
