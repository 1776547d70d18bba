"""Turning a teacher's free-text reply into validated question/answer turns, and turns into a LLaVA record.

Real teachers are messy (preambles, markdown, numbering, JSON, a last question cut off by the token limit), so
parsing is lenient about form and strict about content: turns are non-empty and alternate, starting with a
question; a reply that talks about "captions" or "bounding boxes" (the hidden context) is rejected.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from vistune.datagen.annotations import ImageAnnotations

IMAGE_TOKEN = "<image>"


class RejectedReply(Exception):
    """A reply that cannot become training data; `reason` says why (it goes to the rejects file)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_Q_WORDS = "question|q|user|human"
_A_WORDS = "answer|a|assistant|gpt"
# A role marker at the start of a line, tolerating markdown and numbering: "**Question 2:**", "1. Q:", "### A:".
_MARKER = re.compile(
    rf"^[\s>#*_\-\d.)]*(?P<role>{_Q_WORDS}|{_A_WORDS})\s*\d*\s*[*_]*\s*[:：]\s*[*_]*\s*", re.IGNORECASE
)
# Leaking the hidden context makes an example worthless: the trained model would talk about captions it never saw.
_LEAK = re.compile(
    r"\b(bounding box(es)?|coordinates?|the (given |provided )?(captions?|descriptions?|sentences))\b",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```\s*$")


def parse_reply(flavor: str, text: str, *, instruction: str | None = None) -> list[tuple[str, str]]:
    """(question, answer) pairs for a flavor. `detail` needs `instruction` (its question); raises RejectedReply."""
    text = text.replace(IMAGE_TOKEN, "").strip()
    if not text:
        raise RejectedReply("empty reply")
    if flavor == "detail":
        pairs = [(instruction or "Describe this image in detail.", _parse_description(text))]
    else:
        pairs = _parse_json_turns(text) or _parse_marked_turns(text)
        if flavor == "complex_reasoning":
            pairs = pairs[:1]  # one reasoning question per image; a teacher that goes on is cut, not rejected
    for question, answer in pairs:
        if _LEAK.search(question) or _LEAK.search(answer):
            raise RejectedReply("mentions the hidden context (captions, descriptions, boxes or coordinates)")
    return pairs


def _parse_description(text: str) -> str:
    text = re.sub(
        r"^\s*[*_#]*\s*(detailed )?description\s*[*_]*\s*:\s*[*_]*\s*", "", text, flags=re.IGNORECASE
    ).strip()
    if len(text.split()) < 8:
        raise RejectedReply(f"description too short ({len(text.split())} words)")
    if _MARKER.search(text.splitlines()[0]):
        raise RejectedReply("a description was asked for, but the reply is a question/answer list")
    return text


def _parse_marked_turns(text: str) -> list[tuple[str, str]]:
    turns: list[list[str]] = []  # [role, text]
    for line in text.splitlines():
        stripped = line.strip()
        if re.fullmatch(r"[=\-*_#]{3,}", stripped):  # separators such as "===" or "---"
            continue
        match = _MARKER.match(line)
        if match:
            role = "q" if re.fullmatch(_Q_WORDS, match["role"], re.IGNORECASE) else "a"
            turns.append([role, line[match.end() :].strip()])
        elif turns:
            turns[-1][1] = (turns[-1][1] + "\n" + stripped).strip()
        # text before the first marker is a preamble ("Sure! Here is a conversation:") and is dropped
    if not turns:
        raise RejectedReply("no 'Question:' / 'Answer:' turns found")
    return _pairs([(role, body) for role, body in turns])


def _pairs(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if turns[-1][0] == "q":  # a final question without its answer: the token limit cut it; keep the rest
        turns = turns[:-1]
    if not turns:
        raise RejectedReply("no complete question/answer pair")
    if turns[0][0] != "q":
        raise RejectedReply("the conversation must start with a question")
    pairs = []
    for k in range(0, len(turns), 2):
        if k + 1 >= len(turns) or turns[k][0] != "q" or turns[k + 1][0] != "a":
            raise RejectedReply(f"turns do not alternate question/answer (at turn {k + 1})")
        question, answer = turns[k][1].strip(), turns[k + 1][1].strip()
        if not question or not answer:
            raise RejectedReply(f"empty {'question' if not question else 'answer'} at turn {k + 1}")
        pairs.append((question, answer))
    return pairs


def _parse_json_turns(text: str) -> list[tuple[str, str]] | None:
    """Turns from a JSON reply (list of {from, value} / {role, content} / {question, answer}); None if not JSON."""
    body = _FENCE.sub("", text.strip())
    if not body.startswith(("[", "{")):
        return None
    try:
        data: Any = json.loads(body)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict):
        data = data.get("conversations") or data.get("conversation") or [data]
    if not isinstance(data, list):
        return None
    turns: list[tuple[str, str]] = []
    for item in data:
        if not isinstance(item, dict):
            raise RejectedReply("JSON reply: every turn must be an object")
        if "question" in item and "answer" in item:
            turns += [("q", str(item["question"])), ("a", str(item["answer"]))]
            continue
        role = str(item.get("from", item.get("role", ""))).lower()
        value = str(item.get("value", item.get("content", "")))
        if role in ("human", "user"):
            turns.append(("q", value))
        elif role in ("gpt", "assistant"):
            turns.append(("a", value))
        else:
            raise RejectedReply(f"JSON reply: unknown role {role!r}")
    if not turns:
        raise RejectedReply("JSON reply has no turns")
    return _pairs(turns)


def make_record(
    image: ImageAnnotations, flavor: str, pairs: list[tuple[str, str]], rng: np.random.Generator
) -> dict[str, Any]:
    """A LLaVA-Instruct record; `<image>` goes before or after the first question (50/50, from `rng`)."""
    conversations = []
    for k, (question, answer) in enumerate(pairs):
        if k == 0:
            question = f"{IMAGE_TOKEN}\n{question}" if rng.random() < 0.5 else f"{question}\n{IMAGE_TOKEN}"
        conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": f"{image.image_id}_{flavor}", "image": image.file_name, "conversations": conversations}
