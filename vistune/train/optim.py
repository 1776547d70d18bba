"""AdamW with one learning rate per model part, and the warmup + cosine schedule.

Which parts train is decided by `VistuneModel.set_trainable` (the one place); this module only groups the
parameters that already require gradients, by part and by weight decay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from vistune.errors import VistuneError
from vistune.train.config import OptimConfig

PARTS = ("vision", "projector", "language_model")


def part_of(name: str) -> str:
    """The model part a parameter belongs to, from its name in `VistuneModel.named_parameters()`."""
    head = name.split(".", 1)[0]
    if head not in PARTS:
        raise ValueError(f"parameter {name!r} is in none of the model parts {PARTS}")
    return head


def _decays(name: str, param: nn.Parameter) -> bool:
    # Biases and norm scales (1-D) are not decayed, as in every modern LM recipe.
    return param.ndim >= 2 and not name.endswith(".bias")


def param_groups(named: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig) -> list[dict]:
    """Group trainable parameters by (part, decay); each group carries its part's learning rate."""
    lrs = cfg.part_lrs
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in named:
        if param.requires_grad:
            groups.setdefault((part_of(name), _decays(name, param)), []).append(param)
    return [
        {
            "params": params,
            "lr": lrs[part],
            "weight_decay": cfg.weight_decay if decay else 0.0,
            "name": f"{part}{'' if decay else '.no_decay'}",
        }
        for (part, decay), params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    groups = param_groups(model.named_parameters(), cfg)
    if not groups:
        raise ValueError("no trainable parameters: check model.trainable and the learning rates")
    fused = use_fused([p for g in groups for p in g["params"]], cfg.fused)
    try:
        return torch.optim.AdamW(groups, betas=cfg.betas, eps=cfg.eps, **implementation(fused))
    except RuntimeError as err:  # optim.fused=true where torch has no fused kernel for these parameters
        raise VistuneError(f"optim.fused=true: {err}; use optim.fused=auto or false") from None


def implementation(fused: bool) -> dict[str, bool | None]:
    """AdamW's implementation flags: fused (one kernel over all parameters) or foreach (per-group kernels)."""
    return {"fused": True, "foreach": None} if fused else {"fused": None, "foreach": True}


def use_fused(params: list[torch.Tensor], setting: bool | str) -> bool:
    """optim.fused resolved: auto = fused when every parameter is a plain floating-point tensor on a device with
    torch's fused AdamW kernel (CPU, CUDA, ...); FSDP's sharded DTensors keep foreach."""
    if setting != "auto":
        return bool(setting)
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    devices = _get_fused_kernels_supported_devices()
    return all(
        type(p) in (torch.Tensor, nn.Parameter) and p.is_floating_point() and p.device.type in devices
        for p in params
    )


def set_implementation(optimizer: torch.optim.Optimizer, fused: bool) -> None:
    """Put the implementation flags back after `load_state_dict` (which restores the saved run's flags): the
    state itself (step, exp_avg, exp_avg_sq) is the same for both, so a checkpoint resumes under either."""
    for group in optimizer.param_groups:
        group.update(implementation(fused))
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if fused and "step" in state:  # fused keeps the step count as float32 on the parameter's device
                state["step"] = state["step"].to(device=param.device, dtype=torch.float32)
    optimizer._step_supports_amp_scaling = fused  # type: ignore[attr-defined]  # what AdamW.__init__ sets


def warmup_steps(cfg: OptimConfig, total_steps: int) -> int:
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    return math.ceil(cfg.warmup_ratio * total_steps)


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the base lr after `step` optimizer steps: linear warmup, then cosine to 0 (as HF/LLaVA)."""
    if step < warmup:
        return (step + 1) / (warmup + 1) if warmup else 1.0
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> LambdaLR:
    warmup = warmup_steps(cfg, total_steps)
    return LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup=warmup, total=total_steps, schedule=cfg.schedule)
    )
