"""LoRA / QLoRA on the language model through `peft`, adapter files, and merging into a plain model.

Adapters are injected in place (`peft.inject_adapter_in_model`), so the language model keeps its type and the
VistuneModel around it does not change; only LoRA's A/B matrices (and the projector, when trainable) train.
An adapter directory holds `adapter_config.json` + `adapter_model.safetensors` (peft's names and format) plus the
projector and `base.json`, the model section it was trained on, so `vistune merge-lora` can rebuild the base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vistune.errors import VistuneError
from vistune.train.config import LoraConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_FILE = "base.json"


def peft_config(cfg: LoraConfig) -> Any:
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(model: Any, cfg: LoraConfig) -> None:
    """Inject LoRA adapters into `model.language_model` (new parameters train; the rest keeps its flags)."""
    from peft import inject_adapter_in_model

    if cfg.bits is not None:
        _check_qlora(cfg.bits)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.language_model.named_modules()}
    missing = sorted(set(cfg.target_modules) - present)
    if missing:
        raise VistuneError(
            f"model.lora.target_modules: {missing} are not module names of the language model "
            f"({type(model.language_model).__name__}); candidates include {sorted(_linear_names(model))[:12]}"
        )
    inject_adapter_in_model(peft_config(cfg), model.language_model)


def _linear_names(model: Any) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n, m in model.language_model.named_modules() if isinstance(m, nn.Linear)}


def _check_qlora(bits: int) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise VistuneError(
            f"model.lora.bits={bits} (QLoRA) needs bitsandbytes and a CUDA device (pip install bitsandbytes); "
            "set model.lora.bits=null for plain LoRA"
        ) from None
    if not torch.cuda.is_available():
        raise VistuneError(
            f"model.lora.bits={bits} (QLoRA) needs a CUDA device; set model.lora.bits=null on CPU"
        )
    raise VistuneError(
        "QLoRA: load the language model quantized (model.config.text_pretrained with a bitsandbytes "
        "quantization_config) — not wired into `vistune train` yet; use model.lora.bits=null"
    )


def lora_state(model: Any) -> dict[str, torch.Tensor]:
    """LoRA weights of the language model, under the language model's own parameter names."""
    return {
        n: p.detach().cpu().contiguous() for n, p in model.language_model.named_parameters() if "lora_" in n
    }


def save_adapter(
    model: Any, cfg: LoraConfig, out_dir: str | Path, *, base: dict[str, Any], template: str, seed: int
) -> Path:
    """Write the adapter directory: peft config + LoRA weights + the projector + how to rebuild the base."""
    from vistune.train.components import save_projector

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ADAPTER_CONFIG).write_text(json.dumps(peft_config(cfg).to_dict(), indent=2, default=list))
    save_file(lora_state(model), str(out / ADAPTER_WEIGHTS))
    save_projector(model, out)
    (out / BASE_FILE).write_text(json.dumps({"model": base, "template": template, "seed": seed}, indent=2))
    return out


def load_adapter(model: Any, adapter_dir: str | Path) -> None:
    """Inject the adapter saved in `adapter_dir` into `model` and load its weights and projector (strict)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    from vistune.train.components import load_projector

    adapter_dir = Path(adapter_dir)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (adapter_dir / name).is_file():
            raise VistuneError(
                f"{adapter_dir / name} does not exist; is {adapter_dir} a vistune adapter directory?"
            )
    config = PeftLoraConfig(**_peft_kwargs(json.loads((adapter_dir / ADAPTER_CONFIG).read_text())))
    inject_adapter_in_model(config, model.language_model)
    saved = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    own = dict(model.language_model.named_parameters())
    missing = sorted(k for k in own if "lora_" in k and k not in saved)
    unexpected = sorted(k for k in saved if k not in own)
    if missing or unexpected:
        raise VistuneError(
            f"{adapter_dir}: adapter does not fit the base (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    with torch.no_grad():
        for key, value in saved.items():
            own[key].copy_(value)
    load_projector(model, adapter_dir)


def _peft_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import fields

    from peft import LoraConfig as PeftLoraConfig

    names = {f.name for f in fields(PeftLoraConfig) if f.init}
    return {k: v for k, v in data.items() if k in names}


def merge_lora(model: Any) -> None:
    """Fold every LoRA update into its base weight and remove the adapter modules (a plain model remains)."""
    from peft.tuners.lora import LoraLayer

    lm = model.language_model
    targets = [(name, module) for name, module in lm.named_modules() if isinstance(module, LoraLayer)]
    for name, module in targets:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = lm.get_submodule(parent_name) if parent_name else lm
        setattr(parent, child, module.get_base_layer())
