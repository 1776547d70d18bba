"""Exact evaluation on the miniature world: well-posed questions, exact matching, description precision/recall."""

from __future__ import annotations

import numpy as np
import pytest

from vistune.eval.world import (
    QUESTION_TYPES,
    closed_questions,
    make_closed_questions,
    mentioned_objects,
    normalize_answer,
    question_records,
    score_closed,
    score_descriptions,
)
from vistune.world.build import build_world
from vistune.world.truth import load_ground_truth


@pytest.fixture(scope="module")
def truths(tmp_path_factory):
    paths = build_world(tmp_path_factory.mktemp("world"), {"train": 40}, seed=3, size=32)
    return list(load_ground_truth(paths.ground_truth("train")).values())


def test_questions_are_well_posed_and_answers_true(truths):
    rng = np.random.default_rng(0)
    for t in truths:
        for q in closed_questions(t, rng):
            names = {(o.color, o.shape) for o in t.objects}
            if q.qtype == "color":
                shape = q.question.removeprefix("What color is the ").rstrip("?")
                assert [o.color for o in t.objects if o.shape == shape] == [q.answer]
            elif q.qtype == "shape":
                color = q.question.removeprefix("What shape is the ").removesuffix(" object?")
                assert [o.shape for o in t.objects if o.color == color] == [q.answer]
            elif q.qtype == "position":
                ref = q.question.removeprefix("Where is the ").rstrip("?").split()
                matches = [
                    o for o in t.objects if o.shape == ref[-1] and (len(ref) == 1 or o.color == ref[0])
                ]
                assert len(matches) == 1 and matches[0].region == q.answer
            elif q.qtype == "existence":
                color, shape = q.question.removeprefix("Is there a ").rstrip("?").split()
                assert q.answer == ("yes" if (color, shape) in names else "no")


def test_types_are_balanced_and_existence_is_half_yes(truths):
    qs = make_closed_questions(truths * 5, seed=1)
    counts = {t: sum(q.qtype == t for q in qs) for t in QUESTION_TYPES}
    assert min(counts.values()) >= 0.6 * max(counts.values())
    yes = sum(q.answer == "yes" for q in qs if q.qtype == "existence") / counts["existence"]
    assert 0.35 < yes < 0.65


def test_normalize_and_score():
    assert normalize_answer("The top left.") == "top left"
    assert normalize_answer("3") == "three"
    assert normalize_answer("Yes\nbecause") == "yes"
    qs = make_closed_questions([], seed=0)
    assert score_closed(qs, []).n == 0
    from vistune.eval.world import ClosedQuestion

    qs = [ClosedQuestion(1, "a.png", "color", "What color is the star?", "red", "The star is red.")] * 2
    scores = score_closed(qs, ["Red.", "blue"])
    assert (
        scores.accuracy["color"] == 0.5 and scores.overall == 0.5 and scores.majority_baseline["color"] == 1.0
    )
    with pytest.raises(ValueError):
        score_closed(qs, ["red"])


def test_descriptions_precision_recall(truths):
    t = truths[0]
    first = t.objects[0]
    text = f"There is a large {first.color} {first.shape} and a purple {'cross' if first.shape != 'cross' else 'heart'}."
    wrong = ("purple", "cross" if first.shape != "cross" else "heart") not in {
        (o.color, o.shape) for o in t.objects
    }
    scores = score_descriptions([t], [text])
    assert scores.recall == pytest.approx(1 / len(t.objects))
    assert scores.precision == (0.5 if wrong else 1.0)
    assert mentioned_objects("two red stars and a blue circle") == {("red", "star"), ("blue", "circle")}


def test_question_records_are_llava_format(truths):
    recs = question_records(make_closed_questions(truths[:2], seed=0))
    assert recs[0]["conversations"][0]["value"].startswith("<image>\n")
    assert recs[0]["conversations"][1]["from"] == "gpt"
    assert len({r["id"] for r in recs}) == len(recs)
    after = question_records(make_closed_questions(truths[:2], seed=0), placement="after")
    question = recs[0]["conversations"][0]["value"].removeprefix("<image>\n")
    assert (
        after[0]["conversations"][0]["value"] == question + "\n<image>"
    )  # the instruction too, then the image


def test_sentence_replies_name_the_answer_and_extraction_is_strict(truths):
    from vistune.eval.world import extract_answer

    qs = make_closed_questions(truths, seed=2)
    assert {q.qtype for q in qs} == set(QUESTION_TYPES)
    for q in qs:  # every generated reply yields exactly its short answer
        assert extract_answer(q.qtype, q.reply) == q.answer, (q.qtype, q.reply, q.answer)
        turns = q.conversation(with_answer=True, style="sentence")
        assert "Answer with" not in turns[0]["value"] and turns[1]["value"] == q.reply
    assert extract_answer("color", "The star is red.") == "red"
    assert extract_answer("color", "The star is red or blue.") == ""  # two different colors: wrong
    assert extract_answer("color", "It is a star.") == ""  # none
    assert extract_answer("shape", "It is a red stars.") == "star"
    assert extract_answer("count", "There are 3 stars.") == "three"
    assert extract_answer("position", "The red star is in the top left corner.") == "top left"
    assert extract_answer("position", "The red star is at the top.") == "top"
    assert extract_answer("position", "It is at the top, or on the left.") == ""
    assert extract_answer("existence", "No, there is no green heart.") == "no"
    assert extract_answer("existence", "There is a green heart.") == ""
    q = qs[0]
    scores = score_closed([q, q], [q.reply, "I cannot tell."], style="sentence")
    assert scores.overall == 0.5
    with pytest.raises(ValueError, match="answer style"):
        score_closed([q], [q.reply], style="long")
    recs = question_records([q], style="sentence")
    assert recs[0]["conversations"][1]["value"] == q.reply
