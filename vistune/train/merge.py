"""Merge a LoRA adapter into its base model and save a plain model directory (`vistune merge-lora`)."""

from __future__ import annotations

import json
from pathlib import Path

from vistune.config import from_dict
from vistune.errors import VistuneError
from vistune.train.components import build_components
from vistune.train.config import ModelSection
from vistune.train.lora import BASE_FILE, load_adapter, merge_lora


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Rebuild the base from the adapter's `base.json` (quantized again for QLoRA), load the adapter and projector,
    merge, save a plain model."""
    from vistune.model.io import save_pretrained

    adapter_dir = Path(adapter_dir)
    base_file = adapter_dir / BASE_FILE
    if not base_file.is_file():
        raise VistuneError(
            f"{base_file} does not exist; is {adapter_dir} the adapter directory of a LoRA run?"
        )
    base = json.loads(base_file.read_text())
    section = from_dict(ModelSection, base["model"], where=f"{base_file}: model")
    parts = build_components(section, template=base["template"], seed=base["seed"])
    load_adapter(parts.model, adapter_dir)
    merge_lora(parts.model)  # a QLoRA base is dequantized here: the merged model is plain fp32
    parts.model.to("cpu")  # a quantized language model is loaded on the GPU where there is one
    out = Path(out_dir)
    save_pretrained(out, parts.model, parts.tokenizer, parts.image_processor)
    return out
