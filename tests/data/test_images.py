"""Image preprocessing agrees with transformers' own (PIL) processors; preprocessor_config.json both ways."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vistune.data.images import ImageProcessor, load_image, pad_to_square
from vistune.errors import VistuneError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture()
def images():
    rng = np.random.default_rng(0)
    shapes = [(37, 53), (64, 30), (32, 32), (101, 77)]  # landscape, portrait, square, odd sizes
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes]


def _hf(processor_cls, ours: ImageProcessor, images) -> torch.Tensor:
    hf = processor_cls(**ours.to_hf_dict())
    return torch.from_numpy(np.stack(hf(images, return_tensors="np")["pixel_values"]))


def test_crop_matches_transformers_clip_processor(images):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    ours = ImageProcessor(size=32, crop_size=28, image_mean=CLIP_MEAN, image_std=CLIP_STD, aspect="crop")
    out = ours(images)
    assert out.shape == (4, 3, 28, 28) and out.dtype == torch.float32
    assert torch.allclose(out, _hf(CLIPImageProcessorPil, ours, images), atol=1e-5)


def test_pad_matches_transformers_llava_processor(images):
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    ours = ImageProcessor(size=28, crop_size=28, image_mean=CLIP_MEAN, image_std=CLIP_STD, aspect="pad")
    assert torch.allclose(ours(images), _hf(LlavaImageProcessorPil, ours, images), atol=1e-5)


def test_resize_matches_transformers_siglip_processor(images):
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    ours = ImageProcessor(size=28, crop_size=28, aspect="resize")
    assert torch.allclose(ours(images), _hf(SiglipImageProcessorPil, ours, images), atol=1e-5)


def test_pad_to_square_uses_the_mean_colour_and_centres_the_image():
    image = Image.new("RGB", (6, 2), (255, 0, 0))
    padded = pad_to_square(image, (10, 20, 30))
    pixels = np.asarray(padded)
    assert padded.size == (6, 6)
    assert (pixels[:2] == (10, 20, 30)).all() and (pixels[4:] == (10, 20, 30)).all()
    assert (pixels[2:4] == (255, 0, 0)).all()


def test_hand_computed_values():
    """A uniform grey image: every output value is (128/255 - mean) / std, whatever the resizing."""
    ours = ImageProcessor(size=8, crop_size=8, image_mean=(0.5, 0.25, 0.0), image_std=(0.5, 0.25, 1.0))
    out = ours([Image.new("RGB", (20, 10), (128, 128, 128))])
    expected = [(128 / 255 - 0.5) / 0.5, (128 / 255 - 0.25) / 0.25, 128 / 255]
    for channel, value in enumerate(expected):
        assert torch.allclose(out[0, channel], torch.full((8, 8), value), atol=1e-6)


@pytest.mark.parametrize("aspect", ["crop", "pad", "resize"])
def test_preprocessor_config_round_trip(tmp_path, aspect):
    size = 336 if aspect != "resize" else 224
    ours = ImageProcessor(size=size, crop_size=size if aspect != "crop" else 224, aspect=aspect)
    ours.save(tmp_path)
    assert ImageProcessor.load(tmp_path) == ours


def test_reads_a_real_llava_15_style_config(tmp_path):
    config = {
        "crop_size": {"height": 336, "width": 336},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(CLIP_MEAN),
        "image_processor_type": "CLIPImageProcessor",
        "image_std": list(CLIP_STD),
        "processor_class": "LlavaProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 336},
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    loaded = ImageProcessor.load(tmp_path)
    assert (loaded.size, loaded.crop_size, loaded.aspect, loaded.resample) == (336, 336, "crop", "bicubic")
    assert loaded.image_mean == CLIP_MEAN


def test_transformers_reads_our_file(tmp_path, images):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    ours = ImageProcessor(size=32, crop_size=28, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    ours.save(tmp_path)
    hf = CLIPImageProcessorPil.from_pretrained(str(tmp_path))
    theirs = torch.from_numpy(np.stack(hf(images, return_tensors="np")["pixel_values"]))
    assert torch.allclose(ours(images), theirs, atol=1e-5)


def test_unsupported_settings_are_errors(tmp_path):
    with pytest.raises(VistuneError, match="do_normalize=false is not supported"):
        ImageProcessor.from_hf_dict({"do_normalize": False})
    with pytest.raises(VistuneError, match="size must be square"):
        ImageProcessor.from_hf_dict({"size": {"height": 224, "width": 200}})
    with pytest.raises(VistuneError, match="image aspect 'stretch' is not valid"):
        ImageProcessor(aspect="stretch")


def test_load_image_converts_to_rgb(tmp_path):
    Image.new("L", (5, 4), 7).save(tmp_path / "grey.png")
    Image.new("RGBA", (5, 4), (1, 2, 3, 4)).save(tmp_path / "alpha.png")
    for name in ("grey.png", "alpha.png"):
        image = load_image(tmp_path / name)
        assert image.mode == "RGB" and image.size == (5, 4)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(VistuneError, match=r"image file .*missing\.jpg does not exist"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(VistuneError, match=r"image file .*text\.jpg cannot be read as an image"):
        load_image(tmp_path / "text.jpg")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(VistuneError, match=r"cut\.jpg cannot be read"):
        load_image(tmp_path / "cut.jpg")
