"""The training loop for both LLaVA stages (they differ only by config).

Loss weighting: every optimizer step averages the cross-entropy over all supervised tokens of the *global* batch
(all micro-batches of all processes), like one big batch would: each micro-batch contributes its summed token loss
divided by the global token count. The count is known before any forward (it is in the labels), so it is summed
over processes first. DDP averages gradients over processes, hence the extra factor `world_size`. This makes
gradient accumulation and any process count give the same update as a single process with the same global batch.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from vistune.data.dataset import Batch, Collator, GlobalBatchPlan, LlavaDataset, split_global_batch
from vistune.data.images import load_image
from vistune.data.records import read_records
from vistune.errors import VistuneError
from vistune.train import distributed as D
from vistune.train.checkpoint import (
    full_tensor,
    is_sharded,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from vistune.train.components import (
    apply_trainability,
    build_components,
    count_parameters,
    save_projector,
)
from vistune.train.config import TrainConfig
from vistune.train.metrics import MetricsLogger, plot_loss
from vistune.train.optim import build_optimizer, build_scheduler, set_implementation

# Config fields that must not change between a checkpoint and its resumption (the data order depends on them).
_RESUME_INVARIANTS = ("train.seed", "train.global_batch_size", "data.train", "data.group_by_modality_length")


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    losses: list[float]  # training loss of each step run in this call
    val_losses: list[float] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) one training stage. Works alone or under `torchrun --nproc_per_node N`."""
    env = D.init_distributed(cfg.train.dist.backend)
    try:
        return Trainer(cfg, env).run()
    finally:
        D.shutdown(env)


class Trainer:
    """One stage's run: everything is built in `__init__` (model, data, plan, optimizer, resume); `run()` trains."""

    def __init__(self, cfg: TrainConfig, env: D.DistEnv) -> None:
        self.cfg = cfg
        self.env = env
        self.out = Path(cfg.train.output_dir)
        self.bad_records: list[dict[str, str]] = []
        # Seeded before building, so randomly initialized weights are identical in every process.
        _seed_everything(cfg.train.seed)
        self.parts = build_components(cfg.model, template=cfg.data.template, seed=cfg.train.seed)
        apply_trainability(self.parts.model, cfg.model, cfg.optim)
        self.model = self.parts.model.to(env.device)
        self.dataset = self._dataset(cfg.data.train)
        self.val_dataset = self._dataset(cfg.data.val) if cfg.data.val else None
        if cfg.data.cache_vision_features:
            self._use_feature_cache()
        self.micro, self.accum = _micro_and_accum(cfg, env.world_size)
        self.plan = GlobalBatchPlan(
            self.dataset.lengths,
            self.dataset.has_image,
            cfg.train.global_batch_size,
            seed=cfg.train.seed,
            group_by_modality=cfg.data.group_by_modality_length,
            min_batch_size=env.world_size,
        )
        self.total_steps = self.plan.total_steps(cfg.train.epochs, cfg.train.max_steps)
        # Wrap before building the optimizer: FSDP replaces the parameters with sharded ones.
        self.dist = D.resolve_dist(
            cfg.train.dist,
            global_batch=cfg.train.global_batch_size,
            micro_batch=self.micro,
            world_size=env.world_size,
        )
        if self.model.share_prompt_prefix and env.distributed and self.dist.strategy == "fsdp":
            # Measured (tests/train/test_distributed.py): FSDP2 frees a layer's gathered weights after its forward,
            # so the prefix's pass leaves backward nothing to read ("storage of size 0").
            raise VistuneError(
                "model.share_prompt_prefix does not work with FSDP (train.dist.strategy=fsdp, a DeepSpeed config, "
                "or an accelerate FSDP launch): each decoder layer would run twice in one forward, and FSDP frees "
                "its gathered weights after the first; set model.share_prompt_prefix=false, or train with DDP"
            )
        self.wrapped = D.wrap_model(self.model, env, self.dist)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.total_steps)
        self.autocast, self.scaler = _precision(cfg.train.precision, env.device)
        self.start_step = self._maybe_resume()
        self.collator = Collator(self.parts.tokenizer.pad_token_id)
        self._in_train_mode = False  # set by `_set_train_mode`, cleared by `_validate`

    # ------------------------------------------------------------------------------------------------- setup
    def _dataset(self, path: str) -> LlavaDataset:
        cfg = self.cfg.data
        records = read_records(path, limit=cfg.max_records)
        ds = LlavaDataset(
            records,
            tokenizer=self.parts.tokenizer,
            template=self.parts.template,
            num_image_tokens=self.model.num_image_tokens,
            image_token_id=self.model.image_token_id,
            image_folder=cfg.image_folder,
            image_processor=self.parts.image_processor,
            load_image=load_image,
            max_length=cfg.model_max_length,
            on_bad_record=cfg.on_bad_record,
            source=str(path),
        )
        if not len(ds):
            raise VistuneError(f"{path}: no usable records ({ds.report.summary()})")
        self.bad_records += ds.report.bad
        self._say(ds.report.summary())
        return ds

    def _use_feature_cache(self) -> None:
        from vistune.data.features import open_feature_cache

        cache_dir = self.cfg.data.feature_cache_dir or str(self.out / "feature_cache")
        datasets = [d for d in (self.dataset, self.val_dataset) if d is not None]
        paths = [p for d in datasets for p in d.image_paths()]
        bad: set[str] = set()

        def on_bad(path: str, err: Exception) -> None:
            if self.cfg.data.on_bad_record == "error":
                raise err
            bad.add(path)

        # The main process computes what is missing; the others then find everything in the index.
        for turn in (True, False):
            if self.env.is_main == turn:
                t0 = time.perf_counter()
                cache = open_feature_cache(
                    paths,
                    model=self.model,
                    image_processor=self.parts.image_processor,
                    load_image=load_image,
                    cache_dir=cache_dir,
                    dtype=self.cfg.data.feature_cache_dtype,
                    on_bad_image=on_bad,
                )
                self._say(
                    f"feature cache {cache.root}: {len(cache.index)} images ({time.perf_counter() - t0:.1f} s)"
                )
            D.barrier(self.env)
        for d in datasets:
            n_before = len(d.report.bad)
            d.drop_images(bad)
            self.bad_records += d.report.bad[n_before:]
            d.features = cache

    def _maybe_resume(self) -> int:
        resume = self.cfg.train.resume
        path = latest_checkpoint(self.out) if resume == "auto" else (Path(resume) if resume else None)
        if path is None:
            return 0
        state = load_checkpoint(
            path,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            rank=self.env.rank,
            world_size=self.env.world_size,
        )
        _check_resume_config(state.extra.get("config", {}), self.cfg.to_dict(), path)
        # The checkpoint restored its run's AdamW flags; this run's optim.fused decides (same state either way).
        set_implementation(self.optimizer, bool(self.optimizer.defaults["fused"]))
        self.bad_records = state.extra.get("bad_records", self.bad_records)
        self._say(f"resumed from {path} at step {state.step}")
        return state.step

    # ------------------------------------------------------------------------------------------------- loop
    def run(self) -> TrainResult:
        cfg = self.cfg.train
        if self.env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        logger = MetricsLogger(
            self.out,
            total_steps=self.total_steps,
            start_step=self.start_step,
            enabled=self.env.is_main,
            progress=cfg.progress,
            tensorboard=cfg.tensorboard,
        )
        result = TrainResult(self.out, self.start_step, [])
        batches = iter(self._loader(self.dataset, self._micro_batches(self.start_step)))
        step = self.start_step
        try:
            while step < self.total_steps:
                micro = [next(batches) for _ in range(len(self._split(step)))]
                loss, grad_norm, samples = self._train_step(micro)
                step += 1
                result.losses.append(loss)
                if step % cfg.log_every == 0 or step == self.total_steps:
                    lr = self.scheduler.get_last_lr()[-1]
                    logger.step(step, samples=samples, loss=loss, lr=lr, grad_norm=grad_norm)
                if cfg.eval_every and self.val_dataset is not None and step % cfg.eval_every == 0:
                    result.val_losses.append(self._validate(step, logger))
                stop = cfg.stop_after_steps is not None and step >= cfg.stop_after_steps
                if (cfg.save_every and step % cfg.save_every == 0) or (stop and step < self.total_steps):
                    self._checkpoint(step)
                if stop and step < self.total_steps:
                    result.stopped_early = True
                    break
        finally:
            logger.close()
        result.steps = step
        if not result.stopped_early:
            if self.val_dataset is not None and not (cfg.eval_every and step % cfg.eval_every == 0):
                result.val_losses.append(self._validate(step, logger))
            result.summary = self._finish(step)
        return result

    def _split(self, step: int) -> list[list[int]]:
        return split_global_batch(
            self.plan.batch_at(step),
            micro_batch_size=self.micro,
            rank=self.env.rank,
            world_size=self.env.world_size,
        )

    def _micro_batches(self, start: int) -> Iterator[list[int]]:
        for step in range(start, self.total_steps):
            yield from self._split(step)

    def _loader(self, dataset: LlavaDataset, batch_sampler: Any) -> DataLoader:
        # batch_sampler yields this process's micro-batches in training order; workers only prefetch them.
        workers = self.cfg.data.num_workers
        return DataLoader(
            dataset,
            batch_sampler=_Iterable(batch_sampler),
            collate_fn=self.collator,
            num_workers=workers,
            prefetch_factor=4 if workers else None,
            # Its own generator: creating a loader must not draw from the global RNG (dropout's), or a resumed
            # run, which creates its loader at another step, would see a shifted random stream.
            generator=torch.Generator().manual_seed(self.cfg.train.seed),
        )

    def _train_step(self, micro: list[Batch]) -> tuple[float, float, int]:
        """One optimizer step over this process's micro-batches -> (global mean token loss, grad norm, samples)."""
        self._set_train_mode()
        self._note_dropped(micro)
        counts = torch.tensor(
            [sum(b.num_tokens for b in micro), sum(len(b) for b in micro)], dtype=torch.float64
        )
        global_tokens, global_samples = D.all_reduce_sum(counts, self.env).tolist()
        scale = self.env.world_size / max(global_tokens, 1.0)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.env.device)
        live = [b for b in micro if len(b)]
        for k, batch in enumerate(live):
            with D.no_sync(self.wrapped, sync=k == len(live) - 1):
                with self.autocast:
                    out = self.wrapped(**batch.model_inputs(self.env.device))
                token_loss_sum = out.loss.float() * out.num_supervised_tokens  # mean -> sum over this batch
                objective = token_loss_sum * scale
                if batch.pixel_values is None and batch.vision_features is None:
                    # A text-only batch never reaches the image path; a zero-valued term gives its trainable
                    # parameters a (zero) gradient, so DDP and FSDP reduce the same tensors in every process
                    # (and stage 1, where nothing else trains, still has a graph to run backward through).
                    objective = objective + self._zero_touch()
                self.scaler.scale(objective).backward()
            loss_sum += token_loss_sum.detach().double()
        grad_norm = self._optimizer_step()
        loss = float(D.all_reduce_sum(loss_sum, self.env)) / max(global_tokens, 1.0)
        if not np.isfinite(loss):
            raise VistuneError(
                f"training loss became {loss}; lower optim.lr or check the data (step batch {micro[0].record_ids[:4]})"
            )
        return loss, grad_norm, int(global_samples)

    def _zero_touch(self) -> torch.Tensor:
        image_path = [*self.model.vision.parameters(), *self.model.projector.parameters()]
        return sum(p.sum() * 0.0 for p in image_path if p.requires_grad)  # type: ignore[return-value]

    def _optimizer_step(self) -> float:
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.optim.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def _set_train_mode(self) -> None:
        # Only at the start and after validation is there anything to do: walking every module each step costs a
        # noticeable share of a tiny model's step.
        if self._in_train_mode:
            return
        self._in_train_mode = True
        self.model.train()
        # VistuneModel keeps frozen parts in eval mode; but LoRA dropout and HF gradient checkpointing only act in
        # train mode, so a frozen language model that carries adapters or checkpointing is put back in train mode.
        if self.cfg.model.lora.enabled or self.cfg.model.gradient_checkpointing:
            self.model.language_model.train()

    def _note_dropped(self, micro: list[Batch]) -> None:
        for batch in micro:
            for bad in batch.dropped:
                self.bad_records.append(bad)
                if self.env.is_main:
                    from tqdm.auto import tqdm

                    tqdm.write(f"skipped record {bad['id']}: {bad['reason']}")

    # ------------------------------------------------------------------------------------------------- eval
    @torch.no_grad()
    def _validate(self, step: int, logger: MetricsLogger) -> float:
        """Token-weighted mean loss over the whole validation set (shared between processes)."""
        assert self.val_dataset is not None
        self._in_train_mode = False
        self.model.eval()
        order = sorted(range(len(self.val_dataset)), key=lambda i: -self.val_dataset.lengths[i])
        mine = order[self.env.rank :: self.env.world_size]
        chunks = [mine[i : i + self.micro] for i in range(0, len(mine), self.micro)]
        totals = torch.zeros(2, dtype=torch.float64, device=self.env.device)
        for batch in self._loader(self.val_dataset, chunks):
            if not len(batch):
                continue
            with self.autocast:
                out = self.model(**batch.model_inputs(self.env.device))
            totals += torch.stack(
                [out.loss.double() * out.num_supervised_tokens, out.num_supervised_tokens.double()]
            )
        loss_sum, tokens = D.all_reduce_sum(totals, self.env).tolist()
        val_loss = loss_sum / max(tokens, 1.0)
        logger.log(step, val_loss=val_loss)
        return val_loss

    # ------------------------------------------------------------------------------------------------- saving
    def _checkpoint(self, step: int) -> None:
        save_checkpoint(
            self.out,
            step=step,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            extra={"config": self.cfg.to_dict(), "bad_records": self.bad_records},
            rank=self.env.rank,
            world_size=self.env.world_size,
            barrier=lambda: D.barrier(self.env),
            keep=self.cfg.train.keep_checkpoints,
        )

    def _finish(self, step: int) -> dict[str, Any]:
        """Final artifacts (main process): projector, model or adapter, loss PNG, bad records, summary."""
        self._checkpoint(step)
        summary: dict[str, Any] = {}
        model = self._whole_model()
        if self.env.is_main:
            summary = self._write_outputs(step, model)
        D.barrier(self.env)
        return summary

    def _whole_model(self) -> Any:
        """The model with whole (unsharded) weights for saving: itself, or under FSDP an unsharded rebuild on the
        main process that receives the gathered weights (gathering is a collective, so every process takes part)."""
        if not is_sharded(self.model):
            return self.model
        state = {k: full_tensor(v) for k, v in self.model.state_dict().items()}
        if not self.env.is_main:
            return None
        parts = build_components(self.cfg.model, template=self.parts.template, seed=self.cfg.train.seed)
        apply_trainability(parts.model, self.cfg.model, self.cfg.optim)
        parts.model.load_state_dict(state, strict=True)
        return parts.model

    def _write_outputs(self, step: int, model: Any) -> dict[str, Any]:
        cfg = self.cfg
        if model.trainable.projector:
            save_projector(model, self.out)
        if cfg.model.lora.enabled:
            from vistune.train.lora import save_adapter

            save_adapter(
                model,
                cfg.model.lora,
                self.out / "adapter",
                base=_base_section(cfg),
                template=self.parts.template,
                seed=cfg.train.seed,
            )
        elif cfg.train.save_model:
            from vistune.model.io import save_pretrained

            save_pretrained(self.out / "model", model, self.parts.tokenizer, self.parts.image_processor)
        plot_loss(self.out / "metrics.jsonl", self.out / "loss.png")
        with (self.out / "bad_records.jsonl").open("w") as f:
            f.writelines(json.dumps(b) + "\n" for b in self.bad_records)
        summary = {
            "steps": step,
            "parameters": count_parameters(model),
            "data": {"train": dataclasses.asdict(self.dataset.report)},
            "bad_records": len(self.bad_records),
        }
        if self.val_dataset is not None:
            summary["data"]["val"] = dataclasses.asdict(self.val_dataset.report)
        (self.out / "train_summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    def _say(self, text: str) -> None:
        if self.env.is_main:
            from tqdm.auto import tqdm

            tqdm.write(text)


# --------------------------------------------------------------------------------------------------- helpers


class _Iterable:
    """Wraps a generator so DataLoader can use it as a batch sampler (it only iterates it once)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.source)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _micro_and_accum(cfg: TrainConfig, world_size: int) -> tuple[int, int]:
    g, m = cfg.train.global_batch_size, cfg.train.micro_batch_size
    if g % (m * world_size):
        raise VistuneError(
            f"train.global_batch_size={g} is not a multiple of train.micro_batch_size={m} x {world_size} "
            f"process(es); pick sizes so that global = micro x processes x accumulation steps"
        )
    return m, g // (m * world_size)


def _precision(name: str, device: torch.device) -> tuple[AbstractContextManager, Any]:
    """The autocast context and gradient scaler for `train.precision` (auto: bf16 where CUDA supports it)."""
    if name == "auto":
        name = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp32":
        return nullcontext(), torch.amp.GradScaler(enabled=False)
    dtype = torch.bfloat16 if name == "bf16" else torch.float16
    # fp16 needs loss scaling (its range is narrow); bf16 does not.
    scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
    return torch.autocast(device.type, dtype=dtype), scaler


def _get(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part, {}) if isinstance(data, dict) else {}
    return data


def _check_resume_config(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    changed = [k for k in _RESUME_INVARIANTS if saved and _get(saved, k) != _get(now, k)]
    if changed:
        raise VistuneError(
            f"{path}: cannot resume exactly: {', '.join(f'{k} was {_get(saved, k)!r}, now {_get(now, k)!r}' for k in changed)}; "
            "restore those settings or start a fresh run (train.resume=null, another train.output_dir)"
        )


def _base_section(cfg: TrainConfig) -> dict[str, Any]:
    """The model section an adapter was trained on, minus the LoRA itself: enough for merge-lora to rebuild it."""
    section = dataclasses.asdict(cfg.model)
    section["lora"] = dataclasses.asdict(dataclasses.replace(cfg.model.lora, enabled=False))
    section["init_projector"] = None  # the adapter carries the trained projector
    return section
