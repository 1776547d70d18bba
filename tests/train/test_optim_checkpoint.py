"""Optimizer groups, schedule and the atomic, exact checkpoint round trip (no model package needed)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from vistune.errors import VistuneError
from vistune.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vistune.train.config import OptimConfig
from vistune.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups


class ThreeParts(nn.Module):
    """Named like VistuneModel's parts, so the grouping by part can be checked."""

    def __init__(self) -> None:
        super().__init__()
        self.vision = nn.Linear(3, 4)
        self.projector = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5))
        self.language_model = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.language_model(self.projector(self.vision(x)))


def test_param_groups_split_parts_lrs_and_decay():
    model = ThreeParts()
    model.vision.requires_grad_(False)
    groups = param_groups(model.named_parameters(), OptimConfig(lr=2e-5, projector_lr=1e-3, weight_decay=0.1))
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"projector", "projector.no_decay", "language_model", "language_model.no_decay"}
    assert by_name["projector"]["lr"] == 1e-3 and by_name["language_model"]["lr"] == 2e-5
    assert (
        by_name["projector.no_decay"]["weight_decay"] == 0.0 and by_name["projector"]["weight_decay"] == 0.1
    )
    # the LayerNorm weight is 1-D: not decayed
    assert any(p is model.projector[1].weight for p in by_name["projector.no_decay"]["params"])


def test_cosine_schedule_warms_up_then_decays_to_zero():
    f = [lr_factor(s, warmup=3, total=13, schedule="cosine") for s in range(14)]
    assert f[0] > 0 and f[0] < f[1] < f[2] < 1.0  # warmup never starts at lr 0
    assert f[3] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[3:], f[4:], strict=False))
    assert f[13] == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(10, warmup=0, total=10, schedule="constant") == 1.0


def _train(model, opt, sched, steps, gen):
    losses = []
    for _ in range(steps):
        x = torch.randn(4, 3, generator=gen)
        # dropout draws from the global RNG, which the checkpoint must restore
        loss = nn.functional.dropout(model(x), 0.5).pow(2).mean() + random.random() * 0 + np.random.rand() * 0
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def _setup(seed=0):
    torch.manual_seed(seed)
    model = ThreeParts()
    model.vision.requires_grad_(False)
    cfg = OptimConfig(lr=1e-2, weight_decay=0.01)
    opt = build_optimizer(model, cfg)
    return model, opt, build_scheduler(opt, cfg, total_steps=10)


def test_checkpoint_resume_continues_exactly(tmp_path):
    model, opt, sched = _setup()
    torch.manual_seed(1)
    full = _train(model, opt, sched, 10, torch.Generator().manual_seed(5))

    model, opt, sched = _setup()
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(5)
    first = _train(model, opt, sched, 4, gen)
    save_checkpoint(
        tmp_path, step=4, model=model, optimizer=opt, scheduler=sched, extra={"gen": gen.get_state().tolist()}
    )
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.name == "step_0000004"
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))

    # Frozen parts are rebuilt from the config (same seed); the trainable ones must come from the checkpoint.
    model, opt, sched = _setup()
    with torch.no_grad():
        model.projector[0].weight.add_(1.0)
    torch.manual_seed(999)
    state = load_checkpoint(ckpt, model=model, optimizer=opt, scheduler=sched)
    gen = torch.Generator()
    gen.set_state(torch.tensor(state.extra["gen"], dtype=torch.uint8))
    rest = _train(model, opt, sched, 6, gen)
    assert first + rest == full


def test_incomplete_checkpoint_is_ignored_and_world_size_checked(tmp_path):
    model, opt, sched = _setup()
    save_checkpoint(tmp_path, step=2, model=model, optimizer=opt, scheduler=sched, extra={})
    (tmp_path / "checkpoints" / "step_0000009.tmp").mkdir()  # a run killed mid-write
    (tmp_path / "checkpoints" / "step_0000008").mkdir()  # no state.json
    assert latest_checkpoint(tmp_path).name == "step_0000002"
    with pytest.raises(VistuneError, match="process"):
        load_checkpoint(
            latest_checkpoint(tmp_path), model=model, optimizer=opt, scheduler=sched, world_size=2
        )


def test_keep_prunes_old_checkpoints(tmp_path):
    model, opt, sched = _setup()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step=step, model=model, optimizer=opt, scheduler=sched, extra={}, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000002", "step_0000003"]
