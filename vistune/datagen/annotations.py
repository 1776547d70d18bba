"""Reading COCO-format annotations (real COCO or the miniature world) into one record per image.

Captions (`captions_*.json`) and instances (`instances_*.json`) are both optional, but at least one is needed: the
conversation flavor in LLaVA used captions only, and boxes alone are enough context too. Every problem is a
`VistuneError` naming the file, the record and what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vistune.errors import VistuneError

# Annotation attributes (the world writes them; real COCO has none) that are prepended to a category name in the
# context, in this order: "large red circle".
LABEL_ATTRIBUTES: tuple[str, ...] = ("size", "color")


@dataclass(frozen=True)
class Box:
    """One object: COCO category name, pixel box `[x, y, w, h]`, optional attributes (color, size, ...)."""

    category: str
    bbox: tuple[float, float, float, float]
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Category name qualified by known attributes: `"large red circle"` (or just `"person"`)."""
        words = [self.attributes[k] for k in LABEL_ATTRIBUTES if k in self.attributes]
        return " ".join([*words, self.category])


@dataclass(frozen=True)
class ImageAnnotations:
    """Everything the teacher may know about one image."""

    image_id: int
    file_name: str
    width: int
    height: int
    captions: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class AnnotationSet:
    """All images of a split, in file order, plus the category vocabulary (for the grounding check)."""

    images: tuple[ImageAnnotations, ...]
    categories: tuple[str, ...]
    description: str = ""

    def attribute_values(self) -> set[str]:
        """Values of the label attributes (colors, sizes) used anywhere: words the grounding check knows."""
        return {
            b.attributes[k]
            for im in self.images
            for b in im.boxes
            for k in LABEL_ATTRIBUTES
            if k in b.attributes
        }


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise VistuneError(f"{what} file {path} does not exist; pass the COCO-format {what} JSON")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise VistuneError(
            f"{what} file {path} is not valid JSON ({err}); re-download or rebuild it"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise VistuneError(f"{what} file {path} has no 'images' list; is it a COCO-format {what} file?")
    if not isinstance(data.get("annotations"), list):
        raise VistuneError(f"{what} file {path} has no 'annotations' list; is it a COCO-format {what} file?")
    return data


def _images(data: dict[str, Any], path: Path) -> dict[int, dict[str, Any]]:
    images = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise VistuneError(f"{path}: images[{k}] needs 'id' and 'file_name', got {str(im)[:120]}")
        images[int(im["id"])] = im
    return images


def _captions(path: Path, images: dict[int, dict[str, Any]]) -> dict[int, list[str]]:
    data = _read_json(path, "captions")
    images.update({i: im for i, im in _images(data, path).items() if i not in images})
    captions: dict[int, list[str]] = {}
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str) or "image_id" not in ann:
            raise VistuneError(f"{path}: annotations[{k}] needs 'image_id' and a string 'caption'")
        iid = int(ann["image_id"])
        if iid not in images:
            raise VistuneError(f"{path}: annotations[{k}] refers to image_id {iid}, which is not in 'images'")
        captions.setdefault(iid, []).append(" ".join(ann["caption"].split()))
    return captions


def _boxes(path: Path, images: dict[int, dict[str, Any]]) -> tuple[dict[int, list[Box]], list[str]]:
    data = _read_json(path, "instances")
    images.update({i: im for i, im in _images(data, path).items() if i not in images})
    try:
        names = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    except (KeyError, TypeError, ValueError):
        raise VistuneError(f"{path}: every category needs an integer 'id' and a 'name'") from None
    boxes: dict[int, list[Box]] = {}
    for k, ann in enumerate(data["annotations"]):
        try:
            iid, cid = int(ann["image_id"]), int(ann["category_id"])
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise VistuneError(
                f"{path}: annotations[{k}] needs 'image_id', 'category_id' and 'bbox' [x, y, w, h]"
            ) from None
        if iid not in images:
            raise VistuneError(f"{path}: annotations[{k}] refers to image_id {iid}, which is not in 'images'")
        if cid not in names:
            raise VistuneError(f"{path}: annotations[{k}] has category_id {cid}, not among 'categories'")
        attributes = {str(a): str(v) for a, v in (ann.get("attributes") or {}).items()}
        boxes.setdefault(iid, []).append(Box(names[cid], (x, y, w, h), attributes))
    return boxes, list(names.values())


def load_annotations(
    captions: str | Path | None = None,
    instances: str | Path | None = None,
    images_dir: str | Path | None = None,
) -> AnnotationSet:
    """Join captions and instances by image id. With `images_dir`, every image must have its file there."""
    if captions is None and instances is None:
        raise VistuneError("give --captions, --instances or both (COCO-format JSON files)")
    images: dict[int, dict[str, Any]] = {}
    caps = _captions(Path(captions), images) if captions else {}
    boxes, categories = _boxes(Path(instances), images) if instances else ({}, [])
    records = []
    for iid, im in images.items():
        width, height = _image_size(im, images_dir)
        records.append(
            ImageAnnotations(
                image_id=iid,
                file_name=str(im["file_name"]),
                width=width,
                height=height,
                captions=tuple(caps.get(iid, ())),
                boxes=tuple(boxes.get(iid, ())),
            )
        )
    if images_dir is not None:
        _check_files(records, Path(images_dir))
    source = Path(captions or instances)  # type: ignore[arg-type]
    info = json.loads(source.read_text()).get("info") or {}
    description = str(info.get("description", "")) if isinstance(info, dict) else ""
    return AnnotationSet(tuple(records), tuple(categories), description)


def _image_size(im: dict[str, Any], images_dir: str | Path | None) -> tuple[int, int]:
    if "width" in im and "height" in im:
        return int(im["width"]), int(im["height"])
    if images_dir is None:
        raise VistuneError(
            f"image {im['id']} has no width/height; add them or pass --images so they can be read"
        )
    from PIL import Image

    path = Path(images_dir) / str(im["file_name"])
    if not path.is_file():
        return 0, 0  # reported with all other missing files by _check_files
    with Image.open(path) as img:  # reads the header only
        return img.size


def _check_files(records: list[ImageAnnotations], images_dir: Path) -> None:
    if not images_dir.is_dir():
        raise VistuneError(f"--images {images_dir} is not a directory")
    missing = [r for r in records if not (images_dir / r.file_name).is_file()]
    if missing:
        examples = ", ".join(f"id {r.image_id} -> {images_dir / r.file_name}" for r in missing[:3])
        raise VistuneError(
            f"{len(missing)} of {len(records)} image ids have no file in {images_dir} (e.g. {examples}); "
            "pass the directory that holds these images as --images, or remove those images from the annotations"
        )
