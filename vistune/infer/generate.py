"""Answer generation: prompt building, sampling settings, stop strings and streaming on top of `VistuneModel`.

The model's `generate` splices the image tokens and hands over to the language model's Hugging Face `generate`
(KV cache, greedy / temperature / top-p / top-k, EOS). This module adds what a chat needs around it: the template's
prompt, stop strings that are cut from the answer (and never streamed), and text streaming as tokens arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image
from transformers.generation.streamers import BaseStreamer

from vistune.errors import VistuneError
from vistune.text.templates import Template, build_prompt
from vistune.text.tokenize import encode_prompt

Conversation = list[dict[str, str]]  # LLaVA format: [{"from": "human"|"gpt", "value": str}, ...]


@dataclass
class GenerationConfig:
    """Sampling settings. temperature 0 means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # extra stop strings, on top of the template's

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise VistuneError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise VistuneError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise VistuneError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise VistuneError(f"top_k must be >= 0, got {self.top_k}")

    def hf_kwargs(self) -> dict:
        """Keyword arguments for Hugging Face `generate`."""
        if self.temperature == 0:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
        }


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut `text` at the first stop string; return (text, whether a stop string was found)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string (so must not be shown yet)."""
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                hold = max(hold, n)
                break
    return hold


class StopAwareStreamer(BaseStreamer):
    """Streams decoded text to `on_text` as tokens arrive, never emitting (a part of) a stop string.

    Decoding the whole answer at each step keeps multi-byte characters and tokenizer spacing right; answers are
    short, so the quadratic cost is negligible next to a forward pass.
    """

    def __init__(self, tokenizer, stops: Sequence[str], on_text: Callable[[str], None] | None) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.on_text = on_text
        self.ids: list[int] = []
        self.shown = 0
        self.stopped = False
        self._skip_prompt = True  # HF generate first "puts" the prompt

    def put(self, value: torch.Tensor) -> None:
        if self._skip_prompt:
            self._skip_prompt = False
            return
        if self.stopped:
            return
        self.ids.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        text, self.stopped = cut_at_stop(text, self.stops)
        visible = len(text) if self.stopped else len(text) - _held_back(text, self.stops)
        # A trailing U+FFFD may be a multi-byte character whose remaining bytes are still to come.
        while visible > self.shown and not self.stopped and text[visible - 1] == "\ufffd":
            visible -= 1
        if visible > self.shown and self.on_text is not None:
            self.on_text(text[self.shown : visible])
        self.shown = max(self.shown, visible)

    def end(self) -> None:
        if self.stopped or self.on_text is None:
            return
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if len(text) > self.shown:
            self.on_text(text[self.shown :])
            self.shown = len(text)


def check_prompt_length(model, num_prompt_tokens: int) -> None:
    """An over-long prompt is a user error: say how long it is and what the model's context holds."""
    context = getattr(model.language_model.config, "max_position_embeddings", None)
    if context is not None and num_prompt_tokens >= context:
        raise VistuneError(
            f"the prompt is {num_prompt_tokens} tokens (each image counts {model.num_image_tokens}) but the model's "
            f"context holds {context}; shorten the question or the history (start a new chat), or use fewer images"
        )


def _stops(template: Template, tokenizer, extra: Sequence[str]) -> list[str]:
    return [*template.stop_strings(tokenizer), *extra]


def generate_reply(
    model,
    tokenizer,
    image_processor,
    template: Template,
    conversation: Conversation,
    images: Sequence[Image.Image] = (),
    config: GenerationConfig | None = None,
    on_text: Callable[[str], None] | None = None,
) -> str:
    """Answer the last human turn of `conversation` (LLaVA format), streaming text to `on_text` if given."""
    config = config or GenerationConfig()
    stops = _stops(template, tokenizer, config.stop)
    streamer = StopAwareStreamer(tokenizer, stops, on_text)
    return _generate(
        model, tokenizer, image_processor, template, [conversation], [images], config, streamer=streamer
    )[0]


def generate_batch(
    model,
    tokenizer,
    image_processor,
    template: Template,
    conversations: Sequence[Conversation],
    images: Sequence[Sequence[Image.Image]],
    config: GenerationConfig | None = None,
) -> list[str]:
    """Answer many conversations at once (left padding, one `generate` call). For evaluation."""
    if len(conversations) != len(images):
        raise VistuneError(
            f"generate_batch: {len(conversations)} conversations but {len(images)} image lists"
        )
    return _generate(
        model, tokenizer, image_processor, template, conversations, images, config or GenerationConfig()
    )


@torch.inference_mode()
def _generate(
    model,
    tokenizer,
    image_processor,
    template: Template,
    conversations: Sequence[Conversation],
    images: Sequence[Sequence[Image.Image]],
    config: GenerationConfig,
    streamer: StopAwareStreamer | None = None,
) -> list[str]:
    """Prompt -> ids per row, left-pad, one `model.generate`, decode and cut at the stop strings."""
    if config.seed is not None:
        torch.manual_seed(config.seed)
    rows = [
        encode_prompt(
            build_prompt(conv, template, tokenizer),
            tokenizer,
            num_image_tokens=model.num_image_tokens,
            image_token_id=model.image_token_id,
        )
        for conv in conversations
    ]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(r) for r in rows)
    check_prompt_length(model, width)
    device = next(model.parameters()).device
    input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)  # left padding
    attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    flat_images = [im for per_row in images for im in per_row]
    pixel_values = image_processor(flat_images).to(device) if flat_images else None
    stops = _stops(template, tokenizer, config.stop)
    new_ids = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        pixel_values=pixel_values,
        stop_strings=stops or None,
        tokenizer=tokenizer,
        streamer=streamer,
        pad_token_id=pad_id,
        **config.hf_kwargs(),
    )
    texts = tokenizer.batch_decode(new_ids.tolist(), skip_special_tokens=True)
    return [cut_at_stop(t, stops)[0].strip() for t in texts]
