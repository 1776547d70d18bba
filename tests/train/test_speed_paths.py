"""The speed paths keep the guarantees: fused AdamW matches foreach, resumes exactly and from a foreach checkpoint;
the train mode is restored after validation even though it is no longer reset every step."""

from __future__ import annotations

import json

import pytest
import torch
from train_world import tiny_config

from vistune.errors import VistuneError
from vistune.train.config import train_config_from_dict
from vistune.train.distributed import DistEnv
from vistune.train.optim import build_optimizer, use_fused
from vistune.train.trainer import Trainer, train


def _cfg(world, out, *, fused, **train_kw):
    c = tiny_config(world, out, stage=2, train={"max_steps": 4, "micro_batch_size": 8, **train_kw}, optim={})
    c["optim"]["fused"] = fused
    c["optim"]["weight_decay"] = 0.1  # the decay path too
    return train_config_from_dict(c)


def _trained(out):
    from safetensors.torch import load_file

    return load_file(str(out / "projector.safetensors"))


def test_fused_is_the_default_on_cpu_and_resolves_per_parameter_kind():
    assert (
        train_config_from_dict(
            {"model": {"init": "x"}, "data": {"train": "x"}, "train": {"output_dir": "x"}}
        ).optim.fused
        == "auto"
    )
    plain = [torch.nn.Parameter(torch.zeros(3))]
    assert use_fused(plain, "auto") is True
    assert use_fused(plain, False) is False
    assert use_fused([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))], "auto") is True
    model = torch.nn.Linear(3, 2)
    from vistune.train.config import OptimConfig

    class Wrapped(torch.nn.Module):  # param names must start with a model part
        def __init__(self):
            super().__init__()
            self.projector = model

    opt = build_optimizer(Wrapped(), OptimConfig(fused=False))
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]
    opt = build_optimizer(Wrapped(), OptimConfig())
    assert opt.defaults["fused"] is True


def test_fused_value_is_checked():
    with pytest.raises(VistuneError, match="optim.fused"):
        train_config_from_dict(
            {
                "model": {"init": "x"},
                "data": {"train": "x"},
                "train": {"output_dir": "x"},
                "optim": {"fused": "yes"},
            }
        )


def test_fused_adamw_matches_foreach(tiny_world, tmp_path):
    fused = train(_cfg(tiny_world, tmp_path / "fused", fused=True))
    foreach = train(_cfg(tiny_world, tmp_path / "foreach", fused=False))
    assert fused.losses == pytest.approx(foreach.losses, rel=1e-5, abs=1e-6)
    a, b = _trained(tmp_path / "fused"), _trained(tmp_path / "foreach")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_fused_resume_is_exact_and_a_foreach_checkpoint_resumes_fused(tiny_world, tmp_path):
    full = train(_cfg(tiny_world, tmp_path / "full", fused=True))
    first = train(_cfg(tiny_world, tmp_path / "split", fused=True, stop_after_steps=2))
    second = train(_cfg(tiny_world, tmp_path / "split", fused=True))
    assert first.losses + second.losses == full.losses  # bit-identical on CPU

    # A checkpoint written by a foreach run (older runs, or optim.fused=false) continues under fused: same state.
    train(_cfg(tiny_world, tmp_path / "mixed", fused=False, stop_after_steps=2))
    trainer = Trainer(_cfg(tiny_world, tmp_path / "mixed", fused=True), DistEnv())
    assert trainer.start_step == 2
    groups = trainer.optimizer.param_groups
    assert all(g["fused"] is True and not g["foreach"] for g in groups)
    resumed = trainer.run()
    assert first.losses + resumed.losses == pytest.approx(full.losses, rel=1e-5, abs=1e-6)


def test_train_mode_comes_back_after_validation(tiny_world, tmp_path):
    c = tiny_config(
        tiny_world,
        tmp_path,
        stage=2,
        train={"max_steps": 3, "eval_every": 1, "micro_batch_size": 8},
        data={"val": str(tiny_world["val"])},
    )
    trainer = Trainer(train_config_from_dict(c), DistEnv())
    modes = []
    step = trainer._train_step

    def spy(micro):
        out = step(micro)
        modes.append((trainer.model.language_model.training, trainer.model.vision.training))
        return out

    trainer._train_step = spy
    result = trainer.run()
    assert len(result.val_losses) == 3
    assert modes == [(True, False)] * 3  # LM trains, frozen vision stays in eval, after every validation
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum("val_loss" in r for r in records) == 3


def _attention_run(world, out, implementation):
    c = tiny_config(world, out, stage=2, train={"max_steps": 3, "micro_batch_size": 8}, optim={})
    c["model"]["attn_implementation"] = implementation
    c["train"]["save_model"] = True
    trainer = Trainer(train_config_from_dict(c), DistEnv())
    return trainer, trainer.run().losses


def test_attention_kernel_is_switchable_and_computes_the_same_losses(tiny_world, tmp_path):
    default, losses = _attention_run(tiny_world, tmp_path / "default", None)
    eager, eager_losses = _attention_run(tiny_world, tmp_path / "eager", "eager")
    assert eager.model.language_model.config._attn_implementation == "eager"
    assert eager.model.vision.model.config._attn_implementation == "eager"
    assert default.model.language_model.config._attn_implementation == "sdpa"
    assert eager_losses == pytest.approx(losses, rel=1e-5)
    saved = json.loads((tmp_path / "eager" / "model" / "config.json").read_text())
    assert "attn_implementation" not in json.dumps(saved)  # a runtime choice, not saved with the model


def test_unknown_attention_kernel_is_a_clear_error(tiny_world, tmp_path):
    with pytest.raises(VistuneError, match=r"model.attn_implementation='flash_nope'"):
        _attention_run(tiny_world, tmp_path / "bad", "flash_nope")
