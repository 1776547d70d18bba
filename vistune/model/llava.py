"""VistuneModel: vision tower -> projector -> any Hugging Face causal LM, composed as LLaVA does.

`<image>` placeholders were already expanded at tokenization into `num_image_tokens` copies of `image_token_id`, so
the sequence length never changes here: splicing is one masked assignment of the projected image features into the
token embeddings. Images are consumed in order of appearance, row-major over the batch.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vistune.errors import VistuneError
from vistune.model.config import ModelConfig, VisionConfig
from vistune.model.projector import build_projector
from vistune.model.vision import VisionTower, build_vision_tower, registering_module

IGNORE_INDEX = -100

# Text-config attributes of LMs whose head does more than a matmul (Gemma-2/3 soft-capping, Cohere and Granite
# logit scaling). For those the supervised-only loss would be wrong, so the LM's own loss path is used instead.
_HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


@dataclass
class VistuneOutput:
    """loss: mean cross-entropy over supervised tokens (None without labels).
    logits: [B, L, V] only when asked for (training never materializes them).
    num_supervised_tokens: 0-dim tensor, the tokens the loss averages over (for exact gradient accumulation / DDP).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    num_supervised_tokens: torch.Tensor | None = None


@dataclass(frozen=True)
class Trainable:
    vision: bool
    projector: bool
    language_model: bool


class VistuneModel(nn.Module):
    """The LLaVA architecture. Build with `build_model(config)`; load with `vistune.model.io.load_pretrained`."""

    def __init__(
        self, config: ModelConfig, vision: VisionTower, projector: nn.Module, language_model: nn.Module
    ) -> None:
        super().__init__()
        self.config = config
        self.vision = vision
        self.projector = projector
        self.language_model = language_model
        self.image_token_id = config.image_token_id
        self.num_image_tokens = vision.num_tokens
        # Training runs the prompt prefix every sample of a batch shares once (`_shared_prefix_length`); a runtime
        # choice (`model.share_prompt_prefix` in the training config), not saved with the model.
        self.share_prompt_prefix = False
        self.trainable = Trainable(vision=False, projector=True, language_model=True)
        self.set_trainable(vision=False, projector=True, language_model=True)

    # ----------------------------------------------------------------------------------------------- trainability
    def set_trainable(self, *, vision: bool, projector: bool, language_model: bool) -> None:
        """The one place that decides which parts train. Frozen parts get no grads and stay in eval mode.

        Only floating-point parameters are ever made trainable: quantized (bitsandbytes int8/uint8) weights of a
        QLoRA language model cannot require grads and stay frozen whatever the flag; its adapters do the training.
        """
        self.trainable = Trainable(vision=vision, projector=projector, language_model=language_model)
        for part, flag in self._parts(self.trainable):
            for param in part.parameters():
                param.requires_grad_(flag and (param.is_floating_point() or param.is_complex()))
        self.train(self.training)

    def train(self, mode: bool = True) -> VistuneModel:
        super().train(mode)
        # Frozen parts never train: no dropout, and BatchNorm statistics (conv towers) stay fixed. "Frozen" is read
        # from the parameters, so a frozen LM with LoRA adapters injected (trainable A/B) still trains its dropout.
        for part, _ in self._parts(self.trainable):
            if not any(p.requires_grad for p in part.parameters()):
                part.eval()
        return self

    def _parts(self, trainable: Trainable) -> list[tuple[nn.Module, bool]]:
        return [
            (self.vision, trainable.vision),
            (self.projector, trainable.projector),
            (self.language_model, trainable.language_model),
        ]

    def gradient_checkpointing_enable(self) -> None:
        """Activation checkpointing in the language model (non-reentrant, so frozen inputs still get grads)."""
        lm = self.language_model
        options = {"use_reentrant": False}
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers 5 renamed it
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:  # transformers 4.x
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
        # transformers also hooks the input embeddings to return a leaf that requires grad (needed only by reentrant
        # checkpointing of frozen models); the splice writes image features into that leaf in place, which autograd
        # refuses. Non-reentrant checkpointing needs no such hook.
        if hasattr(lm, "disable_input_require_grads"):
            lm.disable_input_require_grads()

    @property
    def device(self) -> torch.device:
        return next(self.projector.parameters()).device

    # ----------------------------------------------------------------------------------------------- images
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, T, Dv]: the frozen part (what a feature cache stores).

        Pixels come from the image processor in float32; they are cast to the tower's weight dtype here, so a
        model loaded in bfloat16 (`load_pretrained(..., dtype=...)`) takes them whatever its tower.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable.vision):
            return self.vision(_as_tower_input(self.vision, pixel_values))

    def encode_images(
        self, pixel_values: torch.Tensor | None = None, vision_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pixels or cached vision features -> visual tokens [N, T, Dlm]. Exactly one input must be given."""
        if (pixel_values is None) == (vision_features is None):
            raise ValueError("encode_images needs exactly one of pixel_values or vision_features")
        if vision_features is None:
            vision_features = self.vision_features(pixel_values)
        weight = self.projector[0].weight
        return self.projector(vision_features.to(weight.dtype))

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings [B, L, D] with image features spliced in at the image-token positions."""
        image_mask = input_ids == self.image_token_id  # [B, L]
        # Image positions may hold an id outside the vocabulary (-200): look up a valid one, it is overwritten.
        embeds = self.language_model.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
        has_images = pixel_values is not None or vision_features is not None
        num_images = _num_images(pixel_values, vision_features)
        num_positions = int(image_mask.sum())
        if num_positions != num_images * self.num_image_tokens:
            raise VistuneError(_mismatch_message(num_images, num_positions, self.num_image_tokens))
        if not has_images or num_images == 0:
            return embeds
        features = self.encode_images(pixel_values, vision_features)  # [N, T, D]
        embeds[image_mask] = features.reshape(-1, features.shape[-1]).to(embeds.dtype)  # N*T rows, in order
        return embeds

    # ----------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        *,
        return_logits: bool | None = None,
    ) -> VistuneOutput:
        """Loss (if labels) over supervised positions only; logits [B, L, V] if `return_logits` (default: no labels).

        labels are aligned with input_ids (the shift happens here); -100 marks unsupervised positions.
        """
        if return_logits is None:
            return_logits = labels is None
        embeds = self.embed(input_ids, pixel_values, vision_features)
        if labels is None:
            logits = self.language_model(
                inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False
            ).logits
            return VistuneOutput(logits=logits if return_logits else None)
        num_tokens = (labels[:, 1:] != IGNORE_INDEX).sum()
        if self._head_is_plain_linear():
            loss, logits = self._supervised_loss(embeds, attention_mask, labels, return_logits, input_ids)
        else:
            out = self.language_model(
                inputs_embeds=embeds, attention_mask=attention_mask, labels=labels, use_cache=False
            )
            loss, logits = out.loss, out.logits if return_logits else None
        return VistuneOutput(loss=loss, logits=logits, num_supervised_tokens=num_tokens)

    def _supervised_loss(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor,
        return_logits: bool,
        input_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the decoder, then the LM head only where the next token is supervised; mean CE over those."""
        lm = _unwrap(self.language_model)
        head = lm.get_output_embeddings()
        targets = labels[:, 1:]  # position t predicts token t+1
        supervised = targets != IGNORE_INDEX  # [B, L-1]
        share = self.share_prompt_prefix and not return_logits and input_ids is not None
        prefix = self._shared_prefix_length(input_ids, attention_mask, labels) if share else 0
        if prefix:  # hidden[:, j] is position prefix + j; no position before the prefix's end is supervised
            hidden = self._decode_after_shared_prefix(lm.base_model, embeds, attention_mask, prefix)
            targets, rows = targets[:, prefix:], supervised[:, prefix:]
        else:
            hidden = lm.base_model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)[0]
            rows = supervised  # hidden: [B, L, D], the final hidden states before the LM head
        picked = hidden[:, :-1][rows]  # [S, D], row-major over the batch either way
        logits_sup = head(picked).float()  # [S, V]; fp32 for a stable softmax, as HF's loss does
        loss_sum = F.cross_entropy(logits_sup, targets[rows], reduction="sum")
        loss = loss_sum / supervised.sum().clamp(min=1)
        return loss, head(hidden) if return_logits else None

    def _shared_prefix_length(
        self, ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor
    ) -> int:
        """How many leading positions every sample of the batch shares, to run once (0: none worth it).

        Shared: the same text token ids (no image token), attended, and none of them predicting a supervised token.
        A chat template's system turn and first user header are such a prefix: in the miniature world's closed
        questions, 12 of ~40 tokens."""
        if ids.shape[0] < 2:
            return 0
        same = (ids == ids[:1]).all(dim=0) & (ids[0] != self.image_token_id)
        if attention_mask is not None:
            same &= attention_mask.bool().all(dim=0)
        # position t predicts token t + 1: the prefix may not reach a position whose next token is supervised
        same[:-1] &= (labels[:, 1:] == IGNORE_INDEX).all(dim=0)
        same[-1] = False  # something must be left to run per sample
        length = int(same.long().cumprod(0).sum())
        return length if length >= 2 else 0

    @staticmethod
    def _decode_after_shared_prefix(
        base: nn.Module, embeds: torch.Tensor, attention_mask: torch.Tensor | None, prefix: int
    ) -> torch.Tensor:
        """The decoder's final hidden states at positions prefix..L-1 [B, L - prefix, D], running the shared prefix
        for one sample and the rest of each sample on its keys and values (a KV cache that keeps its graph: the
        prefix gets the gradients of every sample). The same function as running each sample whole, with fewer FLOPs;
        the sums are ordered differently, so the results agree to float rounding, not bit for bit."""
        batch = embeds.shape[0]
        name = _cache_argument(type(base))
        first = base(inputs_embeds=embeds[:1, :prefix], use_cache=True)
        cache = first[name]
        cache.batch_repeat_interleave(batch)
        if attention_mask is None:
            attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        rest = base(
            inputs_embeds=embeds[:, prefix:], attention_mask=attention_mask, use_cache=True, **{name: cache}
        )
        return rest[0]

    def _head_is_plain_linear(self) -> bool:
        cfg = _unwrap(self.language_model).config
        return all(getattr(cfg, name, None) in (None, 1.0) for name in _HEAD_EXTRAS)

    # ----------------------------------------------------------------------------------------------- generate
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        vision_features: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids [B, n] (prompt excluded). Uses the LM's generate: KV cache, sampling, EOS, stop strings
        (pass `tokenizer=`), `streamer=`. Batch with left padding."""
        embeds = self.embed(input_ids, pixel_values, vision_features)
        # input_ids go along too (image positions replaced by a valid id) so that processors that look at the
        # context, like repetition_penalty, see the prompt; the first step still reads `inputs_embeds`.
        context_ids = input_ids.masked_fill(input_ids == self.image_token_id, 0)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.language_model.generate(
            input_ids=context_ids, inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs
        )
        return out[:, input_ids.shape[1] :]


def _unwrap(lm: nn.Module) -> nn.Module:
    """The plain HF causal LM, also when PEFT wrapped it (`PeftModel.get_base_model()`)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def _num_images(pixel_values: torch.Tensor | None, vision_features: torch.Tensor | None) -> int:
    if pixel_values is not None and vision_features is not None:
        raise ValueError("pass pixel_values or vision_features, not both")
    given = pixel_values if pixel_values is not None else vision_features
    return 0 if given is None else int(given.shape[0])


def _mismatch_message(num_images: int, num_positions: int, tokens_per_image: int) -> str:
    placeholders = num_positions / tokens_per_image
    shown = f"{placeholders:g}" if placeholders != int(placeholders) else str(int(placeholders))
    return (
        f"{num_images} image(s) were given but the text has {shown} <image> placeholder(s) "
        f"({num_positions} image-token positions, {tokens_per_image} per image); "
        "each <image> in the text needs exactly one image, in order of appearance"
    )


def build_model(config: ModelConfig, *, language_model: nn.Module | None = None) -> VistuneModel:
    """Build a model from its config, loading `vision.pretrained` / `text_pretrained` weights if given.

    `language_model`: an already-loaded causal LM to build around instead of loading `text_pretrained` /
    building `text_config` (QLoRA passes its quantized LM); the rest is built and resolved exactly the same way.

    The model's own config (`model.config`) is a resolved copy: sub-model configs filled in, pretrained paths
    cleared, quantization settings dropped from the text config (a saved or merged model is a plain one), so saving
    it gives a self-contained directory. The `config` passed in is not modified.
    """
    vision = build_vision_tower(config.vision)
    if language_model is None:
        language_model = _build_language_model(config)
    text_hidden = language_model.get_input_embeddings().weight.shape[1]
    projector = build_projector(config.projector, vision.hidden_size, text_hidden)
    text_config = language_model.config.to_dict()
    for key in _QUANTIZATION_KEYS:
        text_config.pop(key, None)
    resolved = dataclasses.replace(
        config, vision=_resolved_vision(config, vision), text_config=text_config, text_pretrained=None
    )
    return VistuneModel(resolved, vision, projector, language_model)


def _resolved_vision(config: ModelConfig, vision: VisionTower) -> VisionConfig:
    """The vision config a built model records: the tower's own HF config, no weights path, its registering module."""
    return dataclasses.replace(
        config.vision,
        hf_config=vision.hf_config_dict,
        pretrained=None,
        module=registering_module(config.vision.kind),
    )


class VisionPart:
    """A model config's frozen vision tower, built without its language model: what a feature cache reads of a
    model (`config.vision` and `config.image_aspect` as `build_model` records them, `vision`, `vision_features`).
    Lets the features be computed before the language model exists (`vistune demo` does, right after it pretrained
    the tower)."""

    def __init__(self, config: ModelConfig) -> None:
        self.vision = build_vision_tower(config.vision).eval()
        self.config = dataclasses.replace(config, vision=_resolved_vision(config, self.vision))

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.vision(_as_tower_input(self.vision, pixel_values))


@functools.cache
def _cache_argument(decoder_class: type) -> str:
    """transformers >= 5.2x names a decoder's KV-cache argument and output `cache`, earlier ones `past_key_values`."""
    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"


def _as_tower_input(vision: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Pixels on the tower's device, in its weight dtype (the image processor makes float32)."""
    weight = next((p for p in vision.parameters() if p.is_floating_point()), None)
    if weight is None:
        return pixel_values
    return pixel_values.to(device=weight.device, dtype=weight.dtype)


# What transformers adds to a quantized LM's config; a VistuneModel's saved config never carries it.
_QUANTIZATION_KEYS = ("quantization_config", "_pre_quantization_dtype")


def _build_language_model(config: ModelConfig) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    if config.text_pretrained is not None:
        try:
            return AutoModelForCausalLM.from_pretrained(config.text_pretrained)
        except (OSError, ValueError) as err:
            raise VistuneError(f"cannot load the language model {config.text_pretrained!r}: {err}") from None
    text_config = dict(config.text_config or {})
    model_type = text_config.pop("model_type", None)
    if model_type is None:
        raise VistuneError("text_config needs a `model_type` (e.g. llama, qwen2, mistral)")
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **text_config))
