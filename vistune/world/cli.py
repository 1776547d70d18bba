"""`vistune world ...` commands."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

world_app = typer.Typer(
    help="The miniature world: synthetic shapes with exact ground truth (COCO-format captions and boxes).",
    no_args_is_help=True,
)


@world_app.command("build")
def build(
    out: Path = typer.Option(..., "--out", help="Output directory (created)."),
    train: int = typer.Option(1000, "--train", help="Number of training images."),
    val: int = typer.Option(200, "--val", help="Number of validation images."),
    test: int = typer.Option(0, "--test", help="Number of test images."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed and size give the same bytes."),
    size: int = typer.Option(
        224, "--size", help="Image side in pixels (any size >= 16, e.g. 64 for a quick run)."
    ),
    min_objects: int = typer.Option(1, "--min-objects", help="Fewest objects per image."),
    max_objects: int = typer.Option(6, "--max-objects", help="Most objects per image (<= 9)."),
    overlap_prob: float = typer.Option(
        0.25, "--overlap-prob", help="Fraction of images whose objects may overlap."
    ),
    texture_prob: float = typer.Option(
        0.5, "--texture-prob", help="Fraction of images with textured backgrounds."
    ),
    workers: int = typer.Option(
        0,
        "--workers",
        help="Processes that render images (0: one per CPU core); the bytes do not depend on it.",
    ),
) -> None:
    """Build PNG images, COCO captions/instances and ground truth.

    Example: vistune world build --out runs/world --train 1000 --val 200 --seed 0 --size 64
    """
    from vistune.world.build import build_world
    from vistune.world.scene import WorldConfig

    config = WorldConfig(
        min_objects=min_objects, max_objects=max_objects, overlap_prob=overlap_prob, texture_prob=texture_prob
    )
    splits = {name: n for name, n in (("train", train), ("val", val), ("test", test)) if n > 0}
    started = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    paths = build_world(out, splits, seed=seed, size=size, config=config, workers=workers, progress=True)
    seconds = time.perf_counter() - started
    total = sum(splits.values())
    typer.echo(
        f"built {total} images ({', '.join(f'{k} {v}' for k, v in splits.items())}) at {size}px "
        f"in {seconds:.1f} s -> {paths.root}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(world_app, name="world")
