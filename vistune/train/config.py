"""Typed training configuration: one YAML file -> `TrainConfig`, strict (an unknown key is an error).

Stage 1 (feature alignment) and stage 2 (instruction tuning) are the same code with different configs: which parts
train (`model.trainable`), which data and template (`data`), and where the projector starts (`model.init_projector`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vistune.config import from_dict, load_yaml, to_dict
from vistune.errors import VistuneError
from vistune.model.config import ModelConfig

Precision = Literal["auto", "fp32", "bf16", "fp16"]
OnBadRecord = Literal["error", "skip"]
Strategy = Literal["ddp", "fsdp"]


@dataclass
class TrainableConfig:
    """Which parts receive gradients; applied in one place (`VistuneModel.set_trainable`)."""

    vision: bool = False
    projector: bool = True
    language_model: bool = False


@dataclass
class LoraConfig:
    """LoRA / QLoRA on the language model through `peft`; the projector still trains fully when trainable."""

    enabled: bool = False
    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # QLoRA: load the language model (model.config.text_pretrained) quantized by bitsandbytes, frozen, with the
    # adapters on top: 4 = NF4/FP4 weights (QLoRA), 8 = LLM.int8(). Works on CPU (bitsandbytes' CPU backend) and CUDA.
    # Without `enabled` the quantized language model is simply frozen (the base merge-lora rebuilds; stage 1 over it).
    bits: int | None = None
    # 4-bit only: the data type (nf4 = QLoRA's NormalFloat, or fp4); double quantization (of the quantization
    # constants too); the matmul dtype (auto: bf16 on CUDA where supported, else fp16; fp32 on CPU).
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.bits not in (None, 4, 8):
            raise VistuneError(f"model.lora.bits={self.bits!r}: use 4, 8 or null")
        if self.quant_type not in ("nf4", "fp4"):
            raise VistuneError(f"model.lora.quant_type={self.quant_type!r}: use nf4 or fp4")
        if self.compute_dtype not in ("auto", "fp32", "bf16", "fp16"):
            raise VistuneError(
                f"model.lora.compute_dtype={self.compute_dtype!r}: use auto, fp32, bf16 or fp16"
            )
        if self.r <= 0:
            raise VistuneError(f"model.lora.r={self.r}: the LoRA rank must be positive")


@dataclass
class ModelSection:
    """Where the model comes from.

    init: a saved model directory (ours or llava-hf) to start from; otherwise the model is built from `config`.
    config: a `ModelConfig` (vision tower, projector, language model, template) to build the model from parts.
    tokenizer: tokenizer directory; default: `init`, else `config.text_pretrained`.
    init_projector: the stage-1 output directory (or the `projector.safetensors` in it); stage 2 sets it.
    imports: modules to import before building, for vision towers that register themselves from outside the model
        package (e.g. `vistune.demo.encoder` registers the miniature world's encoder).
    attn_implementation: transformers' attention kernel for the language model and a transformers vision tower
        ("sdpa", "eager", "flash_attention_2" on CUDA with flash-attn installed, as LLaVA trains; None keeps
        transformers' default). A runtime choice: it is not saved with the model.
    share_prompt_prefix: run the leading tokens that every sample of a micro-batch shares (a chat template's system
        turn and first user header) once per micro-batch instead of once per sample; the other positions attend to
        its keys and values, and its gradient sums over the samples. The same loss and gradients to float rounding,
        fewer FLOPs: 12 of the ~41 tokens of the miniature world's closed questions run once. Not with
        gradient_checkpointing (transformers turns the KV cache off under it). A runtime choice, not saved.
    """

    init: str | None = None
    imports: list[str] = field(default_factory=list)
    config: ModelConfig | None = None
    tokenizer: str | None = None
    init_projector: str | None = None
    trainable: TrainableConfig = field(default_factory=TrainableConfig)
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    share_prompt_prefix: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)

    def __post_init__(self) -> None:
        if (self.init is None) == (self.config is None):
            raise VistuneError(
                "model: give exactly one of `init` (a saved model dir) or `config` (build from parts)"
            )
        if self.share_prompt_prefix and self.gradient_checkpointing:
            raise VistuneError(
                "model.share_prompt_prefix with model.gradient_checkpointing: the shared prefix needs the KV cache, "
                "which transformers turns off under checkpointing; set one of them to false"
            )
        if self.lora.enabled and self.trainable.language_model:
            raise VistuneError(
                "model.lora.enabled with model.trainable.language_model=true: LoRA trains adapters instead of the "
                "full language model; set model.trainable.language_model=false"
            )


@dataclass
class DataConfig:
    """Training data: LLaVA JSON / JSONL records and the folder their image paths are relative to."""

    train: str
    image_folder: str = ""
    val: str | None = None
    template: str | None = None  # default: the model's template
    model_max_length: int = 2048
    group_by_modality_length: bool = True
    on_bad_record: OnBadRecord = "error"
    cache_vision_features: bool = False
    feature_cache_dir: str | None = None  # default: <output_dir>/feature_cache
    feature_cache_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    num_workers: int = 0
    max_records: int | None = None  # use the first N records (smoke runs)

    def __post_init__(self) -> None:
        if self.on_bad_record not in ("error", "skip"):
            raise VistuneError(f"data.on_bad_record={self.on_bad_record!r}: use 'error' or 'skip'")
        if self.model_max_length <= 0:
            raise VistuneError(f"data.model_max_length={self.model_max_length}: must be positive")


@dataclass
class OptimConfig:
    """AdamW with a learning rate per part; a part with lr 0 is frozen (no gradients computed), not just unstepped."""

    lr: float = 2e-5  # language model
    projector_lr: float | None = None  # default: lr
    vision_lr: float | None = None  # default: lr (only used when model.trainable.vision)
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None  # overrides warmup_ratio
    max_grad_norm: float | None = 1.0
    # The AdamW implementation: fused (one kernel per step: reads and writes each parameter, gradient and state
    # once; on a 135M-parameter LM on CPU ~8x faster than foreach), or foreach. auto: fused wherever torch has
    # the kernel (CPU, CUDA) and the parameters are plain floating-point tensors (not FSDP-sharded), else foreach.
    fused: bool | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        if self.fused not in ("auto", True, False):
            raise VistuneError(f"optim.fused={self.fused!r}: use auto, true or false")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if self.schedule not in ("cosine", "constant"):
            raise VistuneError(f"optim.schedule={self.schedule!r}: use 'cosine' or 'constant'")
        for name in ("lr", "projector_lr", "vision_lr"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise VistuneError(f"optim.{name}={value}: a learning rate cannot be negative")

    @property
    def part_lrs(self) -> dict[str, float]:
        """Learning rate per model part."""
        return {
            "vision": self.lr if self.vision_lr is None else self.vision_lr,
            "projector": self.lr if self.projector_lr is None else self.projector_lr,
            "language_model": self.lr,
        }


@dataclass
class DistConfig:
    """Multi-process training on torch's engines. Launch with `torchrun --nproc_per_node N --no-python vistune
    train ...`, or `accelerate launch --config_file X` (its DDP / FSDP settings are honoured).

    strategy: ddp (replicas) or fsdp (FSDP2: decoder layers sharded; for LLMs too big for one device).
    deepspeed: a DeepSpeed JSON config: its ZeRO stage and offload settings are mapped onto FSDP2 (stage 3: shard
        parameters too, re-gathered per use; stages 1-2: gradients and optimizer state sharded, parameters kept
        whole between forward and backward), and its batch sizes are checked against this config.
    cpu_offload: FSDP only: keep sharded parameters, gradients and optimizer state in CPU memory.
    """

    strategy: Strategy = "ddp"
    backend: str | None = None  # default: nccl on CUDA, gloo on CPU
    deepspeed: str | None = None
    reshard_after_forward: bool = True  # FSDP: free gathered parameters after forward (ZeRO-3 behaviour)
    cpu_offload: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in ("ddp", "fsdp"):
            raise VistuneError(f"train.dist.strategy={self.strategy!r}: use ddp or fsdp")


@dataclass
class LoopConfig:
    """The training loop."""

    output_dir: str
    seed: int = 42
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    global_batch_size: int = 32  # samples per optimizer step, over all processes and accumulation steps
    micro_batch_size: int = 4  # samples per forward pass on one process
    precision: Precision = "auto"  # auto: bf16 on CUDA that supports it, else fp32
    log_every: int = 1
    eval_every: int | None = None  # steps; validation loss on data.val
    save_every: int | None = None  # steps; a resumable checkpoint
    keep_checkpoints: int = 2
    resume: str | None = "auto"  # "auto": the newest checkpoint in output_dir if any; a path; or null
    stop_after_steps: int | None = None  # stop (checkpointed) after this many steps, e.g. to split a job
    progress: bool = True
    save_model: bool = True  # write <output_dir>/model at the end (a LoRA run writes <output_dir>/adapter)
    tensorboard: bool = False  # only when tensorboard is installed
    dist: DistConfig = field(default_factory=DistConfig)

    def __post_init__(self) -> None:
        if self.global_batch_size <= 0 or self.micro_batch_size <= 0:
            raise VistuneError("train.global_batch_size and train.micro_batch_size must be positive")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise VistuneError(f"train.precision={self.precision!r}: use auto, fp32, bf16 or fp16")


@dataclass
class TrainConfig:
    """A whole training run (one stage)."""

    model: ModelSection
    data: DataConfig
    train: LoopConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    name: str = "run"

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config, apply dotted `key=value` overrides, validate strictly."""
    data = load_yaml(path, overrides)
    return from_dict(TrainConfig, data, where=str(path))


def train_config_from_dict(data: dict[str, Any], *, where: str = "train config") -> TrainConfig:
    return from_dict(TrainConfig, data, where=where)
