"""The rule-based world teacher: exact, varied, grounded, deterministic."""

from __future__ import annotations

import asyncio
import re

import numpy as np

from vistune.datagen.annotations import load_annotations
from vistune.datagen.grounding import WORLD_TOTAL_NOUNS, GroundingChecker
from vistune.datagen.parse import parse_reply
from vistune.datagen.teachers.base import TeacherRequest
from vistune.datagen.teachers.world_teacher import WorldTeacher, conversation, render_reply
from vistune.world import build_world, load_ground_truth
from vistune.world.vocab import NUMBER_WORDS


def test_replies_parse_are_grounded_and_exact(tmp_path):
    paths = build_world(tmp_path, {"train": 40}, seed=5, size=32)
    annotations = load_annotations(paths.captions("train"), paths.instances("train"))
    truth = load_ground_truth(paths.ground_truth("train"))
    checker = GroundingChecker(annotations.categories, annotations.attribute_values(), WORLD_TOTAL_NOUNS)
    questions = set()
    for image in annotations.images:
        t = truth[image.image_id]
        for flavor in ("conversation", "detail", "complex_reasoning"):
            rng = np.random.default_rng([image.image_id, len(flavor)])
            pairs = parse_reply(flavor, render_reply(flavor, t, rng), instruction="Describe.")
            assert checker.check("\n".join(a for _, a in pairs), image) == [], (flavor, pairs)
            questions.update(q for q, _ in pairs)
        for q, a in conversation(t, np.random.default_rng(image.image_id)):
            if q.startswith("How many") or q == "Count the shapes.":
                said = re.search(r"(one|two|three|four|five|six) shape", a).group(1)
                assert NUMBER_WORDS.index(said) == len(t.objects)
    assert len(questions) > 40  # varied phrasing and content


def test_same_request_same_reply_other_attempt_differs(world_files):
    teacher = WorldTeacher(world_files["ground_truth"], seed=0)
    image = load_annotations(world_files["captions"], world_files["instances"]).images[0]

    def reply(attempt):
        request = TeacherRequest("k", "conversation", [{"role": "user", "content": "x"}], image, attempt)
        return asyncio.run(teacher.complete(request)).text

    assert reply(0) == reply(0)
    assert len({reply(a) for a in range(6)}) > 1
