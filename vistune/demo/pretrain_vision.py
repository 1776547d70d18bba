"""Pretraining the world encoder with dense per-region targets, before any LLaVA training (then it stays frozen).

Targets, all read from the world's exact ground truth:
- per patch: which object (color x shape) covers most of it, or background;
- per layout cell (one output token): the color, shape and size of the object centered there, or none;
- on the global token (every output token when the encoder has none): how many objects of each shape the image
  holds, and how many in all, so the language model can read them from one image token instead of counting by
  attention;
- optionally on the same token(s) (`scene_summary`, off by default): for every (color, shape) pair, the cell it
  is in or "absent" — a scene summary, like the global information late ViT patch tokens hold. The idea was to
  spare the LM the lookup of the asked object's token (one attention hop to the summary plus an MLP read instead);
  measured with ground-truth features standing in for the encoder, it did not help: position stayed at its ~70%
  plateau and existence at one constant answer (docs/demo.md, eighth round).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vistune.demo.encoder import WorldEncoder, WorldEncoderOptions
from vistune.world.render import label_map
from vistune.world.scene import Scene
from vistune.world.vocab import COLORS, GRID, SHAPES, SIZES

COLOR_LIST = list(COLORS)
SIZE_LIST = list(SIZES)
MAX_SHAPE_COUNT = 3  # per-shape counts are classified 0, 1, 2, 3+
MAX_OBJECTS = GRID * GRID


@dataclass
class EncoderTargets:
    """Stacked targets for N scenes."""

    patch_color: torch.Tensor  # [N, P*P] long: 0 background, else 1 + color index of the covering object
    patch_shape: torch.Tensor  # [N, P*P] long: 0 background, else 1 + shape index
    cell: torch.Tensor  # [N, G*G, 3] long: color + 1, shape + 1, size + 1 (0 = no object centered there)
    shape_counts: torch.Tensor  # [N, len(SHAPES)] long, clipped to MAX_SHAPE_COUNT
    total: torch.Tensor  # [N] long
    places: torch.Tensor  # [N, len(COLORS) * len(SHAPES)] long: 0 absent, else 1 + cell index of that pair
    # [N, G*G] long: 0 no object centered there, else how many objects of its shape the image holds (clipped)
    same_shape: torch.Tensor


def scene_targets(
    scene: Scene, opts: WorldEncoderOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """(patch [P*P, 2] (color + 1, shape + 1), cell [G*G, 3], shape counts [len(SHAPES)], total, places [C*S],
    same shape [G*G])."""
    if opts.pool_grid != GRID:
        raise ValueError(f"cell targets need pool_grid == the world grid ({GRID}), got {opts.pool_grid}")
    size, p = opts.image_size, opts.patch_grid
    labels, _ = label_map(scene, size)  # [S, S]: 0 background, i + 1 object i
    k = size // p
    blocks = (
        labels.reshape(p, k, p, k).transpose(0, 2, 1, 3).reshape(p * p, k * k)
    )  # [P*P, k*k] pixels per patch
    counts = np.stack([(blocks == i + 1).sum(1) for i in range(len(scene.objects))], 1)  # [P*P, N_obj]
    obj_class = np.array([(COLOR_LIST.index(o.color) + 1, SHAPES.index(o.shape) + 1) for o in scene.objects])
    covered = counts.max(1) >= k * k / 4  # an object covering >= 1/4 of the patch labels it
    patch = np.where(covered[:, None], obj_class[counts.argmax(1)], 0)  # [P*P, 2]
    cell = np.zeros((GRID * GRID, 3), dtype=np.int64)
    shape_counts = np.zeros(len(SHAPES), dtype=np.int64)
    places = np.zeros(len(COLORS) * len(SHAPES), dtype=np.int64)
    for o in scene.objects:
        places[COLOR_LIST.index(o.color) * len(SHAPES) + SHAPES.index(o.shape)] = 1 + o.row * GRID + o.col
        cell[o.row * GRID + o.col] = (
            COLOR_LIST.index(o.color) + 1,
            SHAPES.index(o.shape) + 1,
            SIZE_LIST.index(o.size) + 1,
        )
        shape_counts[SHAPES.index(o.shape)] += 1
    shape_counts = np.minimum(shape_counts, MAX_SHAPE_COUNT)
    same_shape = np.array([shape_counts[shape - 1] if shape else 0 for shape in cell[:, 1]], dtype=np.int64)
    return patch, cell, shape_counts, len(scene.objects), places, same_shape


def stack_targets(scenes: Sequence[Scene], opts: WorldEncoderOptions) -> EncoderTargets:
    parts = [scene_targets(s, opts) for s in scenes]
    patch = torch.as_tensor(np.stack([p[0] for p in parts]))  # [N, P*P, 2]
    return EncoderTargets(
        patch_color=patch[..., 0],
        patch_shape=patch[..., 1],
        cell=torch.as_tensor(np.stack([p[1] for p in parts])),
        shape_counts=torch.as_tensor(np.stack([p[2] for p in parts])),
        total=torch.as_tensor([p[3] for p in parts]),
        places=torch.as_tensor(np.stack([p[4] for p in parts])),
        same_shape=torch.as_tensor(np.stack([p[5] for p in parts])),
    )


class PretrainHeads(nn.Module):
    """Linear read-outs used only during pretraining (thrown away after: the tower is what LLaVA keeps)."""

    def __init__(self, width: int, same_shape: bool = False) -> None:
        super().__init__()
        # Color and shape per patch are separate read-outs: two small problems learn faster than one 65-way one.
        self.patch = nn.Linear(width, (1 + len(COLORS)) + (1 + len(SHAPES)))
        self.cell = nn.Linear(width, (1 + len(COLORS)) + (1 + len(SHAPES)) + (1 + len(SIZES)))
        self.counts = nn.Linear(width, len(SHAPES) * (MAX_SHAPE_COUNT + 1) + MAX_OBJECTS + 1)
        self.places = nn.Linear(width, len(COLORS) * len(SHAPES) * (1 + MAX_OBJECTS))
        # Each cell token also says how many objects of its shape the image holds (`same_shape_counts`); made last,
        # so the other heads start as they did without it.
        self.same_shape = nn.Linear(width, MAX_SHAPE_COUNT + 1) if same_shape else None


def _losses(
    heads: PretrainHeads,
    tokens: torch.Tensor,
    cells: torch.Tensor,
    t: EncoderTargets,
    *,
    summary: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and per-target accuracies. tokens [B, P*P, W], cells [B, G*G (+1 global), W].

    Image-wide targets (counts, scene summary) go on the global token if there is one, else on every cell token.
    """
    n_col, n_shape = 1 + len(COLORS), 1 + len(SHAPES)
    image = cells[:, GRID * GRID :] if cells.shape[1] > GRID * GRID else cells  # [B, 1 or G*G, W]
    cells = cells[:, : GRID * GRID]
    patch_color, patch_shape = heads.patch(tokens).split([n_col, n_shape], dim=-1)  # [B, P*P, C] each
    cell_logits = heads.cell(cells).split([n_col, n_shape, 1 + len(SIZES)], dim=-1)
    count_logits = heads.counts(image)  # [B, g, S*(M+1) + T]
    b, g = image.shape[:2]
    shape_logits = count_logits[..., : len(SHAPES) * (MAX_SHAPE_COUNT + 1)].reshape(b, g, len(SHAPES), -1)
    total_logits = count_logits[..., len(SHAPES) * (MAX_SHAPE_COUNT + 1) :]  # [B, g, T]
    loss = F.cross_entropy(patch_color.flatten(0, 1), t.patch_color.flatten())
    loss = loss + F.cross_entropy(patch_shape.flatten(0, 1), t.patch_shape.flatten())
    for i, logits in enumerate(cell_logits):
        loss = loss + F.cross_entropy(logits.flatten(0, 1), t.cell[..., i].flatten())
    shape_t = t.shape_counts[:, None].expand(b, g, -1)  # the image token(s) predict its counts
    loss = loss + F.cross_entropy(shape_logits.flatten(0, 2), shape_t.flatten())
    loss = loss + F.cross_entropy(total_logits.flatten(0, 1), t.total[:, None].expand(b, g).flatten())
    place_logits = heads.places(image).reshape(b, g, t.places.shape[1], 1 + MAX_OBJECTS)  # [B, g, C*S, 10]
    place_t = t.places[:, None].expand(
        b, g, -1
    )  # the image token(s) predict where each pair is (or that it is absent)
    if summary:
        loss = loss + F.cross_entropy(place_logits.flatten(0, 2), place_t.flatten())
    with torch.no_grad():
        on_object = t.patch_shape > 0
        patch_ok = (patch_color.argmax(-1) == t.patch_color) & (patch_shape.argmax(-1) == t.patch_shape)
        acc = {
            "patch": patch_ok.float().mean(),
            "object_patch": patch_ok[on_object].float().mean(),
            "cell": torch.stack([cell_logits[i].argmax(-1) == t.cell[..., i] for i in range(3)])
            .all(0)
            .float()
            .mean(),
            "total": (total_logits.argmax(-1) == t.total[:, None]).float().mean(),
            "shape_counts": (shape_logits.argmax(-1) == shape_t).float().mean(),
        }
    if summary:
        acc["scene_summary"] = (place_logits.argmax(-1) == place_t).all(-1).float().mean()
    if heads.same_shape is not None:
        same_logits = heads.same_shape(cells)  # [B, G*G, M+1]
        loss = loss + F.cross_entropy(same_logits.flatten(0, 1), t.same_shape.flatten())
        acc["cell_same_shape"] = (same_logits.argmax(-1) == t.same_shape).float().mean()
    return loss, acc


@dataclass
class EncoderPretrainConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    # The image-wide token(s) also predict where each (color, shape) pair is (see the module docstring). Off by
    # default: with ground-truth features standing in for the encoder, that summary did not help stage 2 (measured).
    scene_summary: bool = False
    # Each cell token also learns how many objects of its own shape the image holds, so "How many stars are there?"
    # can be read off the star's token, like its color (the global token's per-shape counts are keyed by no noun).
    same_shape_counts: bool = False


def pretrain_encoder(
    opts: WorldEncoderOptions,
    pixels: torch.Tensor,
    targets: EncoderTargets,
    cfg: EncoderPretrainConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[WorldEncoder, PretrainHeads, list[float]]:
    """Train a fresh encoder on `pixels` [N, 3, S, S] (normalized) with `targets`.

    Returns the frozen encoder, its read-out heads (for `evaluate_encoder`; LLaVA does not use them) and the loss
    curve.
    """
    torch.manual_seed(cfg.seed)
    encoder, heads = WorldEncoder(opts), PretrainHeads(opts.width, same_shape=cfg.same_shape_counts)
    if encoder.cell_head is not None:  # the tower keeps its cell read-out (`WorldEncoderOptions.class_code`)
        heads.cell = encoder.cell_head
    params = list(dict.fromkeys([*encoder.parameters(), *heads.parameters()]))
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    encoder.train()
    for step in range(cfg.steps):
        idx = torch.randint(len(pixels), (cfg.batch_size,), generator=gen)
        tokens, cells = encoder.dense(pixels[idx])
        loss, _ = _losses(heads, tokens, cells, _index(targets, idx), summary=cfg.scene_summary)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder, heads.eval(), losses


def _index(t: EncoderTargets, idx: torch.Tensor) -> EncoderTargets:
    return EncoderTargets(**{f.name: getattr(t, f.name)[idx] for f in fields(t)})


@torch.no_grad()
def evaluate_encoder(
    encoder: WorldEncoder,
    heads: PretrainHeads,
    pixels: torch.Tensor,
    targets: EncoderTargets,
    *,
    summary: bool = False,
) -> dict[str, float]:
    """Held-out accuracies of the pretraining read-outs (how much the frozen features know)."""
    sums: dict[str, float] = {}
    n = 0
    for start in range(0, len(pixels), 256):
        idx = torch.arange(start, min(start + 256, len(pixels)))
        tokens, cells = encoder.dense(pixels[idx])
        _, acc = _losses(heads, tokens, cells, _index(targets, idx), summary=summary)
        for k, v in acc.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
        n += len(idx)
    return {k: v / n for k, v in sums.items()}
