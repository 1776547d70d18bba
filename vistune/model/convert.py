"""llava-hf interop: transformers' `LlavaForConditionalGeneration` directories <-> vistune models.

The key map is declared here, once. We write the llava-hf hub layout (what checkpoints on the hub use and what
transformers 4.x / 5.x, vLLM and SGLang read); on reading we also accept transformers 5's in-memory spelling.

    vistune                      llava-hf hub layout
    vision.model.*               vision_tower.vision_model.*      (HF vision towers only)
    projector.0.*                multi_modal_projector.linear_1.*
    projector.2.*                multi_modal_projector.linear_2.* (llava-hf's projector is mlp2x_gelu)
    language_model.*             language_model.*                 (the causal LM's own state dict)

Image tokens: vistune marks image positions with -200 (outside the vocabulary); llava-hf needs a real token. To-hf
therefore adds `<image>` to the tokenizer (resizing the embeddings if the vocabulary has no spare row) and writes
its id as `image_token_index`. A model read from llava-hf keeps that index.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from vistune.data.images import ImageProcessor
from vistune.errors import VistuneError
from vistune.model.config import ModelConfig, VisionConfig
from vistune.model.io import (
    Loaded,
    default_image_processor,
    load_state_dict_strict,
    no_weight_init,
    read_json,
    read_safetensors,
    save_pretrained,
)
from vistune.model.llava import VistuneModel, build_model
from vistune.model.vision import HFVisionTower

IMAGE_TOKEN = "<image>"
HF_PROJECTOR = "mlp2x_gelu"
TEMPLATE_KEY = (
    "vistune_template"  # extra config.json key: the conversation template, so a round trip keeps it
)

# vistune prefix -> llava-hf hub prefix.
KEY_MAP: tuple[tuple[str, str], ...] = (
    ("vision.model.", "vision_tower."),
    ("projector.0.", "multi_modal_projector.linear_1."),
    ("projector.2.", "multi_modal_projector.linear_2."),
    ("language_model.", "language_model."),
)
# Transformers 5 in-memory names -> hub layout ({base}: the LM's base-model prefix, {head}: its output layer).
HF5_ALIASES: tuple[tuple[str, str], ...] = (
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.language_model.", "language_model.{base}."),
    ("lm_head.", "language_model.{head}."),
)


# ------------------------------------------------------------------------------------------------ keys
def _rename(key: str, pairs: tuple[tuple[str, str], ...], *, where: str) -> str:
    for src, dst in pairs:
        if key.startswith(src):
            return dst + key[len(src) :]
    raise VistuneError(f"{where}: key {key!r} has no counterpart in the llava-hf key map")


def to_hf_state_dict(model: VistuneModel) -> dict[str, torch.Tensor]:
    """Our state dict in the llava-hf hub layout (tied tensors become separate copies, as safetensors requires)."""
    out = {}
    for key, tensor in model.state_dict().items():
        hf_key = _rename(key, KEY_MAP, where="to-hf")
        if key.startswith("vision.model.") and not hf_key.startswith("vision_tower.vision_model."):
            hf_key = (
                "vision_tower.vision_model." + hf_key[len("vision_tower.") :]
            )  # transformers 5 dropped the level
        out[hf_key] = tensor.detach().cpu().contiguous().clone()
    return out


def from_hf_state_dict(tensors: dict[str, torch.Tensor], model: VistuneModel) -> dict[str, torch.Tensor]:
    """llava-hf tensors (hub layout or transformers 5 names) -> our key names, for `load_state_dict_strict`."""
    lm = model.language_model
    head = next(name for name, mod in lm.named_modules() if mod is lm.get_output_embeddings())
    aliases = tuple((a, b.format(base=lm.base_model_prefix, head=head)) for a, b in HF5_ALIASES)
    inverse = tuple((hf, ours) for ours, hf in KEY_MAP)
    out = {}
    for key, tensor in tensors.items():
        hub_key = next((dst + key[len(src) :] for src, dst in aliases if key.startswith(src)), key)
        out[_rename(hub_key, inverse, where="from-hf")] = tensor
    return out


# ------------------------------------------------------------------------------------------------ configs
def model_config_from_hf(hf: dict[str, Any], *, where: str) -> ModelConfig:
    """A llava-hf config.json dict -> ModelConfig (strategy "default" drops CLS, "full" keeps every token)."""
    layer = hf.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise VistuneError(
            f"{where}: vision_feature_layer={layer} (several layers) is not supported; use one layer"
        )
    if hf.get("projector_hidden_act", "gelu") != "gelu" or not hf.get("multimodal_projector_bias", True):
        raise VistuneError(f"{where}: only the gelu projector with biases (mlp2x_gelu) is supported")
    strategy = hf.get("vision_feature_select_strategy", "default")
    if strategy not in ("default", "full"):
        raise VistuneError(f"{where}: unknown vision_feature_select_strategy {strategy!r}")
    text_config = dict(hf.get("text_config") or {"model_type": "llama"})
    if hf.get("tie_word_embeddings") is not None:
        text_config.setdefault("tie_word_embeddings", hf["tie_word_embeddings"])
    vision = VisionConfig(
        kind="hf",
        hf_config=dict(hf.get("vision_config") or {"model_type": "clip_vision_model"}),
        select_layer=layer,
        select_feature="patch" if strategy == "default" else "cls_patch",
    )
    return ModelConfig(
        vision=vision,
        text_config=text_config,
        projector=HF_PROJECTOR,
        image_token_id=int(hf.get("image_token_index", 32000)),
        template=str(hf.get(TEMPLATE_KEY, "hf")),
    )


def hf_config_dict(model: VistuneModel, image_token_index: int, template: str) -> dict[str, Any]:
    """The llava-hf config.json for `model` (built with transformers' LlavaConfig so it is valid for it)."""
    from transformers import LlavaConfig

    tower = model.vision
    config = LlavaConfig(
        vision_config=tower.hf_config_dict,
        text_config=model.language_model.config.to_dict(),
        image_token_index=image_token_index,
        image_seq_length=model.num_image_tokens,
        vision_feature_layer=tower.select_layer,
        # "default" drops the first token: right exactly when our tower drops a CLS token.
        vision_feature_select_strategy="default" if tower.drop_cls else "full",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(model.language_model.config.tie_word_embeddings),
    )
    data = config.to_dict()
    data["architectures"] = ["LlavaForConditionalGeneration"]
    data[TEMPLATE_KEY] = template
    return data


# ------------------------------------------------------------------------------------------------ to-hf
def _check_exportable(model: VistuneModel) -> None:
    if not isinstance(model.vision, HFVisionTower):
        raise VistuneError(
            f"vision tower {model.config.vision.kind!r} has no llava-hf equivalent; only Hugging Face vision towers "
            "(CLIP, SigLIP, ...) convert. Keep this model in vistune format"
        )
    if model.config.projector != HF_PROJECTOR:
        raise VistuneError(
            f"projector {model.config.projector!r} has no llava-hf equivalent (LlavaForConditionalGeneration uses "
            f"{HF_PROJECTOR}); keep this model in vistune format"
        )


def _ensure_image_token(model: VistuneModel, tokenizer: Any) -> int:
    """The id llava-hf will use for image positions: add `<image>` to the tokenizer and grow the vocab if needed."""
    if model.image_token_id >= 0:
        return model.image_token_id  # already a real token (the model came from llava-hf)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vocab = model.language_model.get_input_embeddings().weight.shape[0]
    if token_id >= vocab:
        lm = model.language_model
        lm.resize_token_embeddings(token_id + 1, mean_resizing=False)
        # New rows = the mean of the old ones (deterministic): the input row is never read (image features
        # overwrite it); the output row only adds one unremarkable candidate to the softmax.
        with torch.no_grad():
            for layer in (lm.get_input_embeddings(), lm.get_output_embeddings()):
                layer.weight[vocab:] = layer.weight[:vocab].mean(dim=0)
    return token_id


def export_llava_hf(loaded: Loaded, directory: str | Path) -> Path:
    """Write `loaded` as a transformers LlavaForConditionalGeneration directory (+ tokenizer, processor files)."""
    from safetensors.torch import save_file

    model, tokenizer = loaded.model, loaded.tokenizer
    _check_exportable(model)
    image_token_index = _ensure_image_token(model, tokenizer)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = hf_config_dict(model, image_token_index, loaded.template)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(to_hf_state_dict(model), str(directory / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(directory))
    loaded.image_processor.save(directory)
    processor = {
        "processor_class": "LlavaProcessor",
        "image_token": IMAGE_TOKEN,
        "patch_size": int(model.vision.model.config.patch_size),
        "vision_feature_select_strategy": config["vision_feature_select_strategy"],
        "num_additional_image_tokens": int(model.vision.has_cls),
    }
    (directory / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    return directory


# ------------------------------------------------------------------------------------------------ from-hf
def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        return [directory / s for s in shards]
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    raise VistuneError(
        f"{directory} has no model.safetensors (or sharded index); vistune reads safetensors only — "
        "re-save the checkpoint with safe_serialization=True"
    )


def load_llava_hf(directory: str | Path) -> Loaded:
    """Read a llava-hf directory directly (no conversion step needed)."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    config_path = directory / "config.json"
    config = model_config_from_hf(read_json(config_path), where=str(config_path))
    processor_path = directory / "preprocessor_config.json"
    image_processor = ImageProcessor.load(directory) if processor_path.is_file() else None
    if image_processor is not None:
        config = dataclasses.replace(config, image_aspect=image_processor.aspect)
    with no_weight_init():
        model = build_model(config)
    model.language_model.tie_weights()
    if config.vision.select_feature == "patch" and not model.vision.has_cls:
        raise VistuneError(
            f"{config_path}: vision_feature_select_strategy 'default' drops the first token, but this vision "
            "tower has no CLS token; vistune only drops CLS tokens (set the strategy to 'full')"
        )
    tensors = from_hf_state_dict(read_safetensors(_weight_files(directory)), model)
    load_state_dict_strict(model, tensors, where=str(directory))
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.chat_template is None:
        tokenizer.chat_template = _processor_chat_template(directory)
    if image_processor is None:
        image_processor = default_image_processor(model)
    return Loaded(model.eval(), tokenizer, image_processor, config.template, "llava-hf")


def _processor_chat_template(directory: Path) -> str | None:
    """llava-hf keeps the chat template with the processor (chat_template.jinja / .json), not the tokenizer."""
    jinja, js = directory / "chat_template.jinja", directory / "chat_template.json"
    if jinja.is_file():
        return jinja.read_text()
    if js.is_file():
        return read_json(js).get("chat_template")
    return None


# ------------------------------------------------------------------------------------------------ commands
def convert_to_hf(src: str | Path, dst: str | Path) -> Path:
    """vistune directory -> llava-hf directory."""
    from vistune.model.io import load_pretrained

    loaded = load_pretrained(src)
    if loaded.source_format != "vistune":
        raise VistuneError(f"{src} is already a llava-hf directory")
    return export_llava_hf(loaded, dst)


def convert_from_hf(src: str | Path, dst: str | Path) -> Path:
    """llava-hf directory -> vistune directory (the llava-hf image_token_index is kept)."""
    from vistune.model.io import detect_format

    if detect_format(src) != "llava-hf":
        raise VistuneError(f"{src} is not a llava-hf directory (config.json model_type must be 'llava')")
    loaded = load_llava_hf(src)
    return save_pretrained(dst, loaded.model, loaded.tokenizer, loaded.image_processor)
