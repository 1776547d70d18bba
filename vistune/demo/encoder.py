"""The miniature world's frozen vision encoder: a small conv stem + transformer blocks, pretrained on the world.

LLaVA starts from a pretrained CLIP; the miniature starts from an encoder pretrained on the world before any LLaVA
training, then frozen. What it must know: each object, its attributes AND its position. A prototype found that
CLIP-style training for a few minutes on a CPU did not get there and that position stayed at chance even with good
object features, because nothing said *where* a token came from. So:

- pretraining uses dense per-region targets (which object covers each patch; which object is centered in each
  grid cell: color, shape, size; how many objects of each shape the image holds), which a small net learns in
  minutes;
- the output tokens are pooled to the world's layout grid (3x3 = 9 tokens: a lean token budget), and each token
  carries an explicit 2-D position code (one-hot row and column), so the projector and the LLM can read position
  directly instead of inferring it from the token order;
- one more, global token (from the mean of the patch tokens, with an all-zero position code) carries the image-wide
  targets (how many of each shape), so the cell tokens stay local. Measured: when every cell token carried the
  counts, 62-76% of a token's variance was shared by all tokens of its image (more the longer the encoder trained),
  and the language model's lookup of "the token of the star" formed less often; with the global token, 17%.

The tower is registered as `world_encoder` in the vision-tower registry, so a model that uses it is saved and
loaded like any other (its weights live in the model's own safetensors file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vistune.config import from_dict
from vistune.model.config import VisionConfig
from vistune.model.vision import HALF, VisionTower, register_vision_tower
from vistune.world.vocab import COLORS, SHAPES, SIZES

TOWER_KIND = "world_encoder"
# The cell read-out: (none + each color), (none + each shape), (none + each size) of the object centered in a cell.
CELL_SPLIT = (1 + len(COLORS), 1 + len(SHAPES), 1 + len(SIZES))
CELL_CLASSES = sum(CELL_SPLIT)
CLASS_CODE_DIMS = CELL_SPLIT[0] + CELL_SPLIT[1]


@dataclass
class WorldEncoderOptions:
    """Architecture of the world encoder (stored in `VisionConfig.options`, so a saved model rebuilds it)."""

    image_size: int = 72
    width: int = 128
    depth: int = 2
    heads: int = 4
    stem_channels: list[int] = field(default_factory=lambda: [32, 64])  # then `width`; total stride 2^(len+1)
    pool_grid: int = 3  # output tokens: pool_grid x pool_grid (the world's 3x3 layout grid)
    position_code: bool = True  # append one-hot (row, col) of each output token
    # The code's magnitude: its norm is 1.41 x this, against ~13.9 for the demo encoder's LayerNorm-ed cell features
    # (docs/demo.md, eleventh round); the demo uses 8 (`DemoSettings.encoder`).
    position_scale: float = 4.0
    merge: str = "concat"  # patches -> cell token: "concat" (linear over the cell's patches) or "mean"
    # One more token for the image-wide targets (counts), after the cell tokens, so those stay local. The demo turns
    # it on (`DemoSettings.encoder`); off by default so that a model saved before it existed still loads as saved.
    global_token: bool = False
    # What the global token summarizes: the mean of the patch tokens ("patches"), or of the cell tokens ("cells").
    # A cell token knows the shape and size of the object centered in it, so per-shape counts are a linear read of
    # the cells' sum; a patch mean weighs each object by its area (one large circle ~ two small ones).
    global_from: str = "patches"
    # Append to each cell token the tower's own read-out of what is centered there: softmax over (none + colors)
    # and over (none + shapes), times `class_scale` (the global token gets zeros). The read-out is the cell head
    # pretraining trains, kept in the tower. Makes "which shape / color is here" as salient as the position code.
    class_code: bool = False
    class_scale: float = 8.0

    def __post_init__(self) -> None:
        stride = 2 ** (len(self.stem_channels) + 1)
        if self.merge not in ("concat", "mean"):
            raise ValueError(f"world encoder: merge must be 'concat' or 'mean', got {self.merge!r}")
        if self.global_from not in ("patches", "cells"):
            raise ValueError(
                f"world encoder: global_from must be 'patches' or 'cells', got {self.global_from!r}"
            )
        if self.image_size % stride or (self.image_size // stride) % self.pool_grid:
            raise ValueError(
                f"world encoder: image_size {self.image_size} must be divisible by the stem stride {stride} "
                f"and give a patch grid divisible by pool_grid {self.pool_grid}"
            )

    @property
    def patch_grid(self) -> int:
        return self.image_size // 2 ** (len(self.stem_channels) + 1)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    # GroupNorm, not BatchNorm: the tower is used frozen in eval mode, and must behave the same as in training.
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.GELU())


class WorldEncoder(VisionTower):
    """pixels [N, 3, S, S] -> tokens [N, G*G (+1 global), width (+ 2G position code)].

    `dense(pixels)` also returns the per-patch tokens before pooling, which pretraining supervises.
    """

    def __init__(self, opts: WorldEncoderOptions) -> None:
        super().__init__()
        self.opts = opts
        channels = [3, *opts.stem_channels, opts.width]
        self.stem = nn.Sequential(
            *[_conv_block(a, b) for a, b in zip(channels[:-1], channels[1:], strict=True)]
        )
        self.pos_embed = nn.Parameter(torch.randn(1, opts.patch_grid**2, opts.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            opts.width,
            opts.heads,
            3 * opts.width,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, opts.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(opts.width)
        k = opts.patch_grid // opts.pool_grid  # patches per cell side
        # A cell token made from all its patches (not their mean) keeps a small object's detail, which averaging
        # with the background patches around it would dilute.
        self.merge = (
            nn.Sequential(nn.Linear(k * k * opts.width, opts.width), nn.LayerNorm(opts.width))
            if opts.merge == "concat"
            else None
        )
        codes = _position_codes(opts.pool_grid) * opts.position_scale
        self.global_proj = None
        if opts.global_token:  # it summarizes all patches, so it has no place: an all-zero position code
            self.global_proj = nn.Sequential(nn.Linear(opts.width, opts.width), nn.LayerNorm(opts.width))
            codes = torch.cat([codes, codes.new_zeros(1, codes.shape[1])])
        self.register_buffer("position_codes", codes, persistent=False)
        self.cell_head = nn.Linear(opts.width, CELL_CLASSES) if opts.class_code else None
        self.image_size = opts.image_size
        self.image_mean = self.image_std = HALF
        self.num_tokens = opts.pool_grid**2 + int(opts.global_token)
        self.hidden_size = (
            opts.width
            + (2 * opts.pool_grid if opts.position_code else 0)
            + (CLASS_CODE_DIMS if opts.class_code else 0)
        )

    def dense(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(patch tokens [N, P*P, width], output tokens [N, G*G (+1 global), width]: cells, row-major, then global)."""
        fmap = self.stem(pixel_values)  # [N, width, P, P]
        n, c, p, _ = fmap.shape
        tokens = self.norm(self.blocks(fmap.flatten(2).transpose(1, 2) + self.pos_embed))  # [N, P*P, width]
        g = self.opts.pool_grid
        k = p // g
        if self.merge is None:
            grid = tokens.transpose(1, 2).reshape(n, c, p, p)  # back to [N, width, P, P] to pool per cell
            cells = F.avg_pool2d(grid, k).flatten(2).transpose(1, 2)  # [N, G*G, width]
        else:
            cells = tokens.reshape(n, g, k, g, k, c).permute(0, 1, 3, 2, 4, 5)  # [N, G, G, k, k, width]
            cells = self.merge(cells.reshape(n, g * g, k * k * c))  # [N, G*G, width]
        if self.global_proj is None:
            return tokens, cells
        summarized = tokens if self.opts.global_from == "patches" else cells
        return tokens, torch.cat([cells, self.global_proj(summarized.mean(1, keepdim=True))], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        _, cells = self.dense(pixel_values)
        parts = [cells]
        if self.cell_head is not None:
            parts.append(self.class_codes(cells))
        if self.opts.position_code:
            parts.append(
                self.position_codes.to(cells.dtype).expand(cells.shape[0], -1, -1)
            )  # [N, G*G (+1), 2G]
        return torch.cat(parts, dim=-1) if len(parts) > 1 else cells

    def class_codes(self, cells: torch.Tensor) -> torch.Tensor:
        """[N, G*G (+1), 2 + C + S]: the cell head's color and shape probabilities x class_scale (0 on global)."""
        g2 = self.opts.pool_grid**2
        color, shape, _ = self.cell_head(cells[:, :g2]).split(CELL_SPLIT, dim=-1)
        codes = torch.cat([color.softmax(-1), shape.softmax(-1)], dim=-1) * self.opts.class_scale
        return F.pad(codes, (0, 0, 0, cells.shape[1] - g2))  # the global token: zeros


def _position_codes(grid: int) -> torch.Tensor:
    """[G*G, 2G]: one-hot row then one-hot column of each cell, row-major like the tokens."""
    eye = torch.eye(grid)
    rows = eye.repeat_interleave(grid, dim=0)  # [G*G, G]: row r repeated for each column
    cols = eye.repeat(grid, 1)  # [G*G, G]
    return torch.cat([rows, cols], dim=1)


def encoder_options(config: VisionConfig) -> WorldEncoderOptions:
    return from_dict(WorldEncoderOptions, config.options, where="vision.options")


def _build(config: VisionConfig) -> WorldEncoder:
    opts = encoder_options(config)
    return WorldEncoder(opts) if config.pretrained is None else load_weights_file(config.pretrained, opts)


def load_weights_file(path: str | Path, opts: WorldEncoderOptions | None = None) -> WorldEncoder:
    """A world encoder from its weights file (as `vistune demo` saves it; strict loading).

    Without `opts`: the default architecture, with the global token if the file holds its weights (files saved
    before it existed do not).
    """
    from safetensors.torch import load_file

    weights = load_file(str(path))
    if opts is None:
        opts = WorldEncoderOptions(global_token=any(k.startswith("global_proj.") for k in weights))
    encoder = WorldEncoder(opts)
    encoder.load_state_dict(weights)
    return encoder


def vision_config(opts: WorldEncoderOptions, pretrained: str | None = None) -> VisionConfig:
    """The `VisionConfig` that builds this tower (weights from `pretrained`, a safetensors file, if given)."""
    return VisionConfig(kind=TOWER_KIND, pretrained=pretrained, options=asdict(opts))


register_vision_tower(TOWER_KIND, _build)
