"""The miniature world's vocabulary: shapes, colors, sizes, regions, and the words used to talk about them.

Everything a caption, a ground-truth file or a rule-based teacher says about a scene comes from these tables, so
the evaluation can match answers exactly.
"""

from __future__ import annotations

# Shape outlines live in `render.py`; the order here fixes the COCO category ids (1-based).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "heart")

# Saturated, mutually distinct colors; backgrounds are light neutrals, so every object contrasts with them.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "orange": (245, 134, 14),
    "yellow": (238, 204, 22),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "purple": (138, 60, 190),
    "pink": (240, 110, 180),
    "brown": (125, 76, 36),
}

# Half-extent of an object as a fraction of half a grid cell. The gaps between them are wide on purpose:
# a "small" object is never mistaken for a "medium" one, at any image size.
SIZES: dict[str, float] = {"small": 0.45, "medium": 0.7, "large": 0.95}

# Light neutral background tones (the second texture color is derived by darkening).
BACKGROUND_TONES: dict[str, tuple[int, int, int]] = {
    "white": (246, 246, 242),
    "gray": (210, 210, 210),
    "beige": (235, 222, 196),
    "light blue": (210, 226, 240),
    "light green": (214, 236, 208),
}
TEXTURES: tuple[str, ...] = ("plain", "stripes", "checks", "noise")

GRID = 3  # the image is a 3x3 grid; each object sits in its own cell, so regions are never ambiguous
ROW_NAMES: tuple[str, ...] = ("top", "middle", "bottom")
COL_NAMES: tuple[str, ...] = ("left", "center", "right")
REGIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}
# How to say "where" for each region in running text.
REGION_PHRASES: dict[str, str] = {
    "top left": "in the top left corner",
    "top": "at the top",
    "top right": "in the top right corner",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left corner",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right corner",
}

NUMBER_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)

# Relations recorded in ground truth for every ordered pair of objects where they hold.
RELATIONS: tuple[str, ...] = ("left_of", "right_of", "above", "below", "larger_than", "smaller_than")


def number_word(n: int) -> str:
    """0..9 as a word, larger numbers as digits."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def with_article(phrase: str) -> str:
    """ "a red star" / "an orange star": the indefinite article the phrase's first letter takes."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def plural(noun: str, n: int) -> str:
    """English plural of a shape noun (`cross` -> `crosses`)."""
    if n == 1:
        return noun
    return noun + ("es" if noun.endswith(("s", "x", "sh", "ch")) else "s")
