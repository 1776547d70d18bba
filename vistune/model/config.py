"""Typed model configuration: which vision tower, which projector, which language model, which template.

A `ModelConfig` is what `config.json` of a vistune model directory holds (plus a `"format": "vistune"` marker).
Sub-model configs are kept as plain Hugging Face config dicts (with their `model_type`), so any HF vision model or
causal LM can be described without vistune knowing its fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from vistune.config import from_dict, to_dict
from vistune.errors import VistuneError
from vistune.model.projector import projector_depth

SelectFeature = Literal["patch", "cls_patch"]
ImageAspect = Literal["pad", "resize", "crop"]
ImagePlacement = Literal["before", "after"]

_SELECT_FEATURES = ("patch", "cls_patch")
_IMAGE_ASPECTS = ("pad", "resize", "crop")


@dataclass
class VisionConfig:
    """The image encoder.

    kind: "hf" (any Hugging Face vision model, built from `hf_config` or loaded from `pretrained`) or the name of a
        tower in the vision registry (`vistune.model.vision.register_vision_tower`), e.g. "efficientnet_lite0".
    hf_config: the HF vision config dict, including `model_type` (e.g. "clip_vision_model", "siglip_vision_model").
    pretrained: a local checkpoint path / hub name to load weights from when the model is first built. A saved
        vistune model stores its tower weights itself, so this is None in a saved config.json.
    select_layer: which hidden state feeds the projector (-2: the penultimate layer, as LLaVA does).
    select_feature: "patch" drops the CLS token if the tower has one; "cls_patch" keeps it.
    options: tower-specific settings for registry towers (each tower validates its own keys strictly).
    module: the module that registers a registry tower; filled in when the model is built, so a saved model
        rebuilds its tower in a fresh process (only `vistune.*` modules are imported automatically).
    """

    kind: str = "hf"
    hf_config: dict[str, Any] | None = None
    pretrained: str | None = None
    select_layer: int = -2
    select_feature: SelectFeature = "patch"
    options: dict[str, Any] = field(default_factory=dict)
    module: str | None = None

    def __post_init__(self) -> None:
        if self.select_feature not in _SELECT_FEATURES:
            raise VistuneError(
                f"vision.select_feature={self.select_feature!r} is not valid; use one of {', '.join(_SELECT_FEATURES)}"
            )
        if self.kind == "hf" and self.hf_config is None and self.pretrained is None:
            raise VistuneError(
                "vision: kind 'hf' needs `hf_config` (a HF vision config dict) or `pretrained`"
            )


@dataclass
class ModelConfig:
    """A LLaVA-style model: vision tower -> projector -> language model.

    text_config: the HF causal-LM config dict (with `model_type`); may be None when `text_pretrained` is given,
        in which case it is read from there when the model is built.
    text_pretrained: a local checkpoint path / hub name for the language model weights (first build only).
    image_token_id: the id that marks image positions in `input_ids` (-200: outside any vocabulary, as LLaVA's
        IMAGE_TOKEN_INDEX; a model read from a llava-hf directory keeps its `image_token_index`).
    template: the conversation template name, saved with the model (never guessed from a model name).
    image_aspect: how images are fitted to the tower's square input ("pad": LLaVA-1.5 pad-to-square).
    image_placement: where inference (chat, evaluation) puts the image in a first user turn whose text has no
        `<image>`: "before" the text (`<image>\nWhat is this?`, as LLaVA's CLI does) or "after" it (for a model
        trained on records that ask first; LLaVA's own instruction data has both). Saved with the model.
    """

    vision: VisionConfig
    text_config: dict[str, Any] | None = None
    text_pretrained: str | None = None
    projector: str = "mlp2x_gelu"
    image_token_id: int = -200
    template: str = "plain"
    image_aspect: ImageAspect = "pad"
    image_placement: ImagePlacement = "before"

    def __post_init__(self) -> None:
        if self.image_aspect not in _IMAGE_ASPECTS:
            raise VistuneError(
                f"image_aspect={self.image_aspect!r} is not valid; use one of {', '.join(_IMAGE_ASPECTS)}"
            )
        if self.image_placement not in ("before", "after"):
            raise VistuneError(
                f"image_placement={self.image_placement!r} is not valid; use 'before' or 'after'"
            )
        projector_depth(self.projector)  # an unknown projector name fails here, when the config is read
        if self.text_config is None and self.text_pretrained is None:
            raise VistuneError(
                "model config needs `text_config` (a HF causal-LM config dict) or `text_pretrained`"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "model config") -> ModelConfig:
        """Strict: an unknown key anywhere is an error naming it."""
        return from_dict(cls, data, where=where)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)
