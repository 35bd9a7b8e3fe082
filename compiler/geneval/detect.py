"""A deterministic object detector for the coloured-shape world (``adatsq.core.models.shapes.scenes``).

Pipeline on an H x W x 3 RGB image:

1. **Colour segmentation.** Each pixel goes to the nearest of the K + 1 palette entries (background + COLORS)
   in RGB; a pixel farther than ``max_distance`` from every entry (a blend, e.g. a blurred edge) is unlabelled.
   The palette's least pairwise distance is 255, so the default 120 keeps a pixel within its own Voronoi cell
   with a margin and tolerates per-channel Gaussian noise of σ = 20/255 (|noise| ≈ 35 on average).
2. **Components.** Per colour: fill holes (pixels of another label enclosed by the colour, e.g. noise specks
   inside an object), then 8-connected components. Components smaller than ``min_area`` pixels are noise.
3. **Shape** from the component's pixel box (w x h) and pixel set (:func:`classify_shape`): the vertical
   asymmetry asym = (mean row - box centre row) / h (an apex-up triangle puts its mass low, +1/6; circle and
   square 0) and how filled the box's corners are (a square's are, a circle's are not, a triangle's lower
   ones only). Corners, not the box fill ratio: a rasterised 10-px circle fills 0.88 of its box and a blurred
   square about 0.9, while the corner regions stay apart (≤ 1/3 against ≥ 2/3 up to blur σ = 0.6 px).

A :class:`Detection` reports the box centre (the same point as an ``Obj``'s cx, cy: GenEval compares box centres),
the box extent and the pixel area.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from adatsq.core.models.shapes.scenes import BACKGROUND, COLORS

__all__ = [
    "MAX_DISTANCE",
    "Detection",
    "classify_shape",
    "default_min_area",
    "detect",
    "segment",
    "shape_features",
]

MAX_DISTANCE = 120.0
"""A pixel farther than this (RGB, 0-255 Euclidean) from every palette entry is unlabelled."""
TRIANGLE_ASYM = 0.065
TRIANGLE_ASYM_WEAK = 0.03
SQUARE_CORNERS = 0.5

try:  # scipy is optional: a small numpy/BFS fallback does the same two operations
    from scipy import ndimage as _ndimage
except ImportError:  # pragma: no cover - exercised through the fallback functions directly
    _ndimage = None

_PALETTE_NAMES: tuple[str, ...] = ("background", *COLORS)
_PALETTE = np.array([BACKGROUND, *COLORS.values()], dtype=np.float32)
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Detection:
    """One detected object: shape, palette colour, box centre (pixels, y down), pixel area, box extent.

    ``width``/``height`` are the pixel box's extent; 0 means unknown (then scoring uses sqrt(area)).
    """

    shape: str
    color: str
    cx: float
    cy: float
    area: int
    width: int = 0
    height: int = 0


def default_min_area(height: int, width: int) -> int:
    """Least component area kept: max(4, ceil(0.008 · H · W)) pixels (9 on a 32 x 32 image); the smallest
    object a scene draws (a triangle of side 0.22 · size) covers about 0.024 · H · W."""
    return max(4, int(np.ceil(0.008 * height * width)))


def _as_rgb255(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        return np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0
    raise ValueError(f"expected uint8 (0-255) or float (0-1) pixels, got {a.dtype}")


def segment(image: np.ndarray, max_distance: float = MAX_DISTANCE) -> np.ndarray:
    """Per-pixel palette index (0 background, 1..K the COLORS in order) or -1 when no entry is within reach."""
    rgb = _as_rgb255(image)
    flat = rgb.reshape(-1, 3)
    # |x - p|² = |x|² - 2 x·p + |p|², one small matmul for all pixels and palette entries
    d2 = (flat * flat).sum(1, keepdims=True) - 2.0 * flat @ _PALETTE.T + (_PALETTE * _PALETTE).sum(1)[None]
    labels = d2.argmin(1)
    labels[d2.min(1) > max_distance * max_distance] = -1
    return labels.reshape(rgb.shape[:2])


def _fill_holes_bfs(mask: np.ndarray) -> np.ndarray:
    """Fill holes: every non-mask pixel not 4-connected to the border through non-mask pixels joins the mask."""
    h, w = mask.shape
    outside = np.zeros_like(mask)
    queue: deque[tuple[int, int]] = deque()
    for y in range(h):
        for x in (0, w - 1):
            if not mask[y, x] and not outside[y, x]:
                outside[y, x] = True
                queue.append((y, x))
    for x in range(w):
        for y in (0, h - 1):
            if not mask[y, x] and not outside[y, x]:
                outside[y, x] = True
                queue.append((y, x))
    while queue:
        y, x = queue.popleft()
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < h and 0 <= nx < w and not mask[ny, nx] and not outside[ny, nx]:
                outside[ny, nx] = True
                queue.append((ny, nx))
    return ~outside


def _label_bfs(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected component labels 1..n (0 outside the mask), numbered in raster order of first pixel."""
    h, w = mask.shape
    out = np.zeros(mask.shape, dtype=np.int32)
    n = 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if out[y0, x0]:
            continue
        n += 1
        out[y0, x0] = n
        queue = deque([(int(y0), int(x0))])
        while queue:
            y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not out[ny, nx]:
                        out[ny, nx] = n
                        queue.append((ny, nx))
    return out, n


Slices = tuple[slice, slice]


def _components(mask: np.ndarray) -> tuple[np.ndarray, list[Slices]]:
    """Hole-filled 8-connected component labels of ``mask`` and each component's box (label i: boxes[i-1])."""
    if _ndimage is not None:
        # holes = 4-connected components of the complement that do not touch the border
        outside, _m = _ndimage.label(~mask)
        rim = np.unique(np.concatenate([outside[0], outside[-1], outside[:, 0], outside[:, -1]]))
        filled = mask | ((outside > 0) & ~np.isin(outside, rim))
        labels, _n = _ndimage.label(filled, structure=_EIGHT)
        return labels, list(_ndimage.find_objects(labels))
    labels, n = _label_bfs(_fill_holes_bfs(mask))
    boxes: list[Slices] = []
    for i in range(1, n + 1):
        ys, xs = np.nonzero(labels == i)
        boxes.append((slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1)))
    return labels, boxes


def shape_features(pixels: np.ndarray) -> tuple[float, float, float, float]:
    """(fill, asym, top, bottom) of one component given as a boolean mask cropped to its pixel box (h x w).

    With pixel centres in box-normalised coordinates u, v ∈ (-1, 1), the *corner region* is |u| + |v| > 1.5,
    which lies outside the inscribed circle (whose L1 norm is at most √2 ≈ 1.41); ``top`` and ``bottom`` are
    the filled fractions of its upper (v < 0) and lower (v > 0) halves.
    """
    h, w = pixels.shape
    u = (np.arange(w) + 0.5 - w / 2) / (w / 2)
    v = (np.arange(h) + 0.5 - h / 2) / (h / 2)
    corner = (np.abs(u)[None, :] + np.abs(v)[:, None]) > 1.5
    upper = corner & (v[:, None] < 0)
    lower = corner & (v[:, None] > 0)
    rows = np.nonzero(pixels)[0]
    asym = float((rows.mean() + 0.5 - h / 2) / h)
    top = float(pixels[upper].mean()) if upper.any() else 0.0
    bottom = float(pixels[lower].mean()) if lower.any() else 0.0
    return float(pixels.mean()), asym, top, bottom


def classify_shape(pixels: np.ndarray) -> str:
    """The shape of a component mask cropped to its box, by :func:`shape_features`:

    triangle if asym > 0.065, or asym > 0.03 and bottom - top ≥ 0.5 (mass low, base corners filled, top ones
    empty); else square if (top + bottom) / 2 ≥ 0.5 (the box corners are filled); else circle.
    """
    _fill, asym, top, bottom = shape_features(pixels)
    if asym > TRIANGLE_ASYM or (asym > TRIANGLE_ASYM_WEAK and bottom - top >= 0.5):
        return "triangle"
    return "square" if (top + bottom) / 2 >= SQUARE_CORNERS else "circle"


def detect(
    image: np.ndarray, min_area: int | None = None, max_distance: float = MAX_DISTANCE
) -> list[Detection]:
    """The objects in an RGB image (uint8 0-255 or float 0-1, H x W x 3), in reading order: sorted by (cy, cx, color).

    ``min_area`` defaults to :func:`default_min_area`. Deterministic: no randomness, no learned parameters.
    """
    labels = segment(image, max_distance)
    h, w = labels.shape
    keep = default_min_area(h, w) if min_area is None else min_area
    found: list[Detection] = []
    for k in (int(v) for v in np.unique(labels) if v > 0):
        comp, boxes = _components(labels == k)
        for i, (sy, sx) in enumerate(boxes, start=1):
            crop = comp[sy, sx] == i
            area = int(crop.sum())
            if area < keep:
                continue
            found.append(
                Detection(
                    shape=classify_shape(crop),
                    color=_PALETTE_NAMES[k],
                    cx=(sx.start + sx.stop) / 2,
                    cy=(sy.start + sy.stop) / 2,
                    area=area,
                    width=sx.stop - sx.start,
                    height=sy.stop - sy.start,
                )
            )
    return sorted(found, key=lambda d: (d.cy, d.cx, d.color))
