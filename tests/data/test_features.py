"""The feature cache on its own: shards roll over, identical files are computed once, bad images are reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vistune.data import features as F
from vistune.data.images import load_image
from vistune.errors import VistuneError


class CountingTower:
    """A stand-in with what the cache touches: `config`, `vision` weights and `vision_features`."""

    def __init__(self) -> None:
        from vistune.model.config import VisionConfig

        self.vision = torch.nn.Linear(3, 4)
        self.config = type("C", (), {"vision": VisionConfig(kind="fake"), "image_aspect": "pad"})()
        self.calls = 0

    def vision_features(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls += len(pixels)
        return pixels.mean(dim=(2, 3))[:, None, :].repeat(1, 2, 1)  # [N, 2, 3]


def _processor(images):
    return torch.stack(
        [torch.from_numpy(np.asarray(i, dtype=np.float32) / 255).permute(2, 0, 1) for i in images]
    )


@pytest.fixture()
def images(tmp_path):
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((4, 4, 3), 40 * i, dtype=np.uint8)).save(path)
        paths.append(str(path))
    (tmp_path / "copy.png").write_bytes((tmp_path / "0.png").read_bytes())
    (tmp_path / "bad.png").write_bytes(b"broken")
    return tmp_path, paths


def test_shards_roll_over_and_duplicates_are_computed_once(images, tmp_path, monkeypatch):
    folder, paths = images
    monkeypatch.setattr(F, "SHARD_BYTES", 2 * 2 * 3 * 4)  # two [2, 3] fp32 rows per shard
    tower = CountingTower()
    cache = F.open_feature_cache(
        [*paths, str(folder / "copy.png")],
        model=tower,
        image_processor=_processor,
        load_image=load_image,
        cache_dir=tmp_path / "c",
        batch_size=2,
    )
    assert tower.calls == 5  # copy.png has 0.png's bytes
    assert len(list(cache.root.glob("shard_*.safetensors"))) == 3
    assert torch.equal(cache.get(str(folder / "copy.png")), cache.get(paths[0]))
    assert torch.allclose(cache.get(paths[3]), torch.full((2, 3), 120 / 255))
    assert len(json.loads((cache.root / "index.json").read_text())) == 5


def test_bad_images_raise_or_are_reported(images, tmp_path):
    folder, paths = images
    bad = str(folder / "bad.png")
    kw = {
        "model": CountingTower(),
        "image_processor": _processor,
        "load_image": load_image,
        "cache_dir": tmp_path / "c",
    }
    with pytest.raises(VistuneError, match="bad.png"):
        F.open_feature_cache([bad, *paths], **kw)
    seen = []
    cache = F.open_feature_cache([bad, *paths], on_bad_image=lambda p, e: seen.append(p), **kw)
    assert seen == [bad] and bad not in cache and paths[0] in cache


def test_fingerprint_covers_zero_dim_buffers():
    """A conv tower's BatchNorm carries a 0-dim `num_batches_tracked` (efficientnet_lite0 does): it is hashed too."""
    tower = CountingTower()
    tower.vision = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    before, _ = F.tower_fingerprint(tower, _processor, "float32")
    tower.vision[1].num_batches_tracked += 1
    assert F.tower_fingerprint(tower, _processor, "float32")[0] != before


def test_fingerprint_covers_non_persistent_buffers():
    """A buffer registered with persistent=False is not in state_dict() but changes the features: it is hashed."""
    tower = CountingTower()
    tower.vision.register_buffer("codes", torch.ones(3), persistent=False)
    before, _ = F.tower_fingerprint(tower, _processor, "float32")
    tower.vision.codes *= 3
    assert F.tower_fingerprint(tower, _processor, "float32")[0] != before


def test_a_vision_part_has_the_built_models_fingerprint_and_features():
    """`VisionPart` (the tower alone, no language model) must hit the cache entries the full model writes."""
    from vistune.model.io import default_image_processor
    from vistune.model.llava import VisionPart, build_model
    from vistune.testing import tiny_model_config

    config = tiny_model_config(vocab_size=64)
    torch.manual_seed(0)
    model = build_model(config).eval()
    torch.manual_seed(0)
    part = VisionPart(config)
    fingerprint = F.tower_fingerprint(model, default_image_processor(model), "float32")
    assert F.tower_fingerprint(part, default_image_processor(part), "float32") == fingerprint
    pixels = torch.randn(2, 3, model.vision.image_size, model.vision.image_size)
    assert torch.equal(part.vision_features(pixels), model.vision_features(pixels))
