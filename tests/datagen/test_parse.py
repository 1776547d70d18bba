"""Reply parsing and validation: lenient about form, strict about content."""

from __future__ import annotations

import numpy as np
import pytest

from vistune.datagen.annotations import ImageAnnotations
from vistune.datagen.parse import RejectedReply, make_record, parse_reply


@pytest.mark.parametrize(
    "text",
    [
        "Question: What is it?\nAnswer: A cat.\nQuestion: What color?\nAnswer: Gray.",
        "Sure! Here is a conversation:\n\n**Question 1:** What is it?\n**Answer 1:** A cat.\n===\n"
        "**Question 2:** What color?\n**Answer 2:** Gray.",
        "1. Q: What is it?\n   A: A cat.\n2. Q: What color?\n   A: Gray.",
        "User: What is it?\nAssistant: A cat.\nUser: What color?\nAssistant: Gray.\nUser: And the size?",
        '```json\n[{"from": "human", "value": "What is it?"}, {"from": "gpt", "value": "A cat."},'
        ' {"from": "human", "value": "What color?"}, {"from": "gpt", "value": "Gray."}]\n```',
        '[{"question": "What is it?", "answer": "A cat."}, {"question": "What color?", "answer": "Gray."}]',
    ],
)
def test_conversation_formats_parse_to_the_same_pairs(text):
    assert parse_reply("conversation", text) == [("What is it?", "A cat."), ("What color?", "Gray.")]


def test_multiline_answers_are_kept():
    pairs = parse_reply("conversation", "Question: Why?\nAnswer: First line.\nSecond line.")
    assert pairs == [("Why?", "First line.\nSecond line.")]


@pytest.mark.parametrize(
    ("flavor", "text", "reason"),
    [
        ("conversation", "", "empty reply"),
        ("conversation", "Just some prose without any markers.", "no 'Question:'"),
        ("conversation", "Answer: A cat.\nQuestion: What?\nAnswer: B.", "start with a question"),
        ("conversation", "Question: A?\nQuestion: B?\nAnswer: C.", "alternate"),
        ("conversation", "Question: What?\nAnswer:", "empty answer"),
        ("conversation", "Question: What?", "no complete"),
        ("conversation", "Question: What?\nAnswer: The bounding box shows a cat.", "hidden context"),
        (
            "complex_reasoning",
            "Question: Why?\nAnswer: According to the captions, it rains.",
            "hidden context",
        ),
        ("detail", "A cat.", "too short"),
        ("detail", "Question: What is it?\nAnswer: a cat sitting on a sofa near a lamp", "question/answer"),
        ("conversation", '[{"from": "robot", "value": "hi"}]', "unknown role"),
    ],
)
def test_bad_replies_are_rejected_with_a_reason(flavor, text, reason):
    with pytest.raises(RejectedReply, match=reason):
        parse_reply(flavor, text, instruction="Describe it.")


def test_detail_strips_label_and_uses_the_instruction():
    pairs = parse_reply(
        "detail", "**Description:** A gray cat sleeps on a sofa next to a laptop.", instruction="Describe."
    )
    assert pairs == [("Describe.", "A gray cat sleeps on a sofa next to a laptop.")]


def test_complex_reasoning_keeps_only_the_first_pair():
    pairs = parse_reply("complex_reasoning", "Question: Why?\nAnswer: Because.\nQuestion: And?\nAnswer: So.")
    assert pairs == [("Why?", "Because.")]


def test_record_places_one_image_token_in_the_first_human_turn_both_ways():
    image = ImageAnnotations(7, "7.png", 10, 10)
    placements = set()
    for seed in range(20):
        record = make_record(
            image, "conversation", [("Q1?", "A1."), ("Q2?", "A2.")], np.random.default_rng(seed)
        )
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt", "human", "gpt"]
        assert sum(t["value"].count("<image>") for t in turns) == 1
        placements.add(turns[0]["value"].startswith("<image>"))
        assert record["id"] == "7_conversation" and record["image"] == "7.png"
    assert placements == {True, False}


def test_teacher_image_tokens_are_removed():
    pairs = parse_reply("conversation", "Question: <image> What?\nAnswer: A <image> cat.")
    assert "<image>" not in "".join(q + a for q, a in pairs)
