"""Scenes of the miniature world: what is where, independent of the pixel size it is rendered at.

A scene is sampled from a seeded `numpy.random.Generator`, so the same generator state gives the same scene. All
geometry is in fractions of the image side (0..1), so one scene renders identically at 32 px or 512 px.

Layout rule (why questions about position are well-posed): the image is a 3x3 grid; every object sits in its own
cell with its center at least 0.2 cell-widths inside it, so "left of", "above" and "in the top right corner" have
exactly one right answer, and a (color, shape) pair occurs at most once per scene, so "the red star" names one
object.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from vistune.errors import VistuneError
from vistune.world.vocab import BACKGROUND_TONES, COLORS, GRID, REGIONS, SHAPES, SIZES, TEXTURES

_CELL = 1.0 / GRID
_MAX_JITTER = (
    0.3 * _CELL
)  # center offset from the cell center when overlap is allowed (keeps 0.2 cells margin)
_MIN_VISIBLE = 0.6  # an object that is more than 40% hidden by others is resampled: it must stay recognisable


@dataclass
class WorldConfig:
    """How scenes are sampled. Defaults give the `vistune world build` world."""

    min_objects: int = 1
    max_objects: int = 6
    overlap_prob: float = 0.25  # fraction of scenes where objects may overlap (each stays >= 60% visible)
    texture_prob: float = 0.5  # fraction of scenes with a textured (striped, checked, noisy) background
    shapes: list[str] = field(default_factory=lambda: list(SHAPES))
    colors: list[str] = field(default_factory=lambda: list(COLORS))

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= GRID * GRID:
            raise VistuneError(
                f"world config: need 1 <= min_objects <= max_objects <= {GRID * GRID}, "
                f"got min_objects={self.min_objects}, max_objects={self.max_objects}"
            )
        for name, values, known in (("shapes", self.shapes, SHAPES), ("colors", self.colors, COLORS)):
            unknown = sorted(set(values) - set(known))
            if unknown or not values:
                raise VistuneError(
                    f"world config: {name} must be a non-empty subset of {', '.join(known)}; "
                    f"unknown: {', '.join(unknown) or '(empty list)'}"
                )
        if len(self.shapes) * len(self.colors) < self.max_objects:
            raise VistuneError(
                "world config: fewer (color, shape) pairs than max_objects; add shapes or colors"
            )


@dataclass(frozen=True)
class Background:
    """A light neutral tone, optionally textured. `seed` drives the noise texture."""

    tone: str
    texture: str = "plain"
    period: float = 0.1  # stripe / check period as a fraction of the image side
    angle: float = 0.0  # stripe angle in degrees
    seed: int = 0

    @property
    def description(self) -> str:
        """`"striped beige"`, `"plain gray"`, ... — how captions and teachers name it."""
        adjective = {"plain": "plain", "stripes": "striped", "checks": "checked", "noise": "mottled"}
        return f"{adjective[self.texture]} {self.tone}"


@dataclass(frozen=True)
class WorldObject:
    """One shape. Geometry in fractions of the image side; `row`/`col` index the 3x3 grid cell."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    cx: float
    cy: float

    @property
    def half_extent(self) -> float:
        """Half of the object's bounding-box side as a fraction of the image side (before shape trimming)."""
        return SIZES[self.size] * _CELL / 2

    @property
    def region(self) -> str:
        return REGIONS[(self.row, self.col)]

    @property
    def name(self) -> str:
        """`"red star"` — unique within a scene."""
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Objects in drawing order (later ones are drawn on top) over a background."""

    background: Background
    objects: tuple[WorldObject, ...]
    overlap: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sample_scene(rng: np.random.Generator, config: WorldConfig | None = None) -> Scene:
    """Sample one scene. Deterministic for the generator's state."""
    config = config or WorldConfig()
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    background = _sample_background(rng, config)
    overlap = bool(rng.random() < config.overlap_prob)
    cells = [divmod(int(c), GRID) for c in rng.choice(GRID * GRID, size=n, replace=False)]
    pairs = [(c, s) for c in config.colors for s in config.shapes]
    picks = [pairs[int(i)] for i in rng.choice(len(pairs), size=n, replace=False)]
    sizes = [list(SIZES)[int(i)] for i in rng.integers(0, len(SIZES), size=n)]
    if overlap:
        from vistune.world.render import visible_fractions  # render imports scene; import here avoids a cycle

        for _ in range(20):  # rejection sampling: keep every object mostly visible
            objects = _place(rng, cells, picks, sizes, jitter=True)
            scene = Scene(background, objects, overlap=True)
            if min(visible_fractions(scene, 96)) >= _MIN_VISIBLE:
                return scene
    objects = _place(rng, cells, picks, sizes, jitter=False)
    return Scene(background, objects, overlap=False)


def _place(
    rng: np.random.Generator,
    cells: list[tuple[int, int]],
    picks: list[tuple[str, str]],
    sizes: list[str],
    *,
    jitter: bool,
) -> tuple[WorldObject, ...]:
    objects = []
    for (row, col), (color, shape), size in zip(cells, picks, sizes, strict=True):
        half = SIZES[size] * _CELL / 2
        # Without overlap the object must stay inside its own cell; with it, it may reach into neighbours.
        limit = _MAX_JITTER if jitter else max(0.0, _CELL / 2 - half) * 0.9
        dx, dy = rng.uniform(-limit, limit, size=2)
        cx = min(max((col + 0.5) * _CELL + float(dx), half), 1 - half)  # never leave the image
        cy = min(max((row + 0.5) * _CELL + float(dy), half), 1 - half)
        objects.append(WorldObject(shape, color, size, row, col, round(cx, 5), round(cy, 5)))
    return tuple(objects)


def _sample_background(rng: np.random.Generator, config: WorldConfig) -> Background:
    tone = list(BACKGROUND_TONES)[int(rng.integers(len(BACKGROUND_TONES)))]
    if rng.random() >= config.texture_prob:
        return Background(tone)
    texture = TEXTURES[1 + int(rng.integers(len(TEXTURES) - 1))]
    return Background(
        tone,
        texture,
        period=round(float(rng.uniform(0.05, 0.15)), 4),
        angle=round(float(rng.uniform(0, 180)), 2),
        seed=int(rng.integers(2**31)),
    )
