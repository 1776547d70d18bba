"""Captions for world scenes: several true, differently worded sentences per image, as COCO has (~5).

Each caption style looks at the scene from a different angle (inventory, positions, gist, one relation, colors,
counts by shape), so a captioning model or a teacher LLM sees the variety real captions have. Every statement is
true of the scene: captions are built from the same facts the ground truth records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

from vistune.world.scene import Scene, WorldObject
from vistune.world.vocab import REGION_PHRASES, SIZES, number_word, plural, with_article

CAPTIONS_PER_IMAGE = 5


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _inventory(scene: Scene, rng: np.random.Generator) -> str:
    things = [with_article(f"{o.size} {o.name}") for o in scene.objects]
    n = len(things)
    if n == 1:
        return _cap(f"{things[0]} alone on a {scene.background.description} background.")
    head = _pick(
        rng, [f"{number_word(n)} shapes", f"{number_word(n)} geometric figures", f"{number_word(n)} objects"]
    )
    return _cap(f"{head} on a {scene.background.description} background: {_join(things)}.")


def _positions(scene: Scene, rng: np.random.Generator) -> str:
    order = rng.permutation(len(scene.objects))[:3]
    parts = [
        f"{with_article(scene.objects[i].name)} {REGION_PHRASES[scene.objects[i].region]}" for i in order
    ]
    tail = " among other shapes" if len(scene.objects) > 3 else ""
    return _cap(f"{_join(parts)}{tail}.")


def _gist(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    count = "a single shape" if n == 1 else f"{number_word(n)} flat shapes"
    bg = scene.background.description
    return _pick(
        rng,
        [
            f"A simple synthetic picture of {count} on a {bg} background.",
            f"A drawing with {count} on a {bg} backdrop.",
            f"Colored geometric figures on a {bg} background."
            if n > 1
            else f"One colored figure on a {bg} background.",
        ],
    )


def _relation(scene: Scene, rng: np.random.Generator) -> str:
    if len(scene.objects) == 1:
        o = scene.objects[0]
        return _cap(f"{with_article(o.size + ' ' + o.name)} sits {REGION_PHRASES[o.region]} of the image.")
    i, j = (int(k) for k in rng.choice(len(scene.objects), size=2, replace=False))
    a, b = scene.objects[i], scene.objects[j]
    words = _relation_words(a, b)
    if not words:  # same cell row and column cannot happen (one object per cell); keep a true fallback
        words = ["in the same picture as"]
    return _cap(f"{with_article(a.name)} {_pick(rng, words)} {with_article(b.name)}.")


def _relation_words(a: WorldObject, b: WorldObject) -> list[str]:
    """Every true way to say where `a` is relative to `b` (grid cells make these unambiguous)."""
    words = []
    if a.col < b.col:
        words.append("to the left of")
    if a.col > b.col:
        words.append("to the right of")
    if a.row < b.row:
        words.append("above")
    if a.row > b.row:
        words.append("below")
    if SIZES[a.size] > SIZES[b.size]:
        words.append("that is larger than")
    if SIZES[a.size] < SIZES[b.size]:
        words.append("that is smaller than")
    return words


def _colors(scene: Scene, rng: np.random.Generator) -> str:
    colors = list(dict.fromkeys(o.color for o in scene.objects))  # first-appearance order, no repeats
    if len(colors) == 1:
        return _cap(f"everything drawn in this image is {colors[0]}.")
    return _pick(
        rng,
        [
            f"Shapes in {_join(colors)} on a {scene.background.tone} background.",
            f"A picture using the colors {_join(colors)}.",
        ],
    )


def _counts(scene: Scene, rng: np.random.Generator) -> str:
    counts = Counter(o.shape for o in scene.objects)
    parts = [
        with_article(shape) if k == 1 else f"{number_word(k)} {plural(shape, k)}"
        for shape, k in counts.most_common()
    ]
    return _cap(f"{_join(parts)} on a {scene.background.description} background.")


_STYLES: list[Callable[[Scene, np.random.Generator], str]] = [
    _inventory,
    _positions,
    _gist,
    _relation,
    _colors,
    _counts,
]


def make_captions(scene: Scene, rng: np.random.Generator, k: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """`k` distinct true captions, each in a different style (order shuffled by `rng`)."""
    styles = [_STYLES[int(i)] for i in rng.permutation(len(_STYLES))[:k]]
    captions: list[str] = []
    for style in styles:
        text = style(scene, rng)
        if text not in captions:
            captions.append(text)
    return captions
