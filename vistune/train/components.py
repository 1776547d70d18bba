"""Everything a run trains with, built from the config's `model` section: model, tokenizer, image processor,
template; then trainability, LoRA and gradient checkpointing applied in that order."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vistune.data.images import ImageProcessor
from vistune.errors import VistuneError
from vistune.model.io import PROJECTOR_WEIGHTS as PROJECTOR_FILE
from vistune.train.config import ModelSection, OptimConfig


@dataclass
class Components:
    model: Any  # VistuneModel
    tokenizer: Any
    image_processor: ImageProcessor
    template: str


def build_components(section: ModelSection, *, template: str | None = None, seed: int = 0) -> Components:
    """Build or load the model, then load the stage-1 projector if the config names one.

    seed: seeds the random initialization of whatever is not loaded from weights (a projector, or a whole model
    built from a config without pretrained weights), so a rebuild (resume, merge-lora) gives the same weights.
    """
    for module in section.imports:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise VistuneError(f"model.imports: cannot import {module!r} ({err})") from None
    if section.lora.bits is not None and section.init is not None:
        raise VistuneError(
            f"model.lora.bits={section.lora.bits}: QLoRA quantizes the language model as it is loaded from "
            "model.config.text_pretrained, but model.init loads a saved full-precision model; use model.config "
            "(text_pretrained, plus model.init_projector for stage 2) or model.lora.bits=null"
        )
    if section.lora.bits is not None and section.trainable.language_model:
        raise VistuneError(
            f"model.lora.bits={section.lora.bits}: a quantized language model cannot be fully fine-tuned; set "
            "model.trainable.language_model=false (and model.lora.enabled=true to train adapters on it)"
        )
    if section.init is not None:
        from vistune.model.io import load_pretrained

        loaded = load_pretrained(section.init)
        model, tokenizer, image_processor = loaded.model, loaded.tokenizer, loaded.image_processor
        if section.tokenizer is not None:
            tokenizer = _load_tokenizer(section.tokenizer)
    else:
        from vistune.model.io import default_image_processor
        from vistune.model.llava import build_model

        assert section.config is not None
        source = section.tokenizer or section.config.text_pretrained
        if source is None:
            raise VistuneError(
                "model.tokenizer: give the tokenizer directory (no model.config.text_pretrained)"
            )
        tokenizer = _load_tokenizer(source)
        torch.manual_seed(seed)
        if section.lora.bits is not None:  # QLoRA: the language model is quantized as it loads
            from vistune.train.lora import build_quantized_model

            model = build_quantized_model(section.config, section.lora)
        else:
            model = build_model(section.config)
        image_processor = default_image_processor(model)
    template = template or model.config.template
    model.config = dataclasses.replace(model.config, template=template)  # saved with the model: never guessed
    if section.init_projector is not None:
        load_projector(model, section.init_projector)
    return Components(model, tokenizer, image_processor, template)


def _load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise VistuneError(f"cannot load a tokenizer from {source!r}: {err}") from None


def save_projector(model: Any, out_dir: str | Path) -> Path:
    """The projector alone (stage 1's product): `projector.safetensors` + `projector.json` in `out_dir`."""
    from vistune.model.io import save_projector as io_save_projector

    return io_save_projector(out_dir, model)


def load_projector(model: Any, path: str | Path) -> None:
    """Load a stage-1 projector: its directory, or the `projector.safetensors` file inside it."""
    from vistune.model.io import load_projector as io_load_projector

    path = Path(path)
    directory = path.parent if path.suffix == ".safetensors" else path
    if not (directory / PROJECTOR_FILE).is_file():
        raise VistuneError(
            f"model.init_projector: {directory / PROJECTOR_FILE} does not exist; run stage 1 first (it writes "
            f"{PROJECTOR_FILE} into its train.output_dir) or point model.init_projector at that directory"
        )
    io_load_projector(directory, model)


def apply_trainability(model: Any, section: ModelSection, optim: OptimConfig) -> None:
    """Freeze/unfreeze through `set_trainable` (the one place); a part with learning rate 0 is frozen too."""
    lrs = optim.part_lrs
    want = dataclasses.asdict(section.trainable)
    model.set_trainable(**{part: flag and lrs[part] > 0 for part, flag in want.items()})
    model.share_prompt_prefix = section.share_prompt_prefix
    if section.attn_implementation is not None:  # before LoRA wraps the language model
        set_attention(model, section.attn_implementation)
    if section.lora.enabled:
        from vistune.train.lora import add_lora

        add_lora(model, section.lora)
    if section.gradient_checkpointing:
        model.gradient_checkpointing_enable()


def set_attention(model: Any, implementation: str) -> None:
    """Switch the language model's (and a transformers vision tower's) attention kernel in place."""
    from transformers import PreTrainedModel

    parts = [model.language_model, getattr(model.vision, "model", None)]
    for part in (p for p in parts if isinstance(p, PreTrainedModel)):
        try:
            part.set_attn_implementation(implementation)
        except (ValueError, ImportError) as err:
            raise VistuneError(
                f"model.attn_implementation={implementation!r} cannot be used for {type(part).__name__}: {err}"
            ) from None


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
