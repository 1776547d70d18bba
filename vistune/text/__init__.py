"""Conversation templates (`templates`) and the one record -> input_ids + labels function (`tokenize`)."""

from vistune.text.templates import TEMPLATES, Template, build_prompt, get_template, with_image_placeholders
from vistune.text.tokenize import (
    DEFAULT_IMAGE_TOKEN_ID,
    IGNORE_INDEX,
    Tokenized,
    encode_prompt,
    tokenize_conversation,
    tokenize_records,
)

__all__ = [
    "DEFAULT_IMAGE_TOKEN_ID",
    "IGNORE_INDEX",
    "TEMPLATES",
    "Template",
    "Tokenized",
    "build_prompt",
    "encode_prompt",
    "get_template",
    "tokenize_conversation",
    "tokenize_records",
    "with_image_placeholders",
]
