"""Multi-turn chat about an image: keeps the image and the history, streams answers as they are generated."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image

from vistune.data.images import load_image
from vistune.infer.generate import Conversation, GenerationConfig, generate_reply
from vistune.text.templates import Template, get_template, with_image_placeholders


class ChatSession:
    """One conversation with a loaded model. The image (if any) goes into the first human turn, before the text or
    after it as the model's config says (`image_placement`), unless the question places `<image>` itself."""

    def __init__(
        self, loaded, *, template: str | None = None, config: GenerationConfig | None = None
    ) -> None:
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.image_processor = loaded.image_processor
        self.template: Template = get_template(template or loaded.template)
        self.image_placement: str = loaded.image_placement
        self.config = config or GenerationConfig()
        self.image: Image.Image | None = None
        self.history: Conversation = []

    def set_image(self, path: str | Path | None) -> None:
        """Start over with a new image (or none): the history refers to the old one, so it is cleared."""
        self.image = load_image(path) if path is not None else None
        self.history = []

    def reset(self) -> None:
        self.history = []

    def ask(self, question: str, on_text: Callable[[str], None] | None = None) -> str:
        """Ask a question; returns the answer (also streamed to `on_text`) and records both in the history."""
        question = question.strip()
        if not self.history and self.image is not None and "<image>" not in question:
            question = with_image_placeholders(question, 1, self.image_placement)
        turn = [*self.history, {"from": "human", "value": question}]
        images = [self.image] if self.image is not None else []
        answer = generate_reply(
            self.model,
            self.tokenizer,
            self.image_processor,
            self.template,
            turn,
            images,
            self.config,
            on_text=on_text,
        )
        self.history = [*turn, {"from": "gpt", "value": answer}]
        return answer
