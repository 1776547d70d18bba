"""Grounding check: absent objects and contradicting counts are flagged; negations and subsets are not."""

from __future__ import annotations

from vistune.datagen.annotations import Box, ImageAnnotations
from vistune.datagen.grounding import WORLD_TOTAL_NOUNS, GroundingChecker

PHOTO = ImageAnnotations(
    1,
    "1.jpg",
    100,
    100,
    captions=("A man walks two dogs past a parked car.",),
    boxes=(Box("person", (0, 0, 10, 10)), Box("dog", (20, 20, 5, 5)), Box("dog", (30, 20, 5, 5))),
)
CATEGORIES = ["person", "dog", "car", "cat", "hot dog", "bicycle"]


def test_absent_category_is_flagged_present_and_captioned_are_not():
    check = GroundingChecker(CATEGORIES)
    assert check.check("A man walks his dogs. A car is parked nearby.", PHOTO) == []
    issues = check.check("A cat watches from a bicycle.", PHOTO)
    assert any("'cat'" in i for i in issues) and any("'bicycle'" in i for i in issues)


def test_negated_mentions_are_fine():
    assert GroundingChecker(CATEGORIES).check("There is no cat in this picture.", PHOTO) == []


def test_counts_must_match_the_boxes():
    check = GroundingChecker(CATEGORIES)
    assert check.check("Two dogs are being walked.", PHOTO) == []
    issues = check.check("Three dogs are being walked.", PHOTO)
    assert issues == ["says 'Three dogs', but the boxes show 2"]
    assert check.check("Three dogs would be too many for him.", PHOTO) == []  # hypothetical: not a claim


def test_world_attributes_and_totals():
    image = ImageAnnotations(
        2,
        "2.png",
        64,
        64,
        boxes=(
            Box("circle", (0, 0, 5, 5), {"color": "red", "size": "small"}),
            Box("star", (9, 9, 5, 5), {"color": "blue", "size": "large"}),
        ),
    )
    check = GroundingChecker(
        ["circle", "star", "square"], {"red", "blue", "green", "small", "large"}, WORLD_TOTAL_NOUNS
    )
    assert check.check("There are two shapes: a red circle and a large blue star.", image) == []
    assert check.check("There are three shapes.", image) == ["says 'three shapes', but the boxes show 2"]
    assert any("green circle" in i for i in check.check("A green circle sits there.", image))
    assert any("'square'" in i for i in check.check("A square sits there.", image))
    assert check.check("There is one red shape.", image) == []
    assert check.check("There are two red shapes.", image) == ["says 'two red shapes', but the boxes show 1"]


def test_negation_only_excuses_the_mention_it_negates():
    check = GroundingChecker(CATEGORIES)
    assert check.check("No, there is not a single cat here.", PHOTO) == []
    issues = check.check("A cat sits on the car, which is not moving.", PHOTO)
    assert issues == ["mentions 'cat', which is not in the captions or boxes"]
