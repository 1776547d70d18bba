"""Conversation templates as data: each renders a conversation to text plus the character spans to supervise.

A template is a frozen `Template` in the `TEMPLATES` registry. Rendering returns the prompt string AND the
character spans of every assistant reply together with its end-of-turn marker; `vistune.text.tokenize` then labels
a token iff its character span overlaps a supervised span. One masking path for every template, no per-template
preprocess functions.

The LLaVA templates reproduce the prompt strings of LLaVA's `llava/conversation.py` (`Conversation.get_prompt`)
exactly, so checkpoints trained with LLaVA's templates work unchanged (Q/A = user/assistant turns, SYS = system):

    v0         conv_llava_v0 (SINGLE, sep "###"):  SYS###Human: Q###Assistant: A###
    vicuna_v1  conv_vicuna_v1 (TWO, " ", "</s>"):  SYS USER: Q ASSISTANT: A</s>
    llama_2    conv_llava_llama_2 (LLAMA_2):       [INST] <<SYS>>\\nSYS\\n<</SYS>>\\n\\nQ [/INST] A </s><s>[INST] Q2 [/INST] ...
    chatml     conv_chatml_direct (MPT):           <|im_start|>system\\nSYS<|im_end|><|im_start|>user\\nQ<|im_end|>
                                                   <|im_start|>assistant\\nA<|im_end|>
    plain      conv_llava_plain (PLAIN, stage 1):  <image>A\\n      (the user turn is reduced to its <image> tokens)
    hf         the tokenizer's own `chat_template`

`{bos}` / `{eos}` in a format are filled with the tokenizer's BOS / EOS strings, so "</s>" becomes "<|im_end|>"
for a SmolLM2-style tokenizer. The supervised span of a reply starts right after the generation prompt (so the
space in v0's "Assistant: A" is supervised: at inference the prompt ends "Assistant:" and the model must produce
" A###"). Where the official code is inconsistent we follow `conversation.py` (what inference uses): LLaVA's
`train.py` trains v0 through a legacy "### Human: ...\\n" format that `get_prompt` never produces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from vistune.errors import VistuneError

IMAGE_PLACEHOLDER = "<image>"

Role = Literal["system", "user", "assistant"]
# LLaVA records say "human"/"gpt"; OpenAI-style messages say "user"/"assistant". Both are accepted.
_ROLE_ALIASES: dict[str, Role] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


@dataclass(frozen=True)
class Message:
    """One turn of a conversation, roles normalized to system / user / assistant."""

    role: Role
    content: str


@dataclass(frozen=True)
class Rendered:
    """A conversation rendered to text; `supervised` holds [start, end) character spans of what is trained on."""

    text: str
    supervised: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Template:
    """A conversation template, as data.

    Formats use the placeholders {content}, {system}, {bos}, {eos}. A conversation renders as
        system_format, then per turn pair: user_format (first_user_format for the first user turn),
        assistant_prefix, assistant_format
    and only the rendered `assistant_format` (the reply plus its end-of-turn marker) is supervised. The generation
    prompt for inference ends with `assistant_prefix`. `kind="hf"` ignores the formats and renders with the
    tokenizer's own chat template.
    """

    name: str
    description: str
    kind: Literal["format", "hf"] = "format"
    system: str = ""
    system_format: str = ""
    first_user_format: str | None = None
    user_format: str = "{content}"
    assistant_prefix: str = ""
    assistant_format: str = "{content}"
    stop: tuple[str, ...] = ()
    user_images_only: bool = False  # `plain`: the user turn is reduced to its <image> placeholders

    def stop_strings(self, tokenizer: Any) -> list[str]:
        """Strings that end the assistant's turn at generation time (EOS included for every template)."""
        if self.kind == "hf":
            marker = _hf_turn_end_marker(tokenizer)
            stops = [marker] if marker else []
        else:
            stops = [_fill(s, tokenizer=tokenizer, template=self) for s in self.stop]
        if tokenizer.eos_token and tokenizer.eos_token not in stops:
            stops.append(tokenizer.eos_token)
        return stops


_LLAVA_V0_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
_VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_LLAVA_LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. "
    "You are able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
)

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            name="plain",
            description="stage-1 alignment (LLaVA conv_llava_plain): <image>caption\\n, the caption is supervised",
            user_images_only=True,
            assistant_format="{content}\n",
            stop=("\n",),
        ),
        Template(
            name="v0",
            description="LLaVA v0 / the paper's Fig. 3 (conv_llava_v0): SYS###Human: Q###Assistant: A###",
            system=_LLAVA_V0_SYSTEM,
            system_format="{system}###",
            user_format="Human: {content}###",
            assistant_prefix="Assistant:",
            assistant_format=" {content}###",
            stop=("###",),
        ),
        Template(
            name="vicuna_v1",
            description="LLaVA-1.5 / Vicuna v1 (conv_vicuna_v1): SYS USER: Q ASSISTANT: A</s>",
            system=_VICUNA_V1_SYSTEM,
            system_format="{system} ",
            user_format="USER: {content} ",
            assistant_prefix="ASSISTANT:",
            assistant_format=" {content}{eos}",
            stop=("{eos}",),
        ),
        Template(
            name="llama_2",
            description="LLaVA Llama-2 chat (conv_llava_llama_2): [INST] <<SYS>>...<</SYS>> Q [/INST] A </s>",
            system=_LLAVA_LLAMA_2_SYSTEM,
            first_user_format="[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{content} [/INST]",
            user_format="{bos}[INST] {content} [/INST]",
            assistant_format=" {content} {eos}",
            stop=("{eos}",),
        ),
        Template(
            name="chatml",
            description="ChatML (LLaVA conv_chatml_direct): <|im_start|>user\\nQ<|im_end|><|im_start|>assistant\\nA<|im_end|>",
            system="Answer the questions.",
            system_format="<|im_start|>system\n{system}<|im_end|>",
            user_format="<|im_start|>user\n{content}<|im_end|>",
            assistant_prefix="<|im_start|>assistant\n",
            assistant_format="{content}<|im_end|>",
            stop=("<|im_end|>",),
        ),
        Template(
            name="hf",
            description="the tokenizer's own chat_template (apply_chat_template)",
            kind="hf",
        ),
    )
}


def get_template(name: str | Template) -> Template:
    """The registered template called `name` (a `Template` passes through); unknown names list the valid ones."""
    if isinstance(name, Template):
        return name
    try:
        return TEMPLATES[name]
    except KeyError:
        raise VistuneError(
            f"unknown conversation template {name!r}; valid templates are: {', '.join(TEMPLATES)}"
        ) from None


def to_messages(
    turns: Sequence[Mapping[str, Any] | Message], *, where: str = "conversation"
) -> list[Message]:
    """Normalize LLaVA turns ({"from", "value"}) or chat messages ({"role", "content"}) to `Message`s.

    Checks the shape every template relies on: an optional leading system turn, then user and assistant turns
    alternating, starting with the user.
    """
    messages = [_to_message(turn, where=f"{where} turn {i}") for i, turn in enumerate(turns)]
    for i, message in enumerate(messages):
        if message.role == "system" and i > 0:
            raise VistuneError(f"{where} turn {i}: a system turn may only come first; move or remove it")
    body = messages[1:] if messages and messages[0].role == "system" else messages
    for i, message in enumerate(body):
        expected: Role = "user" if i % 2 == 0 else "assistant"
        if message.role != expected:
            offset = len(messages) - len(body)
            raise VistuneError(
                f"{where} turn {i + offset}: expected a {_llava_role(expected)} turn, got {_llava_role(message.role)}; "
                "turns must alternate human, gpt, human, gpt, ... starting with human"
            )
    return messages


def render(
    template: str | Template,
    messages: Sequence[Message],
    tokenizer: Any,
    *,
    add_generation_prompt: bool = False,
) -> Rendered:
    """Render normalized `messages` with `template`; spans cover each assistant reply plus its end-of-turn marker."""
    template = get_template(template)
    if template.kind == "hf":
        return _render_hf(messages, tokenizer, add_generation_prompt=add_generation_prompt)
    return _render_format(template, messages, tokenizer, add_generation_prompt=add_generation_prompt)


def build_prompt(
    messages: Sequence[Mapping[str, Any] | Message], template: str | Template, tokenizer: Any
) -> str:
    """The inference prompt: the conversation so far (ending with a user turn) plus the generation prompt."""
    normalized = to_messages(messages, where="prompt")
    if not normalized or normalized[-1].role != "user":
        raise VistuneError("prompt: the conversation must end with a user turn to generate a reply to")
    return render(template, normalized, tokenizer, add_generation_prompt=True).text


def with_image_placeholders(text: str, num_images: int = 1, placement: str = "before") -> str:
    """A first user turn the way LLaVA's inference writes it (`Conversation.get_prompt`): one `<image>\\n` per
    image, then the text with any placeholders it had removed and surrounding whitespace stripped. placement
    "after": the text first, then `\\n<image>` per image (a model trained on records that ask first)."""
    text = text.replace(IMAGE_PLACEHOLDER, "").strip()
    if placement == "before":
        return f"{IMAGE_PLACEHOLDER}\n" * num_images + text
    if placement == "after":
        return text + f"\n{IMAGE_PLACEHOLDER}" * num_images
    raise VistuneError(f"image placement {placement!r} is not valid; use 'before' or 'after'")


# --------------------------------------------------------------------------------------------------- internals


def _llava_role(role: str) -> str:
    return {"user": "human", "assistant": "gpt"}.get(role, role)


def _to_message(turn: Mapping[str, Any] | Message, *, where: str) -> Message:
    if isinstance(turn, Message):
        return turn
    if not isinstance(turn, Mapping):
        raise VistuneError(f"{where}: expected an object with 'from' and 'value', got {type(turn).__name__}")
    role = turn.get("from", turn.get("role"))
    content = turn.get("value", turn.get("content"))
    if role not in _ROLE_ALIASES:
        raise VistuneError(
            f"{where}: unknown role {role!r}; use 'human' or 'gpt' (or 'user'/'assistant', or a leading 'system')"
        )
    if not isinstance(content, str):
        raise VistuneError(f"{where}: 'value' must be a string, got {type(content).__name__}")
    return Message(_ROLE_ALIASES[role], content)


_PLACEHOLDER = re.compile(r"\{(content|system|bos|eos)\}")


def _fill(fmt: str, *, tokenizer: Any, template: Template, content: str = "", system: str = "") -> str:
    """Substitute placeholders in one pass, so text inside `content` is never itself substituted."""

    def value(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in ("bos", "eos"):
            token = getattr(tokenizer, f"{key}_token", None)
            if not token:
                raise VistuneError(
                    f"template {template.name!r} needs the tokenizer's {key.upper()} token, but this tokenizer has "
                    f"none; set `{key}_token` on the tokenizer or choose another template"
                )
            return str(token)
        return content if key == "content" else system

    return _PLACEHOLDER.sub(value, fmt)


def _render_format(
    template: Template, messages: Sequence[Message], tokenizer: Any, *, add_generation_prompt: bool
) -> Rendered:
    system = template.system
    if messages and messages[0].role == "system":
        system, messages = messages[0].content, messages[1:]
    parts: list[str] = [_fill(template.system_format, tokenizer=tokenizer, template=template, system=system)]
    length = len(parts[0])
    spans: list[tuple[int, int]] = []
    first_user = True

    def add(piece: str, *, supervised: bool = False) -> None:
        nonlocal length
        if supervised:
            spans.append((length, length + len(piece)))
        parts.append(piece)
        length += len(piece)

    for message in messages:
        if message.role == "user":
            content = message.content
            if template.user_images_only:
                content = IMAGE_PLACEHOLDER * content.count(IMAGE_PLACEHOLDER)
            fmt = (
                template.first_user_format
                if first_user and template.first_user_format
                else template.user_format
            )
            add(_fill(fmt, tokenizer=tokenizer, template=template, content=content, system=system))
            first_user = False
        else:
            add(template.assistant_prefix)
            fill = _fill(
                template.assistant_format, tokenizer=tokenizer, template=template, content=message.content
            )
            add(fill, supervised=True)
    if add_generation_prompt:
        add(template.assistant_prefix)
    return Rendered("".join(parts), tuple(spans))


def _apply_chat_template(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool) -> str:
    chat = [{"role": m.role, "content": m.content} for m in messages]
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)


def _require_chat_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise VistuneError(
            "template 'hf' needs the tokenizer's chat_template, but this tokenizer has none; "
            f"choose one of the named templates instead: {', '.join(n for n in TEMPLATES if n != 'hf')}"
        )


def _render_hf(messages: Sequence[Message], tokenizer: Any, *, add_generation_prompt: bool) -> Rendered:
    """Render with the tokenizer's chat template; locate each reply by rendering prefixes of the conversation.

    A reply's span runs from the end of render(messages[:i], generation prompt) to the end of
    render(messages[:i + 1]): exactly what the model must produce after the generation prompt, end-of-turn
    marker included. That needs a prefix-consistent chat template (rendering more turns only appends text).
    """
    _require_chat_template(tokenizer)
    text = _apply_chat_template(tokenizer, messages, add_generation_prompt=add_generation_prompt)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.role != "assistant":
            continue
        prompt = _apply_chat_template(tokenizer, messages[:i], add_generation_prompt=True)
        turn = _apply_chat_template(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (text.startswith(turn) and turn.startswith(prompt)):
            raise VistuneError(
                "template 'hf': the tokenizer's chat_template is not prefix-consistent (rendering the conversation "
                f"up to turn {i} is not a prefix of rendering it in full), so the assistant replies cannot be "
                "located; use a named template (e.g. chatml) instead"
            )
        spans.append((len(prompt), len(turn)))
    return Rendered(text, tuple(spans))


_SENTINEL = "\x00vistune-reply\x00"


def _hf_turn_end_marker(tokenizer: Any) -> str:
    """The text a chat template puts after an assistant reply (e.g. "<|im_end|>"), whitespace stripped."""
    _require_chat_template(tokenizer)
    messages = [Message("user", "hi"), Message("assistant", _SENTINEL)]
    text = _apply_chat_template(tokenizer, messages, add_generation_prompt=False)
    return text.split(_SENTINEL, 1)[1].strip() if _SENTINEL in text else ""
