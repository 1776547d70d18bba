"""Training data: the dataset (records -> tokens + images, lazily), the collator, and the batch plan.

The batch plan is the part that makes runs reproducible and resumable: `GlobalBatchPlan` turns (record lengths,
modalities, seed, epoch) into a fixed sequence of *global* batches that does not depend on the number of processes;
each process then takes its share as micro-batches. So a 2-process run sees exactly the samples a 1-process run
sees in every optimizer step, and a resumed run restarts at the exact batch where it stopped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from vistune.errors import AllMaskedError, VistuneError
from vistune.text.tokenize import IGNORE_INDEX, tokenize_conversation


@dataclass(frozen=True)
class MicroBatchSpec:
    """Where a micro-batch sits: the optimizer step it belongs to and the record indices it holds."""

    step: int
    indices: tuple[int, ...]


class GlobalBatchPlan:
    """Deterministic global batches per epoch, grouped by modality and sorted by length within a batch.

    Like LLaVA's `group_by_modality_length`: image records and text-only records never share a batch (a batch
    with one image record and many text-only ones would waste the vision tower and padding); within a batch the
    records are sorted by length so micro-batches are length-homogeneous (little padding). Batches of the two
    modalities are shuffled together; the incomplete leftovers of each modality form the last batch(es).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        has_image: Sequence[bool],
        global_batch_size: int,
        *,
        seed: int,
        group_by_modality: bool = True,
        min_batch_size: int = 1,
    ) -> None:
        if len(lengths) != len(has_image):
            raise ValueError("lengths and has_image must have the same length")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.has_image = torch.as_tensor(list(has_image), dtype=torch.bool)
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.group_by_modality = group_by_modality
        self.min_batch_size = min_batch_size
        self._cached: tuple[int, list[list[int]]] | None = None
        self.steps_per_epoch = len(self.epoch_batches(0))

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All global batches of `epoch`, in training order (a pure function of seed and epoch)."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        batches = self._make_epoch(epoch)
        self._cached = (epoch, batches)
        return batches

    def _make_epoch(self, epoch: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        groups = [torch.arange(len(self.lengths))]
        if self.group_by_modality:
            groups = [torch.nonzero(self.has_image).flatten(), torch.nonzero(~self.has_image).flatten()]
        full: list[list[int]] = []
        leftovers: list[int] = []
        for group in groups:
            perm = group[torch.randperm(len(group), generator=gen)].tolist()
            n_full = len(perm) // self.global_batch_size * self.global_batch_size
            full += [perm[i : i + self.global_batch_size] for i in range(0, n_full, self.global_batch_size)]
            leftovers += perm[n_full:]
        order = torch.randperm(len(full), generator=gen).tolist()
        batches = [full[i] for i in order]
        # The leftovers of both modalities go last (as in LLaVA); a tail too small to give every process a
        # sample is dropped, so no process ever has an empty step.
        tail = [
            leftovers[i : i + self.global_batch_size]
            for i in range(0, len(leftovers), self.global_batch_size)
        ]
        batches += [b for b in tail if len(b) >= self.min_batch_size]
        return [self._sort_by_length(b) for b in batches]

    def _sort_by_length(self, batch: list[int]) -> list[int]:
        # Longest first: the first micro-batch is the most memory-hungry, so an OOM shows at once.
        return sorted(batch, key=lambda i: (-int(self.lengths[i]), i))

    def total_steps(self, epochs: float, max_steps: int | None = None) -> int:
        if max_steps is not None:
            return max_steps
        return max(1, math.ceil(epochs * self.steps_per_epoch))

    def batch_at(self, step: int) -> list[int]:
        """The global batch of optimizer step `step` (0-based), over epochs."""
        epoch, index = divmod(step, self.steps_per_epoch)
        return self.epoch_batches(epoch)[index]


def split_global_batch(
    batch: Sequence[int], *, micro_batch_size: int, rank: int, world_size: int
) -> list[list[int]]:
    """This process's micro-batches of one (length-sorted) global batch.

    The batch is cut into contiguous micro-batches (similar lengths -> little padding) that are dealt to the
    processes round-robin, so each process gets a similar mix of long and short micro-batches.
    """
    micro = [list(batch[i : i + micro_batch_size]) for i in range(0, len(batch), micro_batch_size)]
    if len(micro) < world_size:  # a short tail batch: spread it evenly so every process gets samples
        bounds = [len(batch) * r // world_size for r in range(world_size + 1)]
        micro = [list(batch[bounds[r] : bounds[r + 1]]) for r in range(world_size)]
    return micro[rank::world_size]


# ---------------------------------------------------------------------------------------------------------------
# Records -> samples


@dataclass
class DataReport:
    """What preparing a data file found. Nothing is dropped without being counted here and named in `bad`."""

    source: str
    records: int = 0
    kept: int = 0
    with_images: int = 0
    text_only: int = 0
    truncated: int = 0
    all_masked: list[str] = field(
        default_factory=list
    )  # record ids: no supervised token (skipped, never trained)
    bad: list[dict[str, str]] = field(
        default_factory=list
    )  # {"id", "reason"}: skipped with on_bad_record=skip

    def summary(self) -> str:
        return (
            f"{self.source}: {self.kept}/{self.records} records used ({self.with_images} with images, "
            f"{self.text_only} text-only); {self.truncated} truncated; {len(self.all_masked)} skipped with no "
            f"supervised token; {len(self.bad)} bad records skipped"
        )


def _conversation_key(conversations: Any) -> tuple | None:
    """A hashable key for a conversation (its turns' items), or None when a turn holds something unhashable."""
    try:
        key = tuple(tuple(sorted(turn.items())) for turn in conversations)
        hash(key)
    except (AttributeError, TypeError):
        return None
    return key


@dataclass(frozen=True)
class _Tokens:
    """One conversation's tokens (shared, read-only, by every record with the same conversation)."""

    input_ids: np.ndarray
    labels: np.ndarray
    num_images: int
    truncated: bool


@dataclass
class _Entry:
    record: Any  # vistune.data.records.Record
    input_ids: np.ndarray  # [L] int32, image tokens included, after truncation
    labels: np.ndarray  # [L] int32
    num_images: int  # images that survive truncation (the first `num_images` of the record)

    @property
    def length(self) -> int:
        return len(self.input_ids)


@dataclass
class Sample:
    """One training example. `error` set: its image could not be read (on_bad_record=skip); the collator drops it."""

    record_id: str
    input_ids: torch.Tensor  # [L]
    labels: torch.Tensor  # [L]
    images: list[str]
    pixel_values: torch.Tensor | None = None  # [n, 3, H, W]
    vision_features: torch.Tensor | None = None  # [n, T, Dv] (feature cache)
    error: str | None = None


class LlavaDataset(Dataset):
    """LLaVA records, tokenized once up front; images loaded lazily per item.

    Tokenizing up front is what lets the batch plan know exact lengths and guarantees an all-masked record is
    skipped and counted before training starts. Tokens are kept as int32 arrays (8 bytes a token: ~2 GB for
    LLaVA-1.5's 665K records), so the training loop never waits on the tokenizer.
    """

    def __init__(
        self,
        records: Sequence[Any],
        *,
        tokenizer: Any,
        template: str,
        num_image_tokens: int,
        image_token_id: int,
        image_folder: str | Path = "",
        image_processor: Callable[[list[Any]], torch.Tensor] | None = None,
        load_image: Callable[[str], Any] | None = None,
        max_length: int | None = None,
        on_bad_record: Literal["error", "skip"] = "error",
        source: str = "data",
    ) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.num_image_tokens = num_image_tokens
        self.image_token_id = image_token_id
        self.image_folder = Path(image_folder)
        self.image_processor = image_processor
        self.load_image = load_image
        self.max_length = max_length
        self.on_bad_record = on_bad_record
        self.features: Any = None  # a FeatureCache, set by `use_feature_cache`
        self._path_of: dict[str, str] = {}
        self.report = DataReport(source=source, records=len(records))
        # Instruction data repeats itself (the same question and answer on many images): each distinct
        # conversation is tokenized once, and each image file looked up once, while preparing.
        self._tokens_of: dict[tuple, _Tokens | None] = {}
        self._is_file: dict[str, bool] = {}
        self.entries = [e for e in (self._prepare(r) for r in records) if e is not None]
        self._tokens_of, self._is_file = {}, {}
        self._count()

    # ---- preparation
    def image_path(self, name: str) -> str:
        # Remembered: records share images (the demo's 78,685 lookup records name 20,000), and pathlib's join is
        # slow enough to show (~2 s per pass over them).
        path = self._path_of.get(name)
        if path is None:
            path = self._path_of[name] = str(self.image_folder / name)
        return path

    def _prepare(self, record: Any) -> _Entry | None:
        missing = [p for p in record.images if not self._file_exists(self.image_path(p))]
        if missing:
            self.reject(record.id, f"image file {self.image_path(missing[0])} does not exist")
            return None
        key = _conversation_key(record.conversations)
        if key is not None and key in self._tokens_of:
            tokens = self._tokens_of[key]
        else:
            try:
                tok = self._tokenize(record)
            except AllMaskedError:
                tokens = None
            else:
                ids, labels = (
                    np.asarray(tok.input_ids, dtype=np.int32),
                    np.asarray(tok.labels, dtype=np.int32),
                )
                tokens = _Tokens(ids, labels, tok.num_images, tok.truncated)
            if key is not None:
                self._tokens_of[key] = tokens
        if tokens is None:
            self.report.all_masked.append(str(record.id))
            return None
        self.report.truncated += tokens.truncated
        return _Entry(record, tokens.input_ids, tokens.labels, tokens.num_images)

    def _file_exists(self, path: str) -> bool:
        if path not in self._is_file:
            self._is_file[path] = os.path.isfile(path)
        return self._is_file[path]

    def _tokenize(self, record: Any) -> Any:
        return tokenize_conversation(
            record.conversations,
            self.tokenizer,
            self.template,
            num_image_tokens=self.num_image_tokens,
            image_token_id=self.image_token_id,
            max_length=self.max_length,
            record_id=f"{self.report.source}: {record.id}",
        )

    def reject(self, record_id: str, reason: str) -> None:
        """A bad record: raise (on_bad_record=error) or count and name it (skip)."""
        if self.on_bad_record == "error":
            raise VistuneError(
                f"{self.report.source}: record {record_id}: {reason} (set data.on_bad_record=skip to skip and "
                "count such records instead)"
            )
        self.report.bad.append({"id": str(record_id), "reason": reason})

    def _count(self) -> None:
        self.report.kept = len(self.entries)
        self.report.with_images = sum(1 for e in self.entries if e.num_images > 0)
        self.report.text_only = self.report.kept - self.report.with_images

    def drop_images(self, bad_paths: set[str]) -> None:
        """Remove records that use an unreadable image (found while building the feature cache)."""
        if not bad_paths:
            return
        kept = []
        for e in self.entries:
            bad = [p for p in e.record.images[: e.num_images] if self.image_path(p) in bad_paths]
            if bad:
                self.reject(e.record.id, f"image file {self.image_path(bad[0])} cannot be read")
            else:
                kept.append(e)
        self.entries = kept
        self._count()

    def image_paths(self) -> list[str]:
        """Every image the kept records use (after truncation), for the feature cache."""
        return [self.image_path(p) for e in self.entries for p in e.record.images[: e.num_images]]

    @property
    def lengths(self) -> list[int]:
        return [e.length for e in self.entries]

    @property
    def has_image(self) -> list[bool]:
        return [e.num_images > 0 for e in self.entries]

    # ---- access
    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        entry = self.entries[index]
        images = [self.image_path(p) for p in entry.record.images[: entry.num_images]]
        sample = Sample(
            record_id=str(entry.record.id),
            input_ids=torch.from_numpy(entry.input_ids).long(),
            labels=torch.from_numpy(entry.labels).long(),
            images=images,
        )
        if images:
            self._attach_images(sample)
        return sample

    def _attach_images(self, sample: Sample) -> None:
        if self.features is not None:
            sample.vision_features = torch.stack([self.features.get(p) for p in sample.images])  # [n, T, Dv]
            return
        if self.image_processor is None or self.load_image is None:
            raise ValueError("LlavaDataset needs image_processor and load_image for records with images")
        try:
            pil = [self.load_image(p) for p in sample.images]
        except VistuneError as err:
            if self.on_bad_record == "error":
                raise
            sample.error = str(err)
            return
        sample.pixel_values = self.image_processor(pil)  # [n, 3, H, W]


# ---------------------------------------------------------------------------------------------------------------
# Collation


@dataclass
class Batch:
    """A padded micro-batch. Images are in order of appearance, row-major over the batch (the model's contract)."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B, L]
    pixel_values: torch.Tensor | None  # [N, 3, H, W]
    vision_features: torch.Tensor | None  # [N, T, Dv]
    record_ids: list[str]
    num_tokens: int  # supervised (next-token) targets: what the loss is averaged over
    dropped: list[dict[str, str]]  # samples removed because an image could not be read

    def model_inputs(self, device: torch.device | str) -> dict[str, torch.Tensor | None]:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return {
            "input_ids": move(self.input_ids),
            "attention_mask": move(self.attention_mask),
            "labels": move(self.labels),
            "pixel_values": move(self.pixel_values),
            "vision_features": move(self.vision_features),
        }

    def __len__(self) -> int:
        return len(self.record_ids)


class Collator:
    """Right-pads a list of samples to the longest one; drops (and reports) samples whose images failed."""

    def __init__(self, pad_token_id: int | None) -> None:
        self.pad_token_id = 0 if pad_token_id is None else pad_token_id  # masked out, so any valid id works

    def __call__(self, samples: list[Sample]) -> Batch:
        dropped = [{"id": s.record_id, "reason": s.error} for s in samples if s.error]
        samples = [s for s in samples if not s.error]
        length = max((len(s.input_ids) for s in samples), default=0)
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, s in enumerate(samples):
            n = len(s.input_ids)
            input_ids[row, :n], labels[row, :n], attention_mask[row, :n] = s.input_ids, s.labels, 1
        return Batch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            pixel_values=_cat([s.pixel_values for s in samples]),
            vision_features=_cat([s.vision_features for s in samples]),
            record_ids=[s.record_id for s in samples],
            num_tokens=int((labels[:, 1:] != IGNORE_INDEX).sum()),
            dropped=dropped,
        )


def _cat(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    present = [p for p in parts if p is not None]
    return torch.cat(present) if present else None
