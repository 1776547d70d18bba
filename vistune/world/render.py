"""Rendering scenes to pixels (Pillow + numpy), and the exact pixel geometry ground truth is made of.

Shapes are polygons in a unit square, scaled and placed per object. Images are drawn at 2-4x and box-filtered
down, so edges are anti-aliased and small renders (32-64 px) still show recognisable shapes. Boxes are computed
from the same polygons, so a box is tight around what is drawn.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

from vistune.world.scene import Background, Scene, WorldObject
from vistune.world.vocab import BACKGROUND_TONES, COLORS

# Drawn size relative to the object's half-extent, so that different shapes look about equally big.
_SHAPE_SCALE = {"square": 0.85, "hexagon": 0.95}


def _regular(n: int, r: float, start_deg: float) -> list[tuple[float, float]]:
    return [
        (
            r * math.cos(math.radians(start_deg + 360 * k / n)),
            r * math.sin(math.radians(start_deg + 360 * k / n)),
        )
        for k in range(n)
    ]


def _star() -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else 0.45
        angle = math.radians(-90 + 36 * k)
        points.append((r * math.cos(angle), r * math.sin(angle)))
    return points


def _cross() -> list[tuple[float, float]]:
    a = 0.34  # arm half-width
    return [
        (-a, -1),
        (a, -1),
        (a, -a),
        (1, -a),
        (1, a),
        (a, a),
        (a, 1),
        (-a, 1),
        (-a, a),
        (-1, a),
        (-1, -a),
        (-a, -a),
    ]


def _heart() -> list[tuple[float, float]]:
    ts = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(ts) ** 3
    y = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))  # image y points down
    return list(zip(x.tolist(), y.tolist(), strict=True))


_RAW_OUTLINES = {
    "circle": lambda: _regular(96, 1.0, 0.0),
    "square": lambda: [(-1, -1), (1, -1), (1, 1), (-1, 1)],
    "triangle": lambda: [(0, -1), (1, 0.8), (-1, 0.8)],
    "star": _star,
    "diamond": lambda: [(0, -1), (0.72, 0), (0, 1), (-0.72, 0)],
    "hexagon": lambda: _regular(6, 1.0, 0.0),
    "cross": _cross,
    "heart": _heart,
}


@cache
def unit_outline(shape: str) -> np.ndarray:
    """The shape's outline, centered on its bounding box, largest half-side = its scale (<= 1). Shape [K, 2]."""
    points = np.asarray(_RAW_OUTLINES[shape](), dtype=np.float64)  # [K, 2] as (x, y)
    lo, hi = points.min(axis=0), points.max(axis=0)
    points = points - (lo + hi) / 2
    return points / np.abs(points).max() * _SHAPE_SCALE.get(shape, 1.0)


def outline_px(obj: WorldObject, size: float) -> np.ndarray:
    """The object's outline in pixel coordinates of a `size`-px image. Shape [K, 2]."""
    return unit_outline(obj.shape) * (obj.half_extent * size) + np.array([obj.cx, obj.cy]) * size


def box_xywh(obj: WorldObject, size: int) -> list[float]:
    """Tight COCO box `[x, y, w, h]` in pixels, rounded to 0.01 px."""
    pts = outline_px(obj, size)
    (x1, y1), (x2, y2) = pts.min(axis=0).tolist(), pts.max(axis=0).tolist()
    x1, y1, x2, y2 = (min(max(v, 0.0), float(size)) for v in (x1, y1, x2, y2))
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def render_scene(scene: Scene, size: int = 224) -> Image.Image:
    """Draw the scene as an RGB image of `size` x `size` pixels. Same scene and size -> same pixels."""
    if size < 8:
        raise ValueError(f"image size must be >= 8 px, got {size}")
    factor = max(2, min(4, math.ceil(256 / size)))  # supersampling: more for tiny images, which need it most
    big = size * factor
    # Textures are computed at the output size (cheap) and upsampled exactly, so box-filtering back is lossless.
    background = Image.fromarray(_background_pixels(scene.background, size), "RGB")
    canvas = background.resize((big, big), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        draw.polygon([tuple(p) for p in outline_px(obj, big).tolist()], fill=COLORS[obj.color])
    return canvas.resize((size, size), Image.Resampling.BOX)


def label_map(scene: Scene, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels [size, size] with 0 = background and i + 1 = object i where it is visible, own areas [N] in px)."""
    labels = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(labels)
    areas = np.zeros(len(scene.objects), dtype=np.int64)
    for i, obj in enumerate(scene.objects):
        polygon = [tuple(p) for p in outline_px(obj, size).tolist()]
        own = Image.new("L", (size, size), 0)
        ImageDraw.Draw(own).polygon(polygon, fill=1)
        areas[i] = int(np.asarray(own, dtype=np.int64).sum())
        draw.polygon(polygon, fill=i + 1)
    return np.asarray(labels), areas


def visible_fractions(scene: Scene, size: int) -> list[float]:
    """For each object, the fraction of its own pixels not covered by objects drawn after it."""
    labels, areas = label_map(scene, size)
    visible = np.bincount(labels.ravel(), minlength=len(scene.objects) + 1)[1:]
    return [float(v / a) if a else 0.0 for v, a in zip(visible, areas, strict=True)]


def _background_pixels(bg: Background, size: int) -> np.ndarray:
    """[size, size, 3] uint8 pixels of the background (textures use a darker second tone)."""
    base = np.array(BACKGROUND_TONES[bg.tone], dtype=np.float32)
    dark = base * 0.86
    if bg.texture == "plain":
        return np.broadcast_to(base.astype(np.uint8), (size, size, 3)).copy()
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # [size, size] each
    if bg.texture == "stripes":
        theta = math.radians(bg.angle)
        phase = (xx * math.cos(theta) + yy * math.sin(theta)) / bg.period
        mix = (np.floor(phase) % 2).astype(np.float32)
    elif bg.texture == "checks":
        mix = ((np.floor(xx / bg.period) + np.floor(yy / bg.period)) % 2).astype(np.float32)
    else:  # noise: smooth value noise, coarse random grid upsampled bilinearly
        cells = max(2, round(1 / bg.period))
        coarse = np.random.default_rng(bg.seed).random((cells, cells)).astype(np.float32)
        mix = np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.Resampling.BILINEAR))
    pixels = base * (1 - mix[..., None]) + dark * mix[..., None]  # [size, size, 3]
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
