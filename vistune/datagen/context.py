"""The text a blind teacher sees instead of the image: captions, then one line per object with a normalized box.

    A man rides a red bicycle down a city street.
    ...
    person: [0.681, 0.242, 0.774, 0.694]
    bicycle: [0.384, 0.496, 0.685, 0.914]

Boxes are `[x1, y1, x2, y2]` divided by the image width/height, 3 decimals, as in the LLaVA paper. World
annotations carry attributes, so their lines read `large red circle: [...]`.
"""

from __future__ import annotations

from vistune.datagen.annotations import Box, ImageAnnotations


def box_line(box: Box, width: int, height: int) -> str:
    x, y, w, h = box.bbox
    coords = (x / width, y / height, (x + w) / width, (y + h) / height)
    return f"{box.label}: [{', '.join(f'{min(max(c, 0.0), 1.0):.3f}' for c in coords)}]"


def build_context(image: ImageAnnotations, *, captions: bool = True, boxes: bool = True) -> str:
    """Captions (one a line) then boxes (one a line), either part optional. Empty string if nothing is known."""
    lines: list[str] = []
    if captions:
        lines += list(image.captions)
    if boxes and image.width > 0 and image.height > 0:
        lines += [box_line(b, image.width, image.height) for b in image.boxes]
    return "\n".join(lines)
