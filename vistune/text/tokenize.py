"""ONE record -> input_ids + labels function for every template, and prompt encoding for inference.

`<image>` expansion happens here, as LLaVA's `tokenizer_image_token` does it: the text is split on the literal
`<image>`, each text chunk is tokenized on its own, and `num_image_tokens` copies of `image_token_id` (default -200,
outside any vocabulary) go where each `<image>` was. BOS is added at the start iff the tokenizer adds one by itself
(Llama-style tokenizers do; GPT-2/SmolLM2-style ones don't) and the text does not already start with it.

Labels: a token is supervised (label = its id) iff its character span overlaps a span the template marks as
supervised (assistant replies + their end-of-turn markers); everything else, image tokens included, is -100.
Labels are aligned with input_ids (not shifted); the model shifts them.
"""

from __future__ import annotations

import bisect
import contextlib
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from vistune.errors import AllMaskedError, VistuneError
from vistune.text.templates import (
    IMAGE_PLACEHOLDER,
    Message,
    Template,
    get_template,
    render,
    to_messages,
)

IGNORE_INDEX = -100
DEFAULT_IMAGE_TOKEN_ID = -200  # LLaVA's IMAGE_TOKEN_INDEX


@dataclass(frozen=True)
class Tokenized:
    """One tokenized record. `num_images` counts the images whose tokens survive (truncation may drop trailing
    images whole, never half an image): pass only the record's first `num_images` images to the model."""

    input_ids: list[int]
    labels: list[int]
    num_images: int
    truncated: bool


@dataclass(frozen=True)
class Encoding:
    """A rendered, tokenized conversation with what is needed to show it (`vistune data preview`).

    token_spans[i]: the [start, end) characters of `text` that token i stands for (image tokens: the `<image>`).
    image_regions: [start, end) token index ranges of each image's tokens, in order of appearance.
    """

    text: str
    input_ids: list[int]
    labels: list[int]
    token_spans: list[tuple[int, int]]
    image_regions: list[tuple[int, int]]


# tokenizer -> (its bos_token_id when asked, whether it adds BOS): `encode_text` asks once per record, and the
# answer costs two tokenizer calls (29% of the demo's records' tokenizing time, profiled).
_ADDS_BOS: weakref.WeakKeyDictionary[Any, tuple[int | None, bool]] = weakref.WeakKeyDictionary()


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer prepends BOS by itself when encoding text (Llama: yes; GPT-2, SmolLM2: no)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    try:
        cached = _ADDS_BOS.get(tokenizer)
    except TypeError:  # not weak-referenceable or not hashable: ask every time
        cached = None
    if cached is not None and cached[0] == bos:
        return cached[1]
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    answer = (
        bool(with_special)
        and with_special[0] == bos
        and tokenizer("a", add_special_tokens=False)["input_ids"][:1] != [bos]
    )
    with contextlib.suppress(TypeError):
        _ADDS_BOS[tokenizer] = (bos, answer)
    return answer


def encode_text(
    text: str, tokenizer: Any, *, num_image_tokens: int, image_token_id: int = DEFAULT_IMAGE_TOKEN_ID
) -> tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]]:
    """Tokenize `text`, expanding each `<image>` -> (input_ids, token character spans, image token regions)."""
    _check_tokenizer(tokenizer)
    if num_image_tokens < 1:
        raise VistuneError(f"num_image_tokens must be >= 1, got {num_image_tokens}")
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    regions: list[tuple[int, int]] = []
    if adds_bos(tokenizer) and not text.startswith(tokenizer.bos_token):
        ids.append(tokenizer.bos_token_id)
        spans.append((0, 0))
    start = 0
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i > 0:  # an <image> precedes this chunk
            image_span = (start - len(IMAGE_PLACEHOLDER), start)
            regions.append((len(ids), len(ids) + num_image_tokens))
            ids.extend([image_token_id] * num_image_tokens)
            spans.extend([image_span] * num_image_tokens)
        if chunk:
            # Chunks are tokenized one by one, as LLaVA's tokenizer_image_token does: a Llama tokenizer then puts
            # its "▁" prefix on the chunk after an image exactly as the official code does.
            encoded = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
            ids.extend(encoded["input_ids"])
            spans.extend((start + a, start + b) for a, b in encoded["offset_mapping"])
        start += len(chunk) + len(IMAGE_PLACEHOLDER)
    return ids, spans, regions


def encode_prompt(
    text: str, tokenizer: Any, *, num_image_tokens: int, image_token_id: int = DEFAULT_IMAGE_TOKEN_ID
) -> list[int]:
    """input_ids of an inference prompt (from `build_prompt`), each `<image>` expanded to its image tokens."""
    ids, _, _ = encode_text(text, tokenizer, num_image_tokens=num_image_tokens, image_token_id=image_token_id)
    return ids


def encode_conversation(
    conversations: Sequence[Any],
    tokenizer: Any,
    template: str | Template,
    *,
    num_image_tokens: int,
    image_token_id: int = DEFAULT_IMAGE_TOKEN_ID,
    record_id: str | None = None,
) -> Encoding:
    """Render + tokenize + label a conversation (no truncation, no all-masked check): what preview shows."""
    where = _where(record_id)
    messages = to_messages(conversations, where=where)
    if not any(m.role == "assistant" for m in messages):
        raise AllMaskedError(
            f"{where}: has no gpt turn, so nothing would be trained on; add a reply or drop it"
        )
    rendered = render(get_template(template), messages, tokenizer)
    ids, spans, regions = encode_text(
        rendered.text, tokenizer, num_image_tokens=num_image_tokens, image_token_id=image_token_id
    )
    supervised = _supervised_tokens(spans, rendered.supervised)
    labels = [tok if sup else IGNORE_INDEX for tok, sup in zip(ids, supervised, strict=True)]
    for a, b in regions:  # an image is never a target, even if a template placed it inside a reply
        labels[a:b] = [IGNORE_INDEX] * (b - a)
    return Encoding(rendered.text, ids, labels, spans, regions)


def tokenize_conversation(
    conversations: Sequence[Any],
    tokenizer: Any,
    template: str | Template,
    *,
    num_image_tokens: int,
    image_token_id: int = DEFAULT_IMAGE_TOKEN_ID,
    max_length: int | None = None,
    record_id: str | None = None,
) -> Tokenized:
    """A LLaVA conversation -> input_ids and labels (-100 everywhere except the assistant replies + end markers).

    conversations: [{"from": "human"|"gpt", "value": ...}] (or role/content; an optional leading system turn
        overrides the template's system message). `<image>` stays where the record puts it.
    max_length: truncate to at most this many tokens; an image's tokens are dropped whole, never cut in half
        (so `num_images` may be smaller than the record's image count; `truncated` says it happened).
    Raises `AllMaskedError` (naming `record_id`) if no supervised token survives; `tokenize_records` turns that
    into skip-and-count.
    """
    enc = encode_conversation(
        conversations,
        tokenizer,
        template,
        num_image_tokens=num_image_tokens,
        image_token_id=image_token_id,
        record_id=record_id,
    )
    ids, labels, num_images, truncated = truncate_encoding(enc, max_length)
    if all(label == IGNORE_INDEX for label in labels):
        reason = (
            f"truncation to max_length={max_length} removed every assistant reply; raise max_length or shorten it"
            if truncated
            else "no assistant token is supervised; check the gpt turns are non-empty"
        )
        raise AllMaskedError(f"{_where(record_id)}: all labels are masked ({reason})")
    return Tokenized(ids, labels, num_images, truncated)


class _HasConversation(Protocol):
    id: str
    conversations: Sequence[Any]


@dataclass
class TokenizeReport:
    """What `tokenize_records` produced: the kept (record, Tokenized) pairs and what it skipped or truncated."""

    items: list[tuple[Any, Tokenized]] = field(default_factory=list)
    skipped: int = 0
    truncated: int = 0
    skipped_ids: list[str] = field(default_factory=list)


def tokenize_records(
    records: Iterable[_HasConversation],
    tokenizer: Any,
    template: str | Template,
    *,
    num_image_tokens: int,
    image_token_id: int = DEFAULT_IMAGE_TOKEN_ID,
    max_length: int | None = None,
    on_all_masked: Literal["raise", "skip"] = "skip",
) -> TokenizeReport:
    """Tokenize many records (anything with `.id` and `.conversations`, e.g. `vistune.data.records.Record`).

    Records whose labels are all masked are never silently trained on: with on_all_masked="skip" they are left out
    and counted (`skipped`, `skipped_ids`); with "raise" the first one raises `AllMaskedError`.
    """
    template = get_template(template)
    report = TokenizeReport()
    for record in records:
        try:
            tokenized = tokenize_conversation(
                record.conversations,
                tokenizer,
                template,
                num_image_tokens=num_image_tokens,
                image_token_id=image_token_id,
                max_length=max_length,
                record_id=str(record.id),
            )
        except AllMaskedError:
            if on_all_masked == "raise":
                raise
            report.skipped += 1
            report.skipped_ids.append(str(record.id))
            continue
        report.truncated += tokenized.truncated
        report.items.append((record, tokenized))
    return report


# --------------------------------------------------------------------------------------------------- internals


def _where(record_id: str | None) -> str:
    return f"record {record_id}" if record_id is not None else "conversation"


def _check_tokenizer(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise VistuneError(
            f"{type(tokenizer).__name__} is a slow (Python) tokenizer; vistune needs a fast tokenizer "
            "(character offsets locate the assistant replies): load it with AutoTokenizer.from_pretrained(..., "
            "use_fast=True) or convert it with `tokenizers`"
        )


def _supervised_tokens(
    token_spans: Sequence[tuple[int, int]], supervised: Sequence[tuple[int, int]]
) -> list[bool]:
    """Token i is supervised iff its character span [a, b) overlaps a supervised span [s, e).

    Supervised spans are sorted and disjoint, so the only candidate is the first span ending after `a` (found by
    bisection). A zero-width token (e.g. BOS) counts as inside a span that contains its position.
    """
    ends = [e for _, e in supervised]
    flags: list[bool] = []
    for a, b in token_spans:
        j = bisect.bisect_right(ends, a)  # first span with e > a
        flags.append(j < len(supervised) and (supervised[j][0] < b if a < b else supervised[j][0] <= a))
    return flags


def truncate_encoding(enc: Encoding, max_length: int | None) -> tuple[list[int], list[int], int, bool]:
    """Cut to max_length tokens; if the cut falls inside an image's tokens, cut before that image instead.

    Returns (input_ids, labels, number of images whose tokens survive, whether anything was cut).
    """
    n = len(enc.input_ids)
    if max_length is None or n <= max_length:
        return enc.input_ids, enc.labels, len(enc.image_regions), False
    if max_length < 1:
        raise VistuneError(f"max_length must be >= 1, got {max_length}")
    cut = max_length
    for a, b in enc.image_regions:
        if a < cut < b:
            cut = a
    kept_images = sum(1 for _, b in enc.image_regions if b <= cut)
    return enc.input_ids[:cut], enc.labels[:cut], kept_images, True


__all__ = [
    "DEFAULT_IMAGE_TOKEN_ID",
    "IGNORE_INDEX",
    "Encoding",
    "Message",
    "TokenizeReport",
    "Tokenized",
    "adds_bos",
    "encode_conversation",
    "encode_prompt",
    "encode_text",
    "tokenize_conversation",
    "tokenize_records",
    "truncate_encoding",
]
