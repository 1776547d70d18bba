"""Save and load models: one directory = config.json + model.safetensors + tokenizer + preprocessor_config.json.

`load_pretrained(dir)` reads our format (config.json with `"format": "vistune"`) or a transformers
`LlavaForConditionalGeneration` directory (config.json with `model_type: llava`). Loading is strict: missing or
unexpected keys and shape mismatches are errors naming the keys. safetensors only; weights are never unpickled.
Projector-only files (what stage 1 produces): projector.safetensors + projector.json.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from vistune.data.images import ImageProcessor
from vistune.errors import VistuneError
from vistune.model.config import ModelConfig
from vistune.model.llava import VistuneModel, build_model

FORMAT = "vistune"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PROJECTOR_WEIGHTS = "projector.safetensors"
PROJECTOR_CONFIG = "projector.json"

# Equivalent key spellings across transformers versions: 4.x vision models nest their weights under
# `vision_model.`, 5.x vision models don't. A file written under either loads into either.
KEY_ALIASES: tuple[tuple[str, str], ...] = (("vision.model.vision_model.", "vision.model."),)


@dataclass
class Loaded:
    """What a model directory holds, ready to use."""

    model: VistuneModel
    tokenizer: Any  # a transformers tokenizer
    image_processor: ImageProcessor
    template: str
    source_format: Literal["vistune", "llava-hf"]
    image_placement: Literal["before", "after"] = (
        "before"  # where a first user turn without `<image>` gets it
    )


# ------------------------------------------------------------------------------------------------------ save
def save_pretrained(
    directory: str | Path, model: VistuneModel, tokenizer: Any, image_processor: ImageProcessor
) -> Path:
    """Write config.json, model.safetensors, the tokenizer files and preprocessor_config.json into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(model.config, image_aspect=image_processor.aspect)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "num_image_tokens": model.num_image_tokens}
    payload.update(config.to_dict())
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2) + "\n")
    # save_model de-duplicates tied tensors (e.g. tied input/output embeddings) instead of failing on them.
    save_model(model, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(directory))
    image_processor.save(directory)
    return directory


def save_projector(directory: str | Path, model: VistuneModel) -> Path:
    """Projector weights only (stage 1's product) + a small json with its name and dims."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.projector.state_dict().items()}
    save_file(tensors, str(directory / PROJECTOR_WEIGHTS), metadata={"format": "pt"})
    meta = {
        "projector": model.config.projector,
        "in_dim": model.vision.hidden_size,
        "out_dim": model.language_model.get_input_embeddings().weight.shape[1],
        "num_image_tokens": model.num_image_tokens,
    }
    (directory / PROJECTOR_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def load_projector(directory: str | Path, model: VistuneModel) -> None:
    """Load projector-only files into `model.projector` (strict: name, dims and keys must match)."""
    directory = Path(directory)
    meta_path, weights_path = directory / PROJECTOR_CONFIG, directory / PROJECTOR_WEIGHTS
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise VistuneError(
                f"{path} does not exist; point to a directory written by save_projector (stage 1)"
            )
    meta = read_json(meta_path)
    if meta.get("projector") != model.config.projector:
        raise VistuneError(
            f"{meta_path}: projector {meta.get('projector')!r} does not match the model's {model.config.projector!r}"
        )
    load_state_dict_strict(model.projector, load_file(str(weights_path)), where=str(weights_path))


# ------------------------------------------------------------------------------------------------------ load
def detect_format(directory: str | Path) -> Literal["vistune", "llava-hf"]:
    """Which format a model directory is in; anything else is a VistuneError saying what was expected."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise VistuneError(f"model directory {directory} does not exist")
    if not config_path.is_file():
        raise VistuneError(
            f"{directory} has no {CONFIG_FILE}; expected a vistune model directory or a llava-hf "
            "(LlavaForConditionalGeneration) directory"
        )
    config = read_json(config_path)
    if config.get("format") == FORMAT:
        return "vistune"
    if config.get("model_type") == "llava":
        return "llava-hf"
    raise VistuneError(
        f'{config_path} is neither a vistune config ("format": "vistune") nor a llava-hf config '
        f'(model_type "llava", found {config.get("model_type")!r}); convert the checkpoint or point to another directory'
    )


# ------------------------------------------------------------------------------------------- device and dtype
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto` -> the first CUDA device if there is one, else the CPU; `cpu`, `cuda`, `cuda:1` as given (checked)."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise VistuneError(f"device {name!r} is not a device name: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VistuneError(f"device {name!r}: this torch sees no CUDA device; use --device cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VistuneError(
                f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    return device


def resolve_dtype(name: str | torch.dtype, device: torch.device) -> torch.dtype:
    """`auto` -> bfloat16 on a CUDA device that supports it (else float16), float32 on the CPU (bf16 matmuls are
    far slower than fp32 on most CPUs); or one of DTYPES' names."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise VistuneError(f"dtype {name!r}: use auto or one of {', '.join(DTYPES)}")
    return DTYPES[name]


def load_pretrained(
    directory: str | Path,
    *,
    template: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> Loaded:
    """Load a vistune or llava-hf model directory. `template` overrides the saved template name.

    device / dtype: None leaves the weights where loading put them (CPU, as saved); a string goes through
    `resolve_device` / `resolve_dtype` (e.g. "auto": CUDA in bfloat16 when there is a GPU, else CPU in float32).
    """
    if device is not None:
        device = resolve_device(device)
    if dtype is not None:
        dtype = resolve_dtype(dtype, device if device is not None else torch.device("cpu"))
    directory = Path(directory)
    if detect_format(directory) == "llava-hf":
        from vistune.model.convert import load_llava_hf

        loaded = load_llava_hf(directory)
    else:
        loaded = _load_vistune(directory)
    if template is not None:
        loaded.template = template
    loaded.model.to(device=device, dtype=dtype)
    return loaded


def read_model_config(directory: str | Path) -> tuple[ModelConfig, int]:
    """Our config.json -> (ModelConfig, num_image_tokens recorded at save time)."""
    path = Path(directory) / CONFIG_FILE
    data = read_json(path)
    data.pop("format", None)
    version = data.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise VistuneError(f"{path}: format_version {version} is not supported (expected {FORMAT_VERSION})")
    num_image_tokens = int(data.pop("num_image_tokens"))
    return ModelConfig.from_dict(data, where=str(path)), num_image_tokens


def _load_vistune(directory: Path) -> Loaded:
    from transformers import AutoTokenizer

    config, num_image_tokens = read_model_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise VistuneError(f"{weights_path} does not exist; the model directory is incomplete")
    with no_weight_init():
        model = build_model(config)
    # Tying happens in HF's weight init, which was skipped: tie now so tied weights load as one tensor.
    model.language_model.tie_weights()
    if model.num_image_tokens != num_image_tokens:
        raise VistuneError(
            f"{directory / CONFIG_FILE}: the vision tower gives {model.num_image_tokens} tokens per image but the "
            f"saved model used {num_image_tokens}; the config does not describe the saved weights"
        )
    load_state_dict_strict(model, load_file(str(weights_path)), where=str(weights_path))
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    image_processor = ImageProcessor.load(directory)
    return Loaded(
        model.eval(), tokenizer, image_processor, config.template, "vistune", config.image_placement
    )


class no_weight_init:
    """Skip random initialization while building a model whose weights are loaded right after (faster)."""

    def __enter__(self) -> None:
        try:
            from transformers.initialization import no_init_weights  # transformers 5
        except ImportError:  # pragma: no cover - transformers 4.x
            from transformers.modeling_utils import no_init_weights
        self._ctx = no_init_weights()
        self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


# ------------------------------------------------------------------------------------------------------ strict keys
def load_state_dict_strict(
    module: nn.Module,
    tensors: dict[str, torch.Tensor],
    *,
    where: str,
    aliases: tuple[tuple[str, str], ...] = KEY_ALIASES,
) -> None:
    """Load `tensors` into `module`: every key must be expected, every expected key present, every shape equal.

    Tied parameters (one storage, several names) need only one of their names in the file. Key spellings listed
    in `aliases` are treated as the same key.
    """
    expected = module.state_dict()
    tensors = _apply_aliases(tensors, set(expected), aliases)
    groups = _tied_groups(expected)
    missing = [names[0] for names in groups if not any(n in tensors for n in names)]
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(tensors) & set(expected))
        if tensors[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_some(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_some(mismatched)}")
    if problems:
        raise VistuneError(
            f"{where} does not match the model: " + "; ".join(problems) + ". The weights were saved from a "
            "different architecture/config; use the config.json that was saved with them"
        )
    full = dict(tensors)
    for names in groups:
        source = next(n for n in names if n in tensors)
        for name in names:
            full.setdefault(name, tensors[source])
    module.load_state_dict(full, strict=True)


def _apply_aliases(
    tensors: dict[str, torch.Tensor], expected: set[str], aliases: tuple[tuple[str, str], ...]
) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in tensors.items():
        if key not in expected:
            for a, b in aliases:
                for src, dst in ((a, b), (b, a)):
                    if key.startswith(src) and dst + key[len(src) :] in expected:
                        key = dst + key[len(src) :]
                        break
        out[key] = value
    return out


def _tied_groups(state: dict[str, torch.Tensor]) -> list[list[str]]:
    """State-dict names grouped by the storage they share (a tied pair is one group of two names)."""
    by_storage: dict[tuple[int, int, tuple[int, ...]], list[str]] = {}
    for name, tensor in state.items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.device.type == "meta" or tensor.numel() == 0:
            ident = (id(tensor), 0, ())  # no real storage to compare
        by_storage.setdefault(ident, []).append(name)
    return list(by_storage.values())


def _some(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise VistuneError(f"{path} does not exist") from None
    except json.JSONDecodeError as err:
        raise VistuneError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise VistuneError(f"{path}: expected a JSON object")
    return data


def read_safetensors(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Read one or several safetensors files into one dict (sharded checkpoints)."""
    tensors: dict[str, torch.Tensor] = {}
    for path in paths:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                tensors[key] = f.get_tensor(key)
    return tensors


def default_image_processor(model: VistuneModel) -> ImageProcessor:
    """The tower's expected preprocessing with the model config's aspect mode (a new model has no file yet)."""
    tower = model.vision
    return ImageProcessor(
        size=tower.image_size,
        crop_size=tower.image_size,
        image_mean=tower.image_mean,
        image_std=tower.image_std,
        aspect=model.config.image_aspect,
    )


__all__ = [
    "Loaded",
    "default_image_processor",
    "detect_format",
    "load_pretrained",
    "load_projector",
    "load_state_dict_strict",
    "read_model_config",
    "save_pretrained",
    "save_projector",
]
