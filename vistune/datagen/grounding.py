"""Grounding check: does a reply talk about things the image's captions and boxes do not contain?

Two kinds of problems are found, per sentence (a mention with a negation among the four words before it, "there
is no dog", "not a red circle", is skipped: mentioning an absent object to deny it is correct):

- an object category from the dataset's vocabulary that is neither among the image's boxes nor in its captions
  (or, with attributes as in the world, a "color shape" pair that is not in the image: "a red circle" when the
  circle is blue);
- a count that contradicts the boxes: "three dogs" when the boxes show two dogs, or, for the world,
  "five shapes" when there are four.

It is a heuristic (synonyms such as "man" for "person" are not checked), so it flags rather than judges; the
pipeline drops or keeps flagged replies (`--grounding drop|flag|off`) and reports counts per flavor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from vistune.datagen.annotations import Box, ImageAnnotations
from vistune.world.vocab import NUMBER_WORDS

_NUMBERS = {w: k for k, w in enumerate(NUMBER_WORDS)} | {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "a single": 1,
    "only one": 1,
    "just one": 1,
}
_IRREGULAR = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis"}
_NEGATIONS = {
    "no",
    "not",
    "none",
    "never",
    "neither",
    "nor",
    "without",
    "isn't",
    "aren't",
    "doesn't",
    "don't",
    "cannot",
}
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# A count in a sentence about part of the image ("two circles on the left", "three would remain") is not a claim
# about the whole image, so counts are only checked in sentences without these words.
_SUBSET = re.compile(
    r"\b(left|right|top|bottom|center|middle|column|row|corner|above|below|near|next|if|would|remain|remaining|"
    r"after|except|besides|other|others|more|fewer|than|each|both|of them|of the)\b",
    re.I,
)
WORLD_TOTAL_NOUNS: tuple[str, ...] = ("shapes", "objects", "figures")


def plural_of(noun: str) -> str:
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    last = noun.split()[-1]
    suffix = "es" if last.endswith(("s", "x", "sh", "ch")) else "s"
    return noun + suffix


def _word_pattern(phrase: str) -> str:
    return r"\b" + r"\s+".join(re.escape(w) for w in phrase.split()) + r"\b"


class GroundingChecker:
    """Checks replies against one image's annotations, using the whole dataset's category vocabulary."""

    def __init__(
        self,
        categories: Iterable[str],
        attribute_values: Iterable[str] = (),
        total_nouns: Iterable[str] = (),
    ) -> None:
        self.categories = sorted(
            {c.lower() for c in categories}, key=len, reverse=True
        )  # "hot dog" before "dog"
        self.attribute_values = sorted({a.lower() for a in attribute_values})
        self.total_nouns = tuple(total_nouns)
        self._mention = {
            c: re.compile(f"(?:{_word_pattern(c)}|{_word_pattern(plural_of(c))})", re.I)
            for c in self.categories
        }
        number = "|".join(sorted((re.escape(n) for n in _NUMBERS), key=len, reverse=True))
        nouns = "|".join(
            [_word_pattern(plural_of(c)) for c in self.categories]
            + [_word_pattern(n) for n in self.total_nouns]
        )
        # "three dogs", "two large red circles", "5 shapes": a number, attribute words (if any), a plural noun.
        mods = "|".join(re.escape(a) for a in self.attribute_values) or "(?!)"
        self._count = re.compile(
            rf"\b(?P<n>{number}|\d+)\s+(?P<mods>(?:(?:{mods})\s+){{0,2}})(?P<noun>{nouns})", re.I
        )

    def check(self, text: str, image: ImageAnnotations) -> list[str]:
        """Problems found in `text` (empty = grounded)."""
        issues: list[str] = []
        for sentence in _SENTENCE.split(text):
            if not sentence.strip():
                continue
            issues += self._absent_mentions(sentence, image)
            if image.boxes and not _SUBSET.search(sentence):
                issues += self._count_mismatches(sentence, image)
        return list(dict.fromkeys(issues))

    def _absent_mentions(self, sentence: str, image: ImageAnnotations) -> list[str]:
        present = {b.category.lower() for b in image.boxes}
        captions = " ".join(image.captions).lower()
        issues = []
        for category, pattern in self._mention.items():
            if category in present or not _affirmed(pattern, sentence):
                continue
            if re.search(self._mention[category].pattern, captions):
                continue
            issues.append(f"mentions '{category}', which is not in the captions or boxes")
        for value in self.attribute_values:
            for category in present:
                phrase = f"{value} {category}"
                pattern = re.compile(f"(?:{_word_pattern(phrase)}|{_word_pattern(plural_of(phrase))})", re.I)
                if not _affirmed(pattern, sentence):
                    continue
                if not any(b.category.lower() == category and value in _attrs(b) for b in image.boxes):
                    issues.append(f"mentions '{phrase}', but no {category} in the boxes is {value}")
        return issues

    def _count_mismatches(self, sentence: str, image: ImageAnnotations) -> list[str]:
        issues = []
        for match in self._count.finditer(sentence):
            if _negated(sentence, match.start()):
                continue
            said = _NUMBERS.get(match["n"].lower())
            said = int(match["n"]) if said is None else said
            noun = " ".join(match["noun"].lower().split())
            mods = [m for m in match["mods"].lower().split() if m in self.attribute_values]
            if noun in self.total_nouns:  # "five shapes", "two red shapes"
                actual = sum(all(m in _attrs(b) for m in mods) for b in image.boxes)
            else:
                category = next(c for c in self.categories if plural_of(c) == noun)
                actual = sum(
                    b.category.lower() == category and all(m in _attrs(b) for m in mods) for b in image.boxes
                )
            if said != actual:
                issues.append(f"says '{match.group(0)}', but the boxes show {actual}")
        return issues


def _negated(sentence: str, start: int) -> bool:
    """Is there a negation among the four words before position `start`?"""
    before = re.findall(r"[a-z']+", sentence[:start].lower())[-4:]
    return any(word in _NEGATIONS for word in before)


def _affirmed(pattern: re.Pattern[str], sentence: str) -> bool:
    """Does `pattern` occur in `sentence` at least once without a negation just before it?"""
    return any(not _negated(sentence, m.start()) for m in pattern.finditer(sentence))


def _attrs(box: Box) -> set[str]:
    return {v.lower() for v in box.attributes.values()}
