"""Resumable checkpoints, written atomically: a temp directory renamed into place once complete.

A checkpoint holds everything a run needs to continue as if never stopped:
  trainable.safetensors   the trainable parameters (frozen parts are rebuilt from the run's config)
  optimizer.safetensors   AdamW moments, one tensor per (parameter, slot), keyed by parameter name
  rng_rank{R}.safetensors torch (and CUDA) generator states of each process
  state.json              step, scheduler, optimizer hyper-parameters, Python/NumPy RNG, data statistics
A directory without `state.json` (a run killed mid-write leaves only `*.tmp-*`) is never picked up.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from vistune.errors import VistuneError

_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class ResumeState:
    """What `load_checkpoint` restores besides tensors: where the run stopped and what it had logged."""

    step: int
    extra: dict[str, Any]


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step:07d}"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint under `output_dir/checkpoints`, or None."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / "state.json").is_file()]
    return max(done, key=lambda p: int(_STEP_DIR.match(p.name).group(1)), default=None)  # type: ignore[union-attr]


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A plain CPU tensor; an FSDP-sharded DTensor is gathered first (a collective: every process must call)."""
    if isinstance(t, DTensor):
        t = t.full_tensor()
    return t.detach().to("cpu").contiguous()


def _like(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """`full` sharded like `param` when param is an FSDP DTensor (so it can be copied into it)."""
    if isinstance(param, DTensor) and not isinstance(full, DTensor) and full.shape == param.shape:
        # Every process read the same file: each cuts its own shard, no communication (src_data_rank=None).
        return distribute_tensor(
            full.to(param.device), param.device_mesh, param.placements, src_data_rank=None
        )
    return full


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in model.parameters())


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (contiguous CPU copies, as safetensors needs)."""
    return {n: full_tensor(p) for n, p in model.named_parameters() if p.requires_grad}


def _optimizer_tensors(
    optimizer: torch.optim.Optimizer, names: dict[int, str]
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Optimizer state -> flat `{param_name/slot: tensor}` plus the param groups with names instead of ids."""
    state = optimizer.state_dict()
    flat = {}
    for idx, slots in state["state"].items():
        for slot, value in slots.items():
            flat[f"{names[idx]}/{slot}"] = full_tensor(torch.as_tensor(value))
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    return flat, groups


def _param_index_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[int, str]:
    # state_dict() numbers parameters in group order; map those numbers to stable parameter names.
    by_id = {id(p): n for n, p in model.named_parameters()}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    return {i: by_id[id(p)] for i, p in enumerate(params)}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    json_state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, json_state


def _set_rng_state(tensors: dict[str, torch.Tensor], json_state: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = json_state["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, *rest = json_state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


def save_checkpoint(
    output_dir: str | Path,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    extra: dict[str, Any],
    rank: int = 0,
    world_size: int = 1,
    barrier: Any = None,
    keep: int | None = None,
) -> Path:
    """Write a checkpoint atomically. Every process calls this (each saves its RNG); rank 0 writes the rest.

    `barrier` (a callable) synchronizes processes; rank 0 renames the temp dir only after all have written.
    """
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if barrier:
        barrier()
    rng_tensors, rng_json = _rng_state()
    save_file(rng_tensors, str(tmp / f"rng_rank{rank}.safetensors"))
    (tmp / f"rng_rank{rank}.json").write_text(json.dumps(rng_json))
    # FSDP shards must be gathered by every process; replicated (DDP) weights are read on rank 0 alone.
    if rank == 0 or is_sharded(model):
        weights = trainable_state(model)
        flat, groups = _optimizer_tensors(optimizer, _param_index_names(optimizer, model))
    if rank == 0:
        save_file(weights, str(tmp / "trainable.safetensors"))
        save_file(flat, str(tmp / "optimizer.safetensors"))
        state = {
            "step": step,
            "world_size": world_size,
            "optimizer_groups": groups,
            "scheduler": scheduler.state_dict(),
            "extra": extra,
        }
        (tmp / "state.json").write_text(json.dumps(state, indent=1, default=_json_default))
    if barrier:
        barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # atomic on one filesystem: a reader sees the old state or the new, never half
        if keep:
            _prune(Path(output_dir) / "checkpoints", keep)
    if barrier:
        barrier()
    return final


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _prune(root: Path, keep: int) -> None:
    done = sorted(
        (p for p in root.iterdir() if _STEP_DIR.match(p.name)),
        key=lambda p: int(_STEP_DIR.match(p.name).group(1)),  # type: ignore[union-attr]
    )
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rank: int = 0,
    world_size: int = 1,
) -> ResumeState:
    """Restore model (trainable part), optimizer, scheduler and RNG from `path`; strict about names and shapes."""
    path = Path(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise VistuneError(f"{path} is not a complete checkpoint (no state.json); resume from another one")
    state = json.loads(state_file.read_text())
    if state["world_size"] != world_size:
        raise VistuneError(
            f"{path} was written by {state['world_size']} process(es) but this run has {world_size}; the RNG "
            f"streams differ per process, so resume with the same process count for an exact continuation"
        )
    _load_trainable(path / "trainable.safetensors", model)
    _load_optimizer(path / "optimizer.safetensors", state["optimizer_groups"], optimizer, model)
    scheduler.load_state_dict(state["scheduler"])
    rng_json = json.loads((path / f"rng_rank{rank}.json").read_text())
    _set_rng_state(load_file(str(path / f"rng_rank{rank}.safetensors")), rng_json)
    return ResumeState(step=state["step"], extra=state["extra"])


def _load_trainable(file: Path, model: nn.Module) -> None:
    saved = load_file(str(file))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(saved)), sorted(set(saved) - set(params))
    if missing or unexpected:
        raise VistuneError(
            f"{file}: the checkpoint's trainable parameters do not match this run's (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}); resume with the config the checkpoint was written with"
        )
    with torch.no_grad():
        for name, param in params.items():
            if saved[name].shape != param.shape:
                raise VistuneError(
                    f"{file}: {name} has shape {tuple(saved[name].shape)}, model {tuple(param.shape)}"
                )
            param.copy_(_like(saved[name], param))


def _load_optimizer(
    file: Path, groups: list[dict], optimizer: torch.optim.Optimizer, model: nn.Module
) -> None:
    flat = load_file(str(file))
    index_of = {name: i for i, name in _param_index_names(optimizer, model).items()}
    params = dict(model.named_parameters())
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        name, slot = key.rsplit("/", 1)
        state.setdefault(index_of[name], {})[slot] = _like(tensor, params[name])
    param_groups = [{**g, "params": [index_of[n] for n in g["params"]]} for g in groups]
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
