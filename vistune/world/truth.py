"""Ground truth of the miniature world: exact facts per image, for rule-based teachers and exact evaluation.

`ground_truth_{split}.json` holds, per image, every object's shape, color, size class, grid region, pixel box and
visible fraction, all true pairwise relations (`[i, "left_of", j]`, ...), the captions, and the scene itself
(fractional geometry), so an image can be re-rendered at any size with `render_scene(truth.scene, size)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vistune.errors import VistuneError
from vistune.world.scene import Background, Scene, WorldObject
from vistune.world.vocab import SIZES

GROUND_TRUTH_VERSION = 1


@dataclass(frozen=True)
class ObjectTruth:
    """One object as drawn: `box` is COCO `[x, y, w, h]` in pixels, `center` in pixels."""

    index: int
    annotation_id: int
    shape: str
    color: str
    size: str
    region: str
    row: int
    col: int
    center: tuple[float, float]
    box: tuple[float, float, float, float]
    area: int
    visible_fraction: float

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class ImageTruth:
    """Everything known about one world image."""

    image_id: int
    file_name: str
    width: int
    height: int
    background: str
    objects: tuple[ObjectTruth, ...]
    relations: tuple[tuple[int, str, int], ...]
    captions: tuple[str, ...]
    scene: Scene

    def related(self, relation: str) -> list[tuple[ObjectTruth, ObjectTruth]]:
        """All (a, b) with `a relation b`, e.g. `related("left_of")`."""
        return [(self.objects[i], self.objects[j]) for i, r, j in self.relations if r == relation]


def relations(scene: Scene) -> list[tuple[int, str, int]]:
    """Every true `[i, relation, j]` for ordered pairs i != j. Grid cells make position relations unambiguous."""
    facts = []
    for i, a in enumerate(scene.objects):
        for j, b in enumerate(scene.objects):
            if i == j:
                continue
            if a.col < b.col:
                facts.append((i, "left_of", j))
            if a.col > b.col:
                facts.append((i, "right_of", j))
            if a.row < b.row:
                facts.append((i, "above", j))
            if a.row > b.row:
                facts.append((i, "below", j))
            if SIZES[a.size] > SIZES[b.size]:
                facts.append((i, "larger_than", j))
            if SIZES[a.size] < SIZES[b.size]:
                facts.append((i, "smaller_than", j))
    return facts


def scene_from_dict(data: dict[str, Any]) -> Scene:
    """Inverse of `Scene.to_dict()`."""
    return Scene(
        background=Background(**data["background"]),
        objects=tuple(WorldObject(**o) for o in data["objects"]),
        overlap=bool(data.get("overlap", False)),
    )


def image_truth_from_dict(data: dict[str, Any]) -> ImageTruth:
    return ImageTruth(
        image_id=int(data["image_id"]),
        file_name=data["file_name"],
        width=int(data["width"]),
        height=int(data["height"]),
        background=data["background"],
        objects=tuple(
            ObjectTruth(**{**o, "center": tuple(o["center"]), "box": tuple(o["box"])})
            for o in data["objects"]
        ),
        relations=tuple((int(i), str(r), int(j)) for i, r, j in data["relations"]),
        captions=tuple(data["captions"]),
        scene=scene_from_dict(data["scene"]),
    )


def load_ground_truth(path: str | Path) -> dict[int, ImageTruth]:
    """Read `ground_truth_{split}.json` -> {image id: ImageTruth}. Raises VistuneError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise VistuneError(
            f"ground truth file {path} does not exist; build the world with `vistune world build`"
        )
    try:
        data = json.loads(path.read_text())
        if data.get("world_version") != GROUND_TRUTH_VERSION:
            raise VistuneError(
                f"ground truth file {path} has world_version {data.get('world_version')!r}, expected "
                f"{GROUND_TRUTH_VERSION}; rebuild it with `vistune world build`"
            )
        images = [image_truth_from_dict(entry) for entry in data["images"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise VistuneError(
            f"ground truth file {path} is malformed ({type(err).__name__}: {err}); rebuild it with `vistune world build`"
        ) from None
    return {truth.image_id: truth for truth in images}
