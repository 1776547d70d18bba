"""Multi-process training on torch's own engines: DDP, or FSDP2 (`fully_shard`) for LLMs too big for one device.

Launch with `torchrun --nproc_per_node N --no-python vistune train ...` (or `accelerate launch` with a multi-GPU config,
which sets the same environment). One process per device; on CPU the gloo backend is used.
"""

from __future__ import annotations

import dataclasses
import json
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from vistune.errors import VistuneError
from vistune.train.config import DistConfig


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits. `world_size == 1` and no process group: plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None) -> DistEnv:
    """Read torchrun's environment; start the process group when there is more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum over processes (in place on a copy); a no-op for one process."""
    value = value.detach().clone()
    if env.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def resolve_dist(cfg: DistConfig, *, global_batch: int, micro_batch: int, world_size: int) -> DistConfig:
    """The effective settings: the config, overridden by an `accelerate launch` FSDP config (environment) or
    mapped from a DeepSpeed ZeRO config file."""
    env = os.environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and cfg.deepspeed is None:
        path = env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
        if path:
            cfg = dataclasses.replace(cfg, deepspeed=path)
        else:
            stage = int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2"))
            return dataclasses.replace(cfg, strategy="fsdp", reshard_after_forward=stage >= 3)
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return dataclasses.replace(
            cfg,
            strategy="fsdp",
            reshard_after_forward=env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "true",
            cpu_offload=env.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true",
        )
    if cfg.deepspeed is not None:
        return _from_deepspeed(cfg, global_batch=global_batch, micro_batch=micro_batch, world_size=world_size)
    return cfg


def _from_deepspeed(cfg: DistConfig, *, global_batch: int, micro_batch: int, world_size: int) -> DistConfig:
    path = Path(cfg.deepspeed or "")
    try:
        ds = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise VistuneError(
            f"train.dist.deepspeed: cannot read {path} as a DeepSpeed JSON config ({err})"
        ) from None
    expected = {
        "train_batch_size": global_batch,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": global_batch // (micro_batch * world_size),
    }
    for key, ours in expected.items():
        value = ds.get(key, "auto")
        if value != "auto" and int(value) != ours:
            raise VistuneError(
                f"{path}: {key}={value} but this run has {ours} (from train.global_batch_size / "
                f'train.micro_batch_size and {world_size} process(es)); set it to "auto" or make them agree'
            )
    zero = ds.get("zero_optimization", {})
    stage = int(zero.get("stage", 0))
    offload = any(
        zero.get(k, {}).get("device", "none") == "cpu" for k in ("offload_param", "offload_optimizer")
    )
    if stage == 0:  # plain data parallelism
        return dataclasses.replace(cfg, strategy="ddp")
    return dataclasses.replace(cfg, strategy="fsdp", reshard_after_forward=stage >= 3, cpu_offload=offload)


def wrap_model(model: nn.Module, env: DistEnv, cfg: DistConfig) -> nn.Module:
    """DDP or FSDP2 around `model` (unchanged for one process).

    Every trainable parameter gets a gradient in every micro-batch (the trainer gives the image path a zero term
    in text-only batches), so DDP needs no `find_unused_parameters` graph walk.
    """
    if not env.distributed:
        return model
    if cfg.strategy == "ddp":
        device_ids = [env.device.index] if env.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return _fully_shard(model, cfg)


def _fully_shard(model: nn.Module, cfg: DistConfig) -> nn.Module:
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    kwargs = {
        "reshard_after_forward": cfg.reshard_after_forward,
        "offload_policy": CPUOffloadPolicy() if cfg.cpu_offload else OffloadPolicy(),
    }
    # Shard each decoder layer (the unit of compute), then the root: the root's forward is what unshards the
    # remaining parameters (embeddings, head, vision tower, projector), and VistuneModel reaches the embeddings
    # directly (to splice images in), not through the language model's forward.
    for layer in _decoder_layers(model.language_model):
        fully_shard(layer, **kwargs)
    # The root keeps its parameters gathered from forward to backward (FSDP's default for a root): the trainer's
    # zero term for text-only batches reads the projector's parameters between the two, which must not trigger
    # a collective that only some processes run.
    fully_shard(model, offload_policy=kwargs["offload_policy"])
    return model


def _decoder_layers(lm: nn.Module) -> list[nn.Module]:
    for module in lm.modules():
        if isinstance(module, nn.ModuleList) and len(module) and "Layer" in type(module[0]).__name__:
            return list(module)
    raise VistuneError(
        f"FSDP: no decoder layer list found in {type(lm).__name__}; use train.dist.strategy=ddp"
    )


def no_sync(model: nn.Module, sync: bool) -> AbstractContextManager:
    """Skip DDP's gradient all-reduce on accumulation micro-batches (only the last one of a step syncs)."""
    if not sync and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return nullcontext()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
