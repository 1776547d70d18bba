"""Image loading and preprocessing as CLIP / SigLIP expect, plus LLaVA-1.5's pad-to-square. Pillow + numpy only.

Three aspect modes, all ending in a `crop_size` x `crop_size` tensor normalized with the tower's mean / std:
- "crop":   resize the shortest edge to `size`, then center-crop (CLIP's own processor).
- "resize": squash to a square (SigLIP's own processor).
- "pad":    pad to a square with the mean colour, then as "crop" (LLaVA-1.5's `expand2square` + CLIP processor).

`preprocessor_config.json` is read and written with Hugging Face's keys (CLIPImageProcessor, SiglipImageProcessor,
LlavaImageProcessor with `do_pad`), so transformers and vistune read each other's files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vistune.errors import VistuneError

Aspect = Literal["crop", "resize", "pad"]
ASPECTS = ("crop", "resize", "pad")
PREPROCESSOR_CONFIG = "preprocessor_config.json"

# PIL resampling filters by the names used in configs (HF stores the PIL integer code).
_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


@dataclass
class ImageProcessor:
    """size: the shortest edge after resizing ("crop", "pad") or the square side ("resize").
    crop_size: the side of the square output.
    """

    size: int = 224
    crop_size: int = 224
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resample: str = "bicubic"
    aspect: Aspect = "crop"
    rescale_factor: float = 1 / 255

    def __post_init__(self) -> None:
        if self.aspect not in ASPECTS:
            raise VistuneError(f"image aspect {self.aspect!r} is not valid; use one of {', '.join(ASPECTS)}")
        if self.resample not in _RESAMPLE:
            raise VistuneError(f"resample {self.resample!r} is not valid; use one of {', '.join(_RESAMPLE)}")
        if self.aspect != "resize" and self.size < self.crop_size:
            raise VistuneError(f"image size {self.size} is smaller than crop_size {self.crop_size}")
        self.image_mean = tuple(float(x) for x in self.image_mean)  # type: ignore[assignment]
        self.image_std = tuple(float(x) for x in self.image_std)  # type: ignore[assignment]

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> FloatTensor [N, 3, crop_size, crop_size]."""
        if not images:
            return torch.empty(0, 3, self.crop_size, self.crop_size)
        return torch.from_numpy(np.stack([self.preprocess_one(im) for im in images]))

    def preprocess_one(self, image: Image.Image) -> np.ndarray:
        """One image -> float32 [3, crop_size, crop_size]."""
        image = image.convert("RGB")
        resample = _RESAMPLE[self.resample]
        if self.aspect == "pad":
            image = pad_to_square(image, tuple(int(m * 255) for m in self.image_mean))
        if self.aspect == "resize":
            image = image.resize((self.crop_size, self.crop_size), resample=resample)
        else:
            image = image.resize(_shortest_edge_size(image.size, self.size), resample=resample)
            image = _center_crop(image, self.crop_size)
        pixels = np.asarray(image, dtype=np.float32) * np.float32(self.rescale_factor)  # [H, W, 3]
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        return ((pixels - mean) / std).transpose(2, 0, 1).copy()  # [3, H, W]

    # --------------------------------------------------------------------------------------- HF file format
    def to_hf_dict(self) -> dict[str, Any]:
        """HF preprocessor_config.json content: CLIP-style ("crop"), Llava with do_pad ("pad"), SigLIP ("resize")."""
        common = {
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "resample": _RESAMPLE[self.resample],
            "rescale_factor": self.rescale_factor,
        }
        if self.aspect == "resize":
            return {
                **common,
                "image_processor_type": "SiglipImageProcessor",
                "size": {"height": self.crop_size, "width": self.crop_size},
            }
        return {
            **common,
            "image_processor_type": "LlavaImageProcessor" if self.aspect == "pad" else "CLIPImageProcessor",
            "do_pad": self.aspect == "pad",
            "do_center_crop": True,
            "size": {"shortest_edge": self.size},
            "crop_size": {"height": self.crop_size, "width": self.crop_size},
        }

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], *, where: str = PREPROCESSOR_CONFIG) -> ImageProcessor:
        """Read HF image-processor keys (CLIP / SigLIP / Llava). Settings vistune cannot honour are errors."""
        for flag in ("do_resize", "do_rescale", "do_normalize"):
            if data.get(flag) is False:
                raise VistuneError(
                    f"{where}: {flag}=false is not supported; vistune always resizes and normalizes"
                )
        size = data.get("size", {"shortest_edge": 224})
        resample = {code: name for name, code in _RESAMPLE.items()}.get(int(data.get("resample", 3)))
        if resample is None:
            raise VistuneError(f"{where}: unknown resample code {data.get('resample')}")
        common = {
            "image_mean": tuple(data.get("image_mean", (0.5, 0.5, 0.5))),
            "image_std": tuple(data.get("image_std", (0.5, 0.5, 0.5))),
            "resample": resample,
            "rescale_factor": float(data.get("rescale_factor", 1 / 255)),
        }
        if "shortest_edge" in size:
            crop = data.get("crop_size", {"height": size["shortest_edge"], "width": size["shortest_edge"]})
            if not data.get("do_center_crop", True):
                raise VistuneError(
                    f"{where}: do_center_crop=false with a shortest_edge size gives non-square images"
                )
            if crop["height"] != crop["width"]:
                raise VistuneError(f"{where}: crop_size must be square, got {crop}")
            aspect = "pad" if data.get("do_pad") else "crop"
            return cls(
                size=int(size["shortest_edge"]), crop_size=int(crop["height"]), aspect=aspect, **common
            )
        if size.get("height") != size.get("width") or "height" not in size:
            raise VistuneError(f"{where}: size must be square ({{'height': S, 'width': S}}), got {size}")
        side = int(size["height"])
        return cls(size=side, crop_size=side, aspect="pad" if data.get("do_pad") else "resize", **common)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / PREPROCESSOR_CONFIG
        path.write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ImageProcessor:
        path = Path(directory) / PREPROCESSOR_CONFIG
        if not path.is_file():
            raise VistuneError(f"{path} does not exist; a model directory needs its image processor settings")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise VistuneError(f"{path} is not valid JSON: {err}") from None
        return cls.from_hf_dict(data, where=str(path))

    def with_aspect(self, aspect: Aspect) -> ImageProcessor:
        """The same normalization with another aspect mode (e.g. a model config's `image_aspect`)."""
        from dataclasses import replace

        return replace(self, aspect=aspect)


def pad_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """Centre the image on a square canvas of its longer side, filled with `fill` (LLaVA-1.5's expand2square)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _shortest_edge_size(size: tuple[int, int], shortest: int) -> tuple[int, int]:
    """(W, H) with the shorter side = `shortest`, the longer scaled and truncated, as CLIP's processor does."""
    width, height = size
    if width <= height:
        return shortest, int(shortest * height / width)
    return int(shortest * width / height), shortest


def _center_crop(image: Image.Image, side: int) -> Image.Image:
    width, height = image.size
    if width < side or height < side:  # cannot happen after a shortest-edge resize to >= side
        raise VistuneError(f"image of {width}x{height} is smaller than the crop size {side}")
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB; a missing or unreadable file is a VistuneError naming it."""
    path = Path(path)
    if not path.is_file():
        raise VistuneError(f"image file {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here rather than later
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise VistuneError(
            f"image file {path} cannot be read as an image ({err}); re-export or remove it"
        ) from None
