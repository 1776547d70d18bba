"""Training data: the dataset (records -> tokens + images, lazily), the collator, and the batch plan.

The batch plan is the part that makes runs reproducible and resumable: `GlobalBatchPlan` turns (record lengths,
modalities, seed, epoch) into a fixed sequence of *global* batches that does not depend on the number of processes;
each process then takes its share as micro-batches. So a 2-process run sees exactly the samples a 1-process run
sees in every optimizer step, and a resumed run restarts at the exact batch where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


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
