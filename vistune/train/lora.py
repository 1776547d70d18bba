"""LoRA / QLoRA on the language model through `peft`, adapter files, and merging into a plain model.

Adapters are injected in place (`peft.inject_adapter_in_model`), so the language model keeps its type and the
VistuneModel around it does not change; only LoRA's A/B matrices (and the projector, when trainable) train.
An adapter directory holds `adapter_config.json` + `adapter_model.safetensors` (peft's names and format) plus the
projector and `base.json`, the model section it was trained on, so `vistune merge-lora` can rebuild the base.

QLoRA (`model.lora.bits`: 4 or 8): the language model is loaded from `model.config.text_pretrained` with its linear
layers quantized by bitsandbytes (through transformers' `BitsAndBytesConfig`), prepared with peft's
`prepare_model_for_kbit_training` and given the same adapters; the vision tower and the projector are untouched (the
projector trains in fp32). Merging dequantizes every quantized layer and folds the adapters into it, so the merged
model is a plain model: it equals the dequantized base + adapter, not bit-for-bit the quantized forward.
"""

from __future__ import annotations

import json
import sys
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
        _prepare_quantized(model.language_model, cfg.bits)
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


def require_bitsandbytes(bits: int) -> None:
    """QLoRA's one extra package (0.50 runs its 4-bit and 8-bit layers on CPU as well as CUDA; checked on CPU)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise VistuneError(
            f"model.lora.bits={bits} (QLoRA) needs the bitsandbytes package ({err}); `pip install bitsandbytes` "
            "(CPU and CUDA), or set model.lora.bits=null for plain LoRA"
        ) from None


def quantized_device() -> torch.device:
    """Where the quantized language model is loaded: this process's CUDA device (set by torchrun) or the CPU,
    the device the trainer puts the rest of the model on (`distributed.init_distributed`)."""
    from vistune.model.io import resolve_device

    return resolve_device("auto")


def compute_dtype(cfg: LoraConfig, device: torch.device) -> torch.dtype:
    """The 4-bit layers' matmul dtype: `model.lora.compute_dtype`, or for auto bf16/fp16 on CUDA and fp32 on CPU
    (`model.io.resolve_dtype`, which inference's `--dtype auto` uses too)."""
    from vistune.model.io import resolve_dtype

    return resolve_dtype(cfg.compute_dtype, device)


def quantization_config(cfg: LoraConfig, device: torch.device) -> Any:
    """transformers' `BitsAndBytesConfig` for `model.lora.bits` (4: NF4/FP4 + double quant; 8: LLM.int8())."""
    from transformers import BitsAndBytesConfig

    if cfg.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant_type,
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(cfg, device),
    )


def load_quantized_language_model(path: str, cfg: LoraConfig) -> nn.Module:
    """The causal LM at `path` with its linear layers quantized as they load (the head and embeddings stay fp32)."""
    from transformers import AutoModelForCausalLM

    assert cfg.bits is not None
    require_bitsandbytes(cfg.bits)
    device = quantized_device()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            quantization_config=quantization_config(cfg, device),
            device_map={"": device},
            dtype=torch.float32,
        )
    except (OSError, ValueError) as err:
        raise VistuneError(
            f"cannot load the language model {path!r} quantized to {cfg.bits} bits (model.lora.bits): {err}"
        ) from None
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            # On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit weight in place at its first forward in
            # eval mode without grad (a validation pass) for a bf16-only kernel. Measured here: that kernel ignores
            # compute_dtype, passes no gradient back through the layer once training resumes, and dequantizing the
            # repacked weight gives wrong values (max error 0.25 on a test layer). Keep the layout that trains.
            module.support_avx512bf16_for_cpu = False
    return model


def build_quantized_model(config: Any, cfg: LoraConfig) -> Any:
    """`build_model` around the language model loaded quantized from `config.text_pretrained` (`set_trainable`
    never makes integer weights trainable). The model's config never mentions quantization: a merged model is a
    plain one."""
    from vistune.model.llava import build_model

    if config.text_pretrained is None:
        raise VistuneError(
            f"model.lora.bits={cfg.bits}: QLoRA quantizes the language model as it is loaded from "
            "model.config.text_pretrained, and this config builds it from text_config (random weights); "
            "set model.config.text_pretrained to a saved causal LM, or model.lora.bits=null"
        )
    model = build_model(config, language_model=load_quantized_language_model(config.text_pretrained, cfg))
    model.set_trainable(vision=False, projector=True, language_model=False)
    return model


def is_quantized_linear(module: nn.Module) -> bool:
    """A bitsandbytes 4-bit or 8-bit linear layer (bitsandbytes is not imported for the check)."""
    bnb = sys.modules.get("bitsandbytes")
    return bnb is not None and isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))


def _prepare_quantized(language_model: nn.Module, bits: int) -> None:
    from peft import prepare_model_for_kbit_training

    if not any(is_quantized_linear(m) for m in language_model.modules()):
        raise VistuneError(
            f"model.lora.bits={bits}: the language model is not quantized; QLoRA quantizes it while loading it "
            "from model.config.text_pretrained (`build_components` does), so build the model from the config"
        )
    # Freezes the base and casts any fp16/bf16 non-quantized weights to fp32. Gradient checkpointing stays ours
    # (`VistuneModel.gradient_checkpointing_enable`, non-reentrant): peft's would hook the input embeddings.
    prepare_model_for_kbit_training(language_model, use_gradient_checkpointing=False)


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


def dequantize_language_model(language_model: nn.Module) -> int:
    """Replace every bitsandbytes linear layer (LoRA's base layers included) by an fp32 `nn.Linear` holding its
    dequantized weight, and drop the quantization settings; returns how many layers were replaced."""
    from peft.utils.integrations import dequantize_module_weight

    found = [(name, m) for name, m in language_model.named_modules() if is_quantized_linear(m)]
    for name, module in found:
        if getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False):
            raise VistuneError(
                f"merge-lora: {name} holds bitsandbytes' CPU inference layout, which does not dequantize correctly; "
                "load the model with vistune.train.lora.load_quantized_language_model"
            )
        with torch.no_grad():
            weight = dequantize_module_weight(module).detach().to(torch.float32)
            plain = nn.Linear(
                module.in_features,
                module.out_features,
                bias=module.bias is not None,
                device=weight.device,
                dtype=torch.float32,
            )
            plain.weight.copy_(weight.reshape(plain.weight.shape))
            if module.bias is not None:
                plain.bias.copy_(module.bias.detach().float())
        plain.requires_grad_(False)
        _replace(language_model, name, plain)
    if found:
        config = getattr(language_model, "config", None)
        if config is not None and hasattr(config, "quantization_config"):
            del config.quantization_config
        if getattr(language_model, "hf_quantizer", None) is not None:
            language_model.hf_quantizer = None
    return len(found)


def merge_lora(model: Any) -> None:
    """Fold every LoRA update into its base weight and remove the adapter modules (a plain model remains).

    A quantized (QLoRA) language model is dequantized first, every bitsandbytes layer whether adapted or not, so the
    result is a plain fp32 model equal to the dequantized base + adapter."""
    from peft.tuners.lora import LoraLayer

    lm = model.language_model
    dequantize_language_model(lm)
    targets = [(name, module) for name, module in lm.named_modules() if isinstance(module, LoraLayer)]
    for name, module in targets:
        if type(module).__module__.endswith(".lora.bnb"):
            # peft's merge for bitsandbytes layers re-quantizes; the base is plain now, so add the update to it
            base = module.get_base_layer()
            with torch.no_grad():
                for adapter in module.active_adapters:
                    if module.use_dora.get(adapter):
                        raise VistuneError("merge-lora: DoRA adapters on a quantized model are not supported")
                    base.weight += module.get_delta_weight(adapter).to(base.weight.dtype)
        else:
            module.merge()
        _replace(lm, name, module.get_base_layer())


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
