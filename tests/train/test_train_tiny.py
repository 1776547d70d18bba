"""A few real training steps of each stage on a tiny model (CPU, seconds)."""

from __future__ import annotations

import json

import pytest
import torch
from train_world import tiny_config

from vistune.train.config import train_config_from_dict
from vistune.train.trainer import train


def _run(world, out, **kw):
    return train(train_config_from_dict(tiny_config(world, out, **kw)))


def test_stage1_trains_projector_only_and_writes_outputs(tiny_world, tmp_path):
    cfg = train_config_from_dict(tiny_config(tiny_world, tmp_path / "s1"))
    from vistune.train.distributed import DistEnv
    from vistune.train.trainer import Trainer

    trainer = Trainer(cfg, DistEnv())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    result = trainer.run()
    assert result.steps == 3 and len(result.losses) == 3  # 24 records / 8
    after = dict(trainer.model.named_parameters())
    for name, p in after.items():
        same = torch.equal(before[name], p.detach())
        assert same != name.startswith("projector."), name  # frozen parts bit-identical, projector moved
    out = tmp_path / "s1"
    assert (out / "projector.safetensors").is_file() and (out / "loss.png").is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and all("lr" in r and "samples_per_s" in r for r in lines)


def test_stage2_loads_stage1_projector_and_trains_llm(tiny_world, tmp_path):
    _run(tiny_world, tmp_path / "s1")
    cfg = tiny_config(tiny_world, tmp_path / "s2", stage=2)
    cfg["model"]["init_projector"] = str(tmp_path / "s1")
    cfg["data"]["val"] = str(tiny_world["val"])
    result = train(train_config_from_dict(cfg))
    assert result.steps == 4  # 31 records: 3 full image batches, tail of 7 (image + text leftovers)
    assert result.val_losses and all(v > 0 for v in result.val_losses)


def test_missing_stage1_projector_is_a_clear_error(tiny_world, tmp_path):
    from vistune.errors import VistuneError

    cfg = tiny_config(tiny_world, tmp_path / "s2", stage=2)
    cfg["model"]["init_projector"] = str(tmp_path / "nowhere")
    with pytest.raises(VistuneError, match="run stage 1 first"):
        train(train_config_from_dict(cfg))


def test_stage1_with_text_only_records_keeps_training(tiny_world, tmp_path):
    # With the language model frozen, a text-only batch reaches no trainable parameter; the step must still run.
    cfg = tiny_config(tiny_world, tmp_path, data={"train": str(tiny_world["stage2"])}, train={"max_steps": 4})
    cfg["model"]["config"]["template"] = "vicuna_v1"
    result = train(train_config_from_dict(cfg))
    assert result.steps == 4 and all(loss > 0 for loss in result.losses)
