"""Both training stages on a CUDA device with precision `auto` (bf16 autocast) and the feature cache. Skipped
without a GPU (CI has none); run on a GPU machine with `pytest -q tests -k cuda`."""

from __future__ import annotations

import math

import pytest
import torch
from train_world import tiny_config

from vistune.train.config import train_config_from_dict
from vistune.train.distributed import init_distributed
from vistune.train.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_stages_train_on_the_gpu_in_bf16_autocast(tiny_world, tmp_path):
    s1 = tiny_config(tiny_world, tmp_path / "s1", train={"precision": "auto"})
    # init_distributed() places the trainer as train() does: on the GPU when there is one.
    trainer = Trainer(train_config_from_dict(s1), init_distributed())
    assert trainer.model.device.type == "cuda"
    assert trainer.autocast.fast_dtype == torch.bfloat16  # auto -> bf16 where CUDA supports it
    result = trainer.run()
    assert result.steps == 3 and all(math.isfinite(x) for x in result.losses)

    s2 = tiny_config(tiny_world, tmp_path / "s2", stage=2, train={"precision": "auto", "epochs": 3})
    s2["model"]["init_projector"] = str(tmp_path / "s1")
    s2["data"].update(cache_vision_features=True, feature_cache_dir=str(tmp_path / "cache"))
    trainer = Trainer(train_config_from_dict(s2), init_distributed())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    result = trainer.run()
    assert all(math.isfinite(x) for x in result.losses)
    assert result.losses[-1] < result.losses[0]
    moved = [
        n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(before[n], p)
    ]
    assert any(n.startswith("language_model.") for n in moved) and any(
        n.startswith("projector.") for n in moved
    )
