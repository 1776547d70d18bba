"""Exact evaluation on the miniature world: closed questions with one right answer, and description precision/recall.

Closed questions are posed LLaVA-1.5 style: the question, then "Answer with a single word or phrase.", so a
short answer can be matched exactly (after normalizing case, articles, trailing punctuation and number words).
Every question is well-posed by construction: it names an object only by a property unique in the image, and
asks only about facts the ground truth records. Types, balanced per image:

    color      What color is the star?                 -> red           (the star is the only star)
    shape      What shape is the red object?           -> star          (the only red object)
    count      How many shapes are there? / stars?     -> three
    position   Where is the red star?                  -> top left      (one of the 3x3 grid regions)
    existence  Is there a green heart?                 -> yes / no      (50/50; "no" names a near miss)

Two answer styles, both scored exactly:

    short     the question + "Answer with a single word or phrase."  -> "red"    (LLaVA-1.5's VQA prompt)
    sentence  the bare question  -> "The star is red."   (a conversational reply that restates what was asked,
              as the teacher's conversations do); the asked attribute is extracted by rule (the one color, shape,
              number, region or yes / no the reply names) and must equal the truth; a reply that names none, or
              two different ones, is wrong.

The same generator writes *training* records in both styles from train-split images (as LLaVA-1.5 mixes VQA data
with that prompt into stage 2); evaluation uses held-out images only.

Detailed descriptions are scored by the objects they mention ("red star", "large red star", "red stars")
against the ground truth: precision = right mentions / mentions, recall = objects mentioned / objects present.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vistune.text.templates import with_image_placeholders
from vistune.world.truth import ImageTruth, ObjectTruth
from vistune.world.vocab import (
    COLORS,
    NUMBER_WORDS,
    REGION_PHRASES,
    REGIONS,
    SHAPES,
    SIZES,
    number_word,
    plural,
    with_article,
)

QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "position", "existence")
# Each answer style and the key its scores have in `evaluate_model`'s result.
SCORE_KEYS: dict[str, str] = {"short": "closed", "sentence": "closed_sentence"}
ANSWER_STYLES: tuple[str, ...] = tuple(SCORE_KEYS)
SHORT_ANSWER_PROMPT = "Answer with a single word or phrase."
DETAIL_PROMPT = "Describe the image in detail."


@dataclass(frozen=True)
class ClosedQuestion:
    image_id: int
    file_name: str
    qtype: str
    question: str
    answer: str  # the short answer ("red")
    reply: str  # the sentence answer ("The star is red.")

    def conversation(
        self, *, with_answer: bool = False, style: str = "short", placement: str = "before"
    ) -> list[dict[str, str]]:
        """LLaVA-format turns: `<image>` and the question (+ the short-answer instruction in the `short` style),
        and the answer in that style. placement: the image before the question or after it (and its instruction)."""
        _check_style(style)
        text = self.question + (f"\n{SHORT_ANSWER_PROMPT}" if style == "short" else "")
        prompt = with_image_placeholders(text, 1, placement)
        turns = [{"from": "human", "value": prompt}]
        if with_answer:
            turns.append({"from": "gpt", "value": self.answer if style == "short" else self.reply})
        return turns


def _check_style(style: str) -> None:
    if style not in ANSWER_STYLES:
        raise ValueError(f"unknown answer style {style!r}; valid: {', '.join(ANSWER_STYLES)}")


_Made = tuple[str, str, str]  # question, short answer, sentence reply


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _ref(t: ImageTruth, o: ObjectTruth) -> str:
    """The shortest unambiguous name: "star" if it is the only star, else "red star" (pairs are unique)."""
    return o.shape if sum(p.shape == o.shape for p in t.objects) == 1 else o.name


def _q_color(t: ImageTruth, rng: np.random.Generator) -> _Made | None:
    unique = [o for o in t.objects if sum(p.shape == o.shape for p in t.objects) == 1]
    if not unique:
        return None
    o = _pick(rng, unique)
    return f"What color is the {o.shape}?", o.color, f"The {o.shape} is {o.color}."


def _q_shape(t: ImageTruth, rng: np.random.Generator) -> _Made | None:
    unique = [o for o in t.objects if sum(p.color == o.color for p in t.objects) == 1]
    if not unique:
        return None
    o = _pick(rng, unique)
    # The reply names the asked-about color right before the answer: the lookup it needs is one step.
    return f"What shape is the {o.color} object?", o.shape, f"It is {with_article(o.name)}."


def _q_count(t: ImageTruth, rng: np.random.Generator) -> _Made:
    if rng.random() < 0.5:
        shape, n = "shape", len(t.objects)
        question = "How many shapes are there?"
    else:
        shape = _pick(rng, [o.shape for o in t.objects])
        n = sum(o.shape == shape for o in t.objects)
        question = f"How many {plural(shape, 2)} are there?"
    verb = "is" if n == 1 else "are"
    return question, number_word(n), f"There {verb} {number_word(n)} {plural(shape, n)}."


def _q_position(t: ImageTruth, rng: np.random.Generator) -> _Made:
    o = _pick(rng, t.objects)
    ref = _ref(t, o)
    return f"Where is the {ref}?", o.region, f"The {ref} is {REGION_PHRASES[o.region]}."


def _q_existence(t: ImageTruth, rng: np.random.Generator) -> _Made:
    if rng.random() < 0.5:
        o = _pick(rng, t.objects)
        return f"Is there a {o.name}?", "yes", _echo(o.color, o.shape, "yes")
    present = {(o.color, o.shape) for o in t.objects}
    # A near miss (a color or a shape that is in the image, in another combination) makes "no" non-trivial.
    near = [(c, o.shape) for o in t.objects for c in COLORS if (c, o.shape) not in present]
    near += [(o.color, s) for o in t.objects for s in SHAPES if (o.color, s) not in present]
    color, shape = _pick(rng, near)
    return f"Is there a {color} {shape}?", "no", _echo(color, shape, "no")


def _echo(color: str, shape: str, answer: str) -> str:
    """The existence reply names the object first, so yes / no is decided right after it (one lookup step)."""
    found = "Yes, there is one." if answer == "yes" else "No, there is none."
    return f"{with_article(f'{color} {shape}').capitalize()}? {found}"


_MAKERS: dict[str, Callable[[ImageTruth, np.random.Generator], _Made | None]] = {
    "color": _q_color,
    "shape": _q_shape,
    "count": _q_count,
    "position": _q_position,
    "existence": _q_existence,
}


def closed_questions(
    truth: ImageTruth, rng: np.random.Generator, types: Sequence[str] = QUESTION_TYPES
) -> list[ClosedQuestion]:
    """One question of each type in `types` that is well-posed for this image."""
    out = []
    for qtype in types:
        made = _MAKERS[qtype](truth, rng)
        if made is not None:
            out.append(ClosedQuestion(truth.image_id, truth.file_name, qtype, *made))
    return out


def make_closed_questions(
    truths: Iterable[ImageTruth], *, seed: int, per_type: int = 1, types: Sequence[str] = QUESTION_TYPES
) -> list[ClosedQuestion]:
    """`per_type` rounds of questions per image (duplicates within an image dropped), deterministic for `seed`."""
    rng = np.random.default_rng(seed)
    out: list[ClosedQuestion] = []
    for truth in truths:
        seen: set[str] = set()
        for _ in range(per_type):
            for q in closed_questions(truth, rng, types):
                if q.question not in seen:
                    seen.add(q.question)
                    out.append(q)
    return out


def question_records(
    questions: Sequence[ClosedQuestion],
    *,
    id_prefix: str = "closed",
    style: str = "short",
    placement: str = "before",
) -> list[dict]:
    """LLaVA-format training records in one answer style (`image`: the file name in the split's image folder), the
    image before or after the question (`placement`)."""
    return [
        {
            "id": f"{id_prefix}-{q.image_id}-{i}",
            "image": q.file_name,
            "conversations": q.conversation(with_answer=True, style=style, placement=placement),
        }
        for i, q in enumerate(questions)
    ]


# ------------------------------------------------------------------------------------------------------- scoring
_WORD_NUMBERS = {str(i): w for i, w in enumerate(NUMBER_WORDS)}
_STRIP = re.compile(r"^(the|a|an|it is|it's|there (is|are))\s+|[.!,;:]+$")


def normalize_answer(text: str) -> str:
    """Lowercase, first line only, no trailing punctuation or leading article, digits as number words."""
    text = text.strip().lower().split("\n", 1)[0].strip()
    previous = None
    while previous != text:  # strip repeatedly: "The top left." -> "top left"
        previous, text = text, _STRIP.sub("", text).strip()
    return _WORD_NUMBERS.get(text, text)


_COLOR_WORD = re.compile(rf"\b({'|'.join(COLORS)})\b")
_SHAPE_WORD = re.compile(
    rf"\b({'|'.join(sorted({plural(s, 2) for s in SHAPES} | set(SHAPES), key=len, reverse=True))})\b"
)
_NUMBER_WORD = re.compile(rf"\b({'|'.join(NUMBER_WORDS)}|\d+)\b")
# Each region's running-text phrase ("in the top left corner") and bare name, longest first so "top left" wins.
_REGION_WORD = re.compile(
    r"\b("
    + "|".join(
        re.escape(p)
        for p in sorted(set(REGION_PHRASES.values()) | set(REGIONS.values()), key=len, reverse=True)
    )
    + r")\b"
)
_PHRASE_REGION = {phrase: region for region, phrase in REGION_PHRASES.items()} | {
    r: r for r in REGIONS.values()
}


def extract_answer(qtype: str, reply: str) -> str:
    """The asked attribute a sentence reply names: "The star is red." -> "red" (color question).

    The one distinct color / shape / number / region / yes-or-no the reply names (else "": none, or two
    different ones).
    """
    text = reply.strip().lower()
    if qtype == "existence":
        found = set(re.findall(r"\b(yes|no)\b", text))
    elif qtype == "color":
        found = {m.group(1) for m in _COLOR_WORD.finditer(text)}
    elif qtype == "shape":
        found = {_SINGULAR[m.group(1)] for m in _SHAPE_WORD.finditer(text)}
    elif qtype == "count":
        found = {normalize_answer(m.group(1)) for m in _NUMBER_WORD.finditer(text)}
    elif qtype == "position":
        found = {_PHRASE_REGION[m.group(1)] for m in _REGION_WORD.finditer(text)}
    else:
        raise ValueError(f"unknown question type {qtype!r}; valid: {', '.join(QUESTION_TYPES)}")
    return found.pop() if len(found) == 1 else ""


def is_correct(q: ClosedQuestion, prediction: str, style: str = "short") -> bool:
    """Exact match after `normalize_answer`; in the `sentence` style, of the answer `extract_answer` finds."""
    said = extract_answer(q.qtype, prediction) if style == "sentence" else prediction
    return normalize_answer(said) == normalize_answer(q.answer)


@dataclass
class ClosedScores:
    """Exact-match accuracy per question type and overall (micro), with counts and the majority baseline."""

    accuracy: dict[str, float]
    counts: dict[str, int]
    majority_baseline: dict[str, float]
    overall: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def score_closed(
    questions: Sequence[ClosedQuestion], predictions: Sequence[str], *, style: str = "short"
) -> ClosedScores:
    """Exact match after `normalize_answer` (`sentence` style: of the answer `extract_answer` finds in the reply);
    the baseline always answers a type's most frequent answer."""
    _check_style(style)
    if len(questions) != len(predictions):
        raise ValueError(f"{len(questions)} questions but {len(predictions)} predictions")
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    answers: dict[str, Counter[str]] = {}
    for q, pred in zip(questions, predictions, strict=True):
        total[q.qtype] += 1
        right[q.qtype] += is_correct(q, pred, style)
        answers.setdefault(q.qtype, Counter())[q.answer] += 1
    types = [t for t in QUESTION_TYPES if total[t]] + sorted(set(total) - set(QUESTION_TYPES))
    n = sum(total.values())
    return ClosedScores(
        accuracy={t: right[t] / total[t] for t in types},
        counts={t: total[t] for t in types},
        majority_baseline={t: answers[t].most_common(1)[0][1] / total[t] for t in types},
        overall=sum(right.values()) / max(1, n),
        n=n,
    )


_SIZE_WORDS = "|".join(SIZES)
_MENTION = re.compile(
    rf"\b({'|'.join(COLORS)})\s+(?:(?:{_SIZE_WORDS})\s+)?({'|'.join(sorted({plural(s, 2) for s in SHAPES} | set(SHAPES), key=len, reverse=True))})\b"
)
_SINGULAR = {plural(s, 2): s for s in SHAPES} | {s: s for s in SHAPES}


def mentioned_objects(text: str) -> set[tuple[str, str]]:
    """Distinct (color, shape) pairs a text names, e.g. "a large red star" -> {("red", "star")}."""
    return {(m.group(1), _SINGULAR[m.group(2)]) for m in _MENTION.finditer(text.lower())}


@dataclass
class DescriptionScores:
    precision: float
    recall: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def score_descriptions(truths: Sequence[ImageTruth], texts: Sequence[str]) -> DescriptionScores:
    """Micro-averaged precision and recall of the objects mentioned, against each image's ground truth."""
    hits = mentions = present = 0
    for truth, text in zip(truths, texts, strict=True):
        said = mentioned_objects(text)
        gt = {(o.color, o.shape) for o in truth.objects}
        hits += len(said & gt)
        mentions += len(said)
        present += len(gt)
    return DescriptionScores(
        precision=hits / mentions if mentions else 0.0, recall=hits / max(1, present), n=len(truths)
    )


# ---------------------------------------------------------------------------------------------------- running
def evaluate_model(
    model_dir: str | Path,
    truths: Sequence[ImageTruth],
    image_dir: str | Path,
    *,
    seed: int = 1,
    max_images: int | None = None,
    max_descriptions: int = 20,
    examples: int = 0,
    batch_size: int = 64,
    device: str = "auto",
    dtype: str = "auto",
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Greedy answers of the saved model on held-out images -> scores (and a few examples for the report).

    Each image is asked one question of every type in both answer styles (single-turn, as posed in training),
    and the first `max_descriptions` images are described in detail. device / dtype: as `load_pretrained`'s
    ("auto": a GPU in bfloat16 when there is one, else the CPU in float32).
    """
    from vistune.infer.generate import GenerationConfig, generate_batch
    from vistune.model.io import load_pretrained
    from vistune.text.templates import get_template

    loaded = load_pretrained(model_dir, device=device, dtype=dtype)
    template = get_template(loaded.template)
    truths = list(truths)[:max_images]
    questions = make_closed_questions(truths, seed=seed)
    images = _image_loader(Path(image_dir))

    def answer(conversations: list, files: list[str], max_new_tokens: int, what: str) -> list[str]:
        """Greedy answers in batches of `batch_size`, one image each."""
        config = GenerationConfig(max_new_tokens=max_new_tokens)
        out: list[str] = []
        for start in range(0, len(conversations), batch_size):
            out += generate_batch(
                loaded.model,
                loaded.tokenizer,
                loaded.image_processor,
                template,
                conversations[start : start + batch_size],
                [[images(f)] for f in files[start : start + batch_size]],
                config,
            )
            if on_progress is not None:
                on_progress(f"{len(out)}/{len(conversations)} {what}")
        return out

    files = [q.file_name for q in questions]
    # where the model was trained to see the image: before or after the question
    place = loaded.image_placement
    answers = answer([q.conversation(placement=place) for q in questions], files, 8, "short answers")
    replies = answer(
        [q.conversation(style="sentence", placement=place) for q in questions], files, 16, "sentence answers"
    )
    described = truths[:max_descriptions]
    prompt = [{"from": "human", "value": with_image_placeholders(DETAIL_PROMPT, 1, place)}]
    descriptions = answer([prompt] * len(described), [t.file_name for t in described], 160, "descriptions")
    return {
        SCORE_KEYS["short"]: score_closed(questions, answers).to_dict(),
        SCORE_KEYS["sentence"]: score_closed(questions, replies, style="sentence").to_dict(),
        "descriptions": score_descriptions(described, descriptions).to_dict(),
        "examples": _examples(truths, questions, answers, replies, descriptions, examples),
    }


def _image_loader(image_dir: Path) -> Callable[[str], Any]:
    from vistune.data.images import load_image

    cache: dict[str, Any] = {}

    def get(file_name: str) -> Any:
        if file_name not in cache:
            cache[file_name] = load_image(image_dir / file_name)
        return cache[file_name]

    return get


def _examples(
    truths: Sequence[ImageTruth],
    questions: Sequence[ClosedQuestion],
    answers: Sequence[str],
    replies: Sequence[str],
    descriptions: Sequence[str],
    n: int,
) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(truths[: min(n, len(descriptions))]):
        qa = [
            {
                "type": q.qtype,
                "question": q.question,
                "answer": a,
                "truth": q.answer,
                "correct": is_correct(q, a),
                "reply": r,
                "reply_correct": is_correct(q, r, "sentence"),
            }
            for q, a, r in zip(questions, answers, replies, strict=True)
            if q.image_id == t.image_id
        ]
        out.append(
            {"image_id": t.image_id, "file_name": t.file_name, "qa": qa, "description": descriptions[i]}
        )
    return out


__all__ = [
    "evaluate_model",
    "DETAIL_PROMPT",
    "QUESTION_TYPES",
    "REGIONS",
    "SHORT_ANSWER_PROMPT",
    "ANSWER_STYLES",
    "SCORE_KEYS",
    "extract_answer",
    "is_correct",
    "ClosedQuestion",
    "ClosedScores",
    "DescriptionScores",
    "closed_questions",
    "make_closed_questions",
    "mentioned_objects",
    "normalize_answer",
    "question_records",
    "score_closed",
    "score_descriptions",
]
