"""How alike are the cell tokens of one image? A world encoder whose tokens all carry the same image-wide information
leaves the language model little to key a lookup on ("the star's token").

Prints, over held-out images: the mean cosine between two cell tokens of the same image, and the share of a cell
token's variance that is common to its image's tokens (its image mean's), both after centring on the data set.

    python experiments/token_similarity.py runs/demo/encoder/world_encoder.safetensors [--world runs/demo/world]
"""

import argparse
from pathlib import Path

import torch

from vistune.demo.encoder import load_weights_file
from vistune.demo.pipeline import load_pixels, load_truths
from vistune.world.build import WorldPaths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("encoders", nargs="+", type=Path, help="world_encoder.safetensors files")
    parser.add_argument("--world", type=Path, help="the world directory (default: beside the first encoder)")
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    world = WorldPaths(args.world or args.encoders[0].parent.parent / "world")
    val = load_truths(world, "val")[: args.images]
    for path in args.encoders:
        encoder = load_weights_file(path).eval()
        opts = encoder.opts
        with torch.no_grad():
            _, cells = encoder.dense(load_pixels(world, "val", val, opts.image_size))
        cells = cells[:, : opts.pool_grid**2]  # the cell tokens only
        centred = cells - cells.mean((0, 1), keepdim=True)
        unit = torch.nn.functional.normalize(centred, dim=-1)
        cosine = unit @ unit.transpose(1, 2)  # [N, G*G, G*G]
        off_diagonal = cosine[:, ~torch.eye(cells.shape[1], dtype=torch.bool)].mean().item()
        common = centred.mean(1).pow(2).sum(-1).mean() / centred.pow(2).sum(-1).mean()
        print(
            f"{path}: global token {opts.global_token}; mean cosine between an image's cell tokens "
            f"{off_diagonal:.3f}; share of a token's variance common to its image {common.item():.3f}"
        )


if __name__ == "__main__":
    main()
