"""The world encoder: token layout, explicit position codes, registry build + weights, pretraining targets."""

from __future__ import annotations

import torch

from vistune.demo.encoder import WorldEncoder, WorldEncoderOptions, vision_config
from vistune.demo.pretrain_vision import (
    EncoderPretrainConfig,
    evaluate_encoder,
    pretrain_encoder,
    scene_targets,
    stack_targets,
)
from vistune.model.vision import build_vision_tower
from vistune.world.scene import Background, Scene, WorldObject
from vistune.world.vocab import SHAPES

SMALL = WorldEncoderOptions(width=32, depth=1, heads=2, stem_channels=[8, 16], global_token=True)


def _scene() -> Scene:
    # A red star centered in the top-right cell and a blue circle in the center cell.
    star = WorldObject("star", "red", "large", 0, 2, 5 / 6, 1 / 6)
    circle = WorldObject("circle", "blue", "small", 1, 1, 0.5, 0.5)
    return Scene(Background("white"), (star, circle))


def test_tokens_are_grid_cells_with_one_hot_positions_then_a_global_token():
    enc = WorldEncoder(SMALL).eval()
    out = enc(torch.randn(2, 3, 72, 72))
    assert out.shape == (2, 10, 32 + 6) and enc.num_tokens == 10 and enc.hidden_size == 38
    codes = out[0, :, 32:] / SMALL.position_scale  # [10, 6]: one-hot row, then one-hot column, row-major
    for cell in range(9):
        row, col = divmod(cell, 3)
        assert codes[cell, :3].argmax() == row and codes[cell, 3:].argmax() == col
        assert codes[cell].sum() == 2
    assert (codes[9] == 0).all()  # the global token has no place


def test_without_the_global_token_there_are_nine_cell_tokens():
    """The default (so a model saved before the global token existed loads as it was saved)."""
    opts = WorldEncoderOptions(width=32, depth=1, heads=2, stem_channels=[8, 16])
    enc = WorldEncoder(opts).eval()
    assert enc(torch.randn(1, 3, 72, 72)).shape == (1, 9, 38) and enc.num_tokens == 9
    assert not any(k.startswith("global_proj") for k in enc.state_dict())


def test_registered_tower_loads_its_pretrained_weights(tmp_path):
    from safetensors.torch import save_file

    enc = WorldEncoder(SMALL)
    save_file(enc.state_dict(), str(tmp_path / "w.safetensors"))
    built = build_vision_tower(vision_config(SMALL, str(tmp_path / "w.safetensors")))
    x = torch.randn(1, 3, 72, 72)
    assert torch.equal(built.eval()(x), enc.eval()(x))
    assert (built.image_size, built.image_mean) == (72, (0.5, 0.5, 0.5))


def test_scene_targets_name_the_right_cells_and_counts():
    patch, cell, shape_counts, total, places, same_shape = scene_targets(_scene(), SMALL)
    assert total == 2
    assert same_shape[2] == 1 and same_shape[4] == 1 and (same_shape[[0, 1, 3, 5, 6, 7, 8]] == 0).all()
    assert places[0 * len(SHAPES) + SHAPES.index("star")] == 1 + 2  # red star: cell (0, 2)
    assert (places > 0).sum() == 2
    assert shape_counts[SHAPES.index("star")] == 1 and shape_counts.sum() == 2
    assert cell[2].tolist() == [1, SHAPES.index("star") + 1, 3]  # red is color 0; large is size 2
    assert cell[4, 1] == SHAPES.index("circle") + 1 and (cell[[0, 1, 3, 5, 6, 7, 8]] == 0).all()
    two_stars = Scene(
        _scene().background, (*_scene().objects, WorldObject("star", "green", "small", 2, 0, 1 / 6, 5 / 6))
    )
    same = scene_targets(two_stars, SMALL)[5]  # how many objects of its shape, on each object's cell
    assert same[2] == same[6] == 2 and same[4] == 1 and (same[[0, 1, 3, 5, 7, 8]] == 0).all()
    grid = patch.reshape(9, 9, 2)  # [P, P, (color, shape)]
    assert grid[1, 7, 1] == SHAPES.index("star") + 1  # the star covers the middle of the top-right cell
    assert grid[8, 0].tolist() == [0, 0]  # the bottom-left corner is background


def test_pretraining_learns_counts_above_chance():
    import numpy as np

    from vistune.world.render import render_scene
    from vistune.world.scene import WorldConfig, sample_scene

    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng, WorldConfig(max_objects=3)) for _ in range(64)]
    px = torch.stack(
        [torch.from_numpy(np.array(render_scene(s, 72))).permute(2, 0, 1) for s in scenes]
    ).float()
    px = (px / 255 - 0.5) / 0.5
    targets = stack_targets(scenes, SMALL)
    enc, heads, losses = pretrain_encoder(
        SMALL, px, targets, EncoderPretrainConfig(steps=40, batch_size=32, lr=3e-3)
    )
    assert losses[-1] < 0.7 * losses[0]
    assert not any(p.requires_grad for p in enc.parameters())  # frozen for LLaVA
    assert heads.same_shape is None  # the per-cell same-shape count is opt-in
    metrics = evaluate_encoder(enc, heads, px, targets)
    assert metrics["total"] > 0.4  # 1-3 objects: chance is 1/3
    cfg = EncoderPretrainConfig(steps=5, batch_size=32, lr=3e-3, same_shape_counts=True)
    enc, heads, _ = pretrain_encoder(SMALL, px, targets, cfg)
    assert "cell_same_shape" in evaluate_encoder(enc, heads, px, targets)


def test_counts_are_read_from_the_global_token_only():
    """The count head sees the global token alone: replacing the cell tokens leaves its gradient unchanged."""
    from vistune.demo.pretrain_vision import PretrainHeads, _losses

    torch.manual_seed(0)
    enc, heads = WorldEncoder(SMALL), PretrainHeads(SMALL.width)
    targets = stack_targets([_scene()], SMALL)
    tokens, cells = enc.dense(torch.randn(1, 3, 72, 72))
    other = torch.cat([torch.randn_like(cells[:, :9]), cells[:, 9:]], dim=1)  # same global token, other cells

    def count_grad(c: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(
            _losses(heads, tokens, c, targets)[0], heads.counts.weight, retain_graph=True
        )[0]

    assert torch.allclose(count_grad(cells), count_grad(other))
    cell_grad = torch.autograd.grad(
        _losses(heads, tokens, cells, targets)[0], heads.cell.weight, retain_graph=True
    )[0]
    assert not torch.allclose(
        cell_grad, torch.autograd.grad(_losses(heads, tokens, other, targets)[0], heads.cell.weight)[0]
    )


def test_weights_file_loads_with_or_without_the_global_token(tmp_path):
    from safetensors.torch import save_file

    from vistune.demo.encoder import load_weights_file

    x = torch.randn(1, 3, 72, 72)
    for global_token, tokens in ((True, 10), (False, 9)):
        enc = WorldEncoder(WorldEncoderOptions(global_token=global_token)).eval()
        save_file(enc.state_dict(), str(tmp_path / "w.safetensors"))
        loaded = load_weights_file(tmp_path / "w.safetensors").eval()
        assert loaded.num_tokens == tokens and torch.equal(loaded(x), enc(x))


def test_global_token_from_cells_is_the_projected_mean_of_the_cell_tokens():
    """global_from="cells": the global token summarizes the 9 cell tokens (each knows its object's shape and size),
    not the patches (which weigh an object by its area); the default stays "patches"."""
    import dataclasses

    import pytest

    torch.manual_seed(0)
    enc = WorldEncoder(dataclasses.replace(SMALL, global_from="cells")).eval()
    tokens, out = enc.dense(torch.randn(2, 3, 72, 72))
    cells, global_token = out[:, :9], out[:, 9:]
    assert torch.allclose(global_token, enc.global_proj(cells.mean(1, keepdim=True)))
    assert not torch.allclose(global_token, enc.global_proj(tokens.mean(1, keepdim=True)))
    assert SMALL.global_from == "patches"
    with pytest.raises(ValueError, match="global_from"):
        WorldEncoderOptions(global_from="tokens")


def test_class_codes_are_the_towers_own_cell_read_out_trained_by_pretraining(tmp_path):
    """`class_code`: each cell token carries softmax(color) and softmax(shape) of the tower's cell head x scale."""
    from safetensors.torch import save_file

    from vistune.demo.encoder import CELL_SPLIT
    from vistune.world.vocab import COLORS

    opts = WorldEncoderOptions(
        width=32, depth=1, heads=2, stem_channels=[8, 16], global_token=True, class_code=True, class_scale=4.0
    )
    scenes = [_scene()] * 8
    pixels = torch.randn(8, 3, 72, 72)
    enc, heads, _ = pretrain_encoder(
        opts, pixels, stack_targets(scenes, opts), EncoderPretrainConfig(steps=2)
    )
    assert heads.cell is enc.cell_head  # pretraining trains the read-out the tower keeps
    with torch.no_grad():
        out = enc(pixels[:2])
    codes = 1 + len(COLORS) + CELL_SPLIT[1]
    assert out.shape == (2, 10, 32 + codes + 6) and enc.hidden_size == 32 + codes + 6
    color = out[0, :9, 32 : 32 + 1 + len(COLORS)] / 4.0
    assert torch.allclose(color.sum(-1), torch.ones(9))  # a probability distribution per cell
    assert (out[0, 9, 32 : 32 + codes] == 0).all()  # none on the global token
    save_file(enc.state_dict(), str(tmp_path / "w.safetensors"))
    built = build_vision_tower(vision_config(opts, str(tmp_path / "w.safetensors")))
    with torch.no_grad():
        assert torch.allclose(built.eval()(pixels[:2]), out, atol=1e-6)
