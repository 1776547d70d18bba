"""The `world` teacher: RULE-BASED, not a language model. It reads the miniature world's ground truth and writes
exact conversations, detailed descriptions and reasoning answers in varied phrasing.

Its replies use the same "Question: / Answer:" text a language model is asked for, so they go through the same
parser, validator and grounding check as an LLM's. It needs no network and no model, is deterministic for a
(seed, image, flavor, attempt), and is what the embedded default, the demo and the tests use. Token counts it
reports are word counts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from vistune.datagen.teachers.base import FatalTeacherError, TeacherReply, TeacherRequest
from vistune.world.truth import ImageTruth, ObjectTruth, load_ground_truth
from vistune.world.vocab import COLORS, REGION_PHRASES, SHAPES, SIZES, number_word, plural, with_article

QA = tuple[str, str]
_FLAVOR_CODE = {"conversation": 0, "detail": 1, "complex_reasoning": 2}


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _where(o: ObjectTruth) -> str:
    return REGION_PHRASES[o.region]


def _inventory(t: ImageTruth) -> str:
    return _join([with_article(o.name) for o in t.objects])


def _ref(t: ImageTruth, o: ObjectTruth) -> str:
    """The shortest unambiguous name: "the star" if it is the only star, else "the red star"."""
    same_shape = sum(p.shape == o.shape for p in t.objects)
    return f"the {o.shape}" if same_shape == 1 else f"the {o.name}"


# ----------------------------------------------------------------------------------------------- conversation
def _q_count(t: ImageTruth, rng: np.random.Generator) -> QA:
    n = len(t.objects)
    q = _pick(
        rng, ["How many shapes are in the image?", "How many objects can you see?", "Count the shapes."]
    )
    if n == 1:
        return q, f"There is just one shape: {_inventory(t)}."
    return q, f"There are {number_word(n)} shapes: {_inventory(t)}."


def _q_color(t: ImageTruth, rng: np.random.Generator) -> QA:
    o = t.objects[int(rng.integers(len(t.objects)))]
    if sum(p.shape == o.shape for p in t.objects) == 1:
        return f"What color is the {o.shape}?", f"The {o.shape} is {o.color}."
    return f"What color is the {o.shape} {_where(o)}?", f"That {o.shape} is {o.color}."


def _q_where(t: ImageTruth, rng: np.random.Generator) -> QA:
    o = t.objects[int(rng.integers(len(t.objects)))]
    q = _pick(rng, [f"Where is {_ref(t, o)}?", f"In which part of the image is {_ref(t, o)}?"])
    return q, f"{_cap(_ref(t, o))} is {_where(o)}."


def _q_exists(t: ImageTruth, rng: np.random.Generator) -> QA:
    if rng.random() < 0.5:
        o = t.objects[int(rng.integers(len(t.objects)))]
        return (
            f"Is there {with_article(o.name)} in the picture?",
            f"Yes, there is {with_article(o.size + ' ' + o.name)} {_where(o)}.",
        )
    present = {o.name for o in t.objects}
    absent = [f"{c} {s}" for c in COLORS for s in SHAPES if f"{c} {s}" not in present]
    name = absent[int(rng.integers(len(absent)))]
    return f"Is there {with_article(name)} in the picture?", f"No, there is no {name} in this image."


def _q_size(t: ImageTruth, rng: np.random.Generator) -> QA:
    if len(t.objects) < 2:
        o = t.objects[0]
        return f"How big is {_ref(t, o)}?", f"{_cap(_ref(t, o))} is {o.size}."
    i, j = (int(k) for k in rng.choice(len(t.objects), size=2, replace=False))
    a, b = t.objects[i], t.objects[j]
    q = f"Which is bigger, {_ref(t, a)} or {_ref(t, b)}?"
    if a.size == b.size:
        return q, f"They are about the same size: both are {a.size}."
    big, small = (a, b) if SIZES[a.size] > SIZES[b.size] else (b, a)
    return q, f"{_cap(_ref(t, big))} is bigger; it is {big.size}, while {_ref(t, small)} is {small.size}."


def _q_relation(t: ImageTruth, rng: np.random.Generator) -> QA:
    if len(t.objects) < 2:
        return _q_where(t, rng)
    i, j = (int(k) for k in rng.choice(len(t.objects), size=2, replace=False))
    a, b = t.objects[i], t.objects[j]
    horizontal = rng.random() < 0.5
    if horizontal:
        q = f"Is {_ref(t, a)} to the left of {_ref(t, b)}?"
        if a.col < b.col:
            return q, f"Yes, {_ref(t, a)} is to the left of {_ref(t, b)}."
        if a.col > b.col:
            return q, f"No, {_ref(t, a)} is to the right of {_ref(t, b)}."
        side = "above" if a.row < b.row else "below"
        return q, f"No, they are in the same column: {_ref(t, a)} is directly {side} {_ref(t, b)}."
    q = f"Is {_ref(t, a)} above {_ref(t, b)}?"
    if a.row < b.row:
        return q, f"Yes, {_ref(t, a)} is higher up in the image than {_ref(t, b)}."
    if a.row > b.row:
        return q, f"No, {_ref(t, a)} is below {_ref(t, b)}."
    side = "left" if a.col < b.col else "right"
    return q, f"No, they are at the same height; {_ref(t, a)} is to the {side} of {_ref(t, b)}."


def _q_region(t: ImageTruth, rng: np.random.Generator) -> QA:
    regions = list(REGION_PHRASES)
    region = regions[int(rng.integers(len(regions)))]
    q = f"What is {REGION_PHRASES[region]} of the image?"
    found = [o for o in t.objects if o.region == region]
    if not found:
        return q, "That part of the image is empty, showing only the background."
    return q, f"There is {with_article(found[0].size + ' ' + found[0].name)} there."


def _q_background(t: ImageTruth, rng: np.random.Generator) -> QA:
    q = _pick(rng, ["What does the background look like?", "Describe the background."])
    return q, f"The background is {t.background}."


_CONVERSATION: list[Callable[[ImageTruth, np.random.Generator], QA]] = [
    _q_count,
    _q_color,
    _q_where,
    _q_exists,
    _q_size,
    _q_relation,
    _q_region,
    _q_background,
]


def conversation(t: ImageTruth, rng: np.random.Generator) -> list[QA]:
    k = int(rng.integers(3, 6))
    makers = [_CONVERSATION[int(i)] for i in rng.permutation(len(_CONVERSATION))[:k]]
    pairs: list[QA] = []
    for make in makers:
        qa = make(t, rng)
        if qa[0] not in {q for q, _ in pairs}:
            pairs.append(qa)
    return pairs


# ---------------------------------------------------------------------------------------------------- detail
def detail(t: ImageTruth, rng: np.random.Generator) -> str:
    n = len(t.objects)
    count = "a single shape" if n == 1 else f"{number_word(n)} shapes"
    sentences = [
        _pick(
            rng,
            [
                f"The image shows {count} on a {t.background} background.",
                f"This picture contains {count}, drawn on a {t.background} background.",
            ],
        )
    ]
    for o in sorted(t.objects, key=lambda p: (p.row, p.col)):
        thing = with_article(f"{o.size} {o.name}")
        sentences.append(
            _pick(
                rng,
                [
                    f"{_cap(_where(o))} there is {thing}.",
                    f"{_cap(thing)} sits {_where(o)}.",
                    f"{_cap(_where(o))}, you can see {thing}.",
                ],
            )
        )
    sentences += _relation_sentences(t, rng, limit=2)
    sentences += _overlap_sentences(t)
    return " ".join(sentences)


def _relation_sentences(t: ImageTruth, rng: np.random.Generator, *, limit: int) -> list[str]:
    words = {"left_of": "is to the left of", "above": "is above", "larger_than": "is larger than"}
    facts = [(i, r, j) for i, r, j in t.relations if r in words]
    out = []
    for k in rng.permutation(len(facts))[:limit]:
        i, r, j = facts[int(k)]
        out.append(f"{_cap(_ref(t, t.objects[i]))} {words[r]} {_ref(t, t.objects[j])}.")
    return out


def _overlap_sentences(t: ImageTruth) -> list[str]:
    out = []
    for o in t.objects:
        if o.visible_fraction >= 0.999:
            continue
        cover = next((p for p in t.objects[o.index + 1 :] if _boxes_meet(o.box, p.box)), None)
        if cover is not None:
            out.append(f"{_cap(_ref(t, cover))} partly covers {_ref(t, o)}.")
    return out


def _boxes_meet(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


# ----------------------------------------------------------------------------------------- complex reasoning
def _r_order(t: ImageTruth, rng: np.random.Generator) -> QA:
    q = _pick(
        rng,
        [
            "List the shapes from left to right.",
            "In what order do the shapes appear, going from left to right?",
        ],
    )
    facts = " ".join(f"{_cap(_ref(t, o))} is {_where(o)}." for o in t.objects)
    order = sorted(t.objects, key=lambda o: (o.center[0], o.row))
    steps = [
        f"{_cap(facts)}",
        f"Going from left to right, the order is: {_join([_ref(t, o) for o in order])}.",
    ]
    if len(t.objects) == 1:
        steps = [f"There is only one shape, {_ref(t, t.objects[0])}, so it is the whole list."]
    return q, " ".join(steps)


def _r_remove(t: ImageTruth, rng: np.random.Generator) -> QA:
    o = t.objects[int(rng.integers(len(t.objects)))]
    q = f"If {_ref(t, o)} were taken away, what would be left in the image?"
    rest = [p for p in t.objects if p is not o]
    if not rest:
        return (
            q,
            f"{_cap(_ref(t, o))} is the only shape, so taking it away would leave just the {t.background} background.",
        )
    k = len(rest)
    return q, (
        f"The image has {number_word(len(t.objects))} shapes: {_inventory(t)}. Taking away {_ref(t, o)} would "
        f"leave {number_word(k)} {plural('shape', k)}: {_join([with_article(p.name) for p in rest])}."
    )


def _r_column(t: ImageTruth, rng: np.random.Generator) -> QA:
    col = int(rng.integers(3))
    side = ("left", "middle", "right")[col]
    q = f"How many shapes are in the {side} third of the image, and which are they?"
    found = [o for o in t.objects if o.col == col]
    where = " ".join(f"{_cap(_ref(t, o))} is {_where(o)}." for o in t.objects)
    if not found:
        return q, f"{where} None of them is in the {side} third, so the answer is zero."
    k = len(found)
    return (
        q,
        f"{where} So the {side} third holds {number_word(k)} {plural('shape', k)}: {_join([_ref(t, o) for o in found])}.",
    )


def _r_closest(t: ImageTruth, rng: np.random.Generator) -> QA:
    if len(t.objects) < 2:
        return _r_remove(t, rng)
    o = t.objects[int(rng.integers(len(t.objects)))]
    others = [p for p in t.objects if p is not o]
    dist = [float(np.hypot(p.center[0] - o.center[0], p.center[1] - o.center[1])) for p in others]
    best = others[int(np.argmin(dist))]
    q = f"Which shape is closest to {_ref(t, o)}?"
    where = " ".join(f"{_cap(_ref(t, p))} is {_where(p)}." for p in others)
    return q, f"{_cap(_ref(t, o))} is {_where(o)}. {where} Of these, {_ref(t, best)} is the nearest to it."


_REASONING = [_r_order, _r_remove, _r_column, _r_closest]


def complex_reasoning(t: ImageTruth, rng: np.random.Generator) -> QA:
    return _REASONING[int(rng.integers(len(_REASONING)))](t, rng)


# ---------------------------------------------------------------------------------------------------- teacher
def render_reply(flavor: str, t: ImageTruth, rng: np.random.Generator) -> str:
    """The reply text for a flavor, in the format the LLM teachers are asked for."""
    if flavor == "detail":
        return detail(t, rng)
    pairs = conversation(t, rng) if flavor == "conversation" else [complex_reasoning(t, rng)]
    return "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in pairs)


class WorldTeacher:
    """Rule-based teacher over a world's ground truth file (`annotations/ground_truth_{split}.json`)."""

    name = "world"

    def __init__(self, ground_truth: str | Path, *, seed: int = 0) -> None:
        self.path = Path(ground_truth)
        self.truth = load_ground_truth(self.path)
        self.seed = seed

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        truth = self.truth.get(request.image.image_id)
        if truth is None:
            raise FatalTeacherError(
                f"image id {request.image.image_id} is not in the ground truth {self.path}; pass the ground truth "
                "of the same world split as --ground-truth"
            )
        rng = np.random.default_rng(
            [self.seed, request.image.image_id, _FLAVOR_CODE[request.flavor], request.attempt]
        )
        text = render_reply(request.flavor, truth, rng)
        prompt_words = sum(len(m["content"].split()) for m in request.messages)
        return TeacherReply(text, prompt_tokens=prompt_words, completion_tokens=len(text.split()))

    async def aclose(self) -> None:
        return None
