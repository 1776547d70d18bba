"""Launcher configs are honoured: DeepSpeed ZeRO JSON and `accelerate launch` FSDP settings map onto FSDP2/DDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vistune.errors import VistuneError
from vistune.train.config import DistConfig
from vistune.train.distributed import resolve_dist

CONFIGS = Path(__file__).parents[2] / "configs"


def _resolve(cfg: DistConfig, **kw):
    return resolve_dist(cfg, **{"global_batch": 32, "micro_batch": 4, "world_size": 2, **kw})


def test_shipped_zero_configs_map_to_fsdp(monkeypatch):
    for var in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(var, raising=False)
    zero2 = _resolve(DistConfig(deepspeed=str(CONFIGS / "deepspeed_zero2.json")))
    zero3 = _resolve(DistConfig(deepspeed=str(CONFIGS / "deepspeed_zero3.json")))
    assert (zero2.strategy, zero2.reshard_after_forward) == ("fsdp", False)
    assert (zero3.strategy, zero3.reshard_after_forward) == ("fsdp", True)


def test_zero_offload_stage0_and_batch_mismatch(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}))
    assert _resolve(DistConfig(deepspeed=str(path))).cpu_offload
    path.write_text(json.dumps({"zero_optimization": {"stage": 0}}))
    assert _resolve(DistConfig(deepspeed=str(path))).strategy == "ddp"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 2}}))
    with pytest.raises(VistuneError, match="train_micro_batch_size_per_gpu=8"):
        _resolve(DistConfig(deepspeed=str(path)))
    with pytest.raises(VistuneError, match="cannot read"):
        _resolve(DistConfig(deepspeed=str(tmp_path / "missing.json")))


def test_accelerate_fsdp_environment(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    resolved = _resolve(DistConfig())
    assert (resolved.strategy, resolved.reshard_after_forward, resolved.cpu_offload) == ("fsdp", False, False)
