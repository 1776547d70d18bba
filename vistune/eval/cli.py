"""`vistune eval ...` commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vistune.infer.cli import DEVICE_HELP, DTYPE_HELP

eval_app = typer.Typer(help="Evaluate a trained model.", no_args_is_help=True)


@eval_app.command("world")
def world(
    model: Path = typer.Option(..., "--model", help="A saved model directory (e.g. runs/demo/stage2/model)."),
    world_dir: Path = typer.Option(..., "--world", help="A world built by `vistune world build`."),
    split: str = typer.Option("val", "--split", help="Which split's images and ground truth to use."),
    max_images: int | None = typer.Option(None, "--max-images", help="Evaluate the first N images only."),
    descriptions: int = typer.Option(20, "--descriptions", help="Images to describe in detail (0: none)."),
    seed: int = typer.Option(1, "--seed", help="Seed of the question sampler (the same seed asks the same)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Questions answered per generate call."),
    out: Path | None = typer.Option(None, "--out", help="Write the scores (JSON) here."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    dtype: str = typer.Option("auto", "--dtype", help=DTYPE_HELP),
) -> None:
    """Exact-match accuracy per question type on a world split, and description precision / recall.

    Each image is asked one well-posed question of every type (color, shape, count, position, existence), in two
    answer styles: short ("Answer with a single word or phrase.") and sentence (the bare question; the attribute the
    reply names is extracted); answers are greedy and compared exactly after normalization; the majority baseline
    is printed beside each type.

    Example: vistune eval world --model runs/demo/stage2/model --world runs/demo/world --max-images 100
    """
    from vistune.errors import VistuneError
    from vistune.eval.world import SCORE_KEYS, evaluate_model
    from vistune.world.build import WorldPaths
    from vistune.world.truth import load_ground_truth

    try:
        paths = WorldPaths(world_dir)
        truths = list(load_ground_truth(paths.ground_truth(split)).values())
        scores = evaluate_model(
            model,
            truths,
            paths.images(split),
            seed=seed,
            max_images=max_images,
            max_descriptions=descriptions,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            on_progress=lambda msg: typer.echo(f"  {msg}", err=True),
        )
    except VistuneError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    for style, key in SCORE_KEYS.items():
        closed = scores[key]
        typer.echo(
            f"closed questions, {style} answers: {closed['overall']:.1%} exact match on {closed['n']} questions"
        )
        for qtype, acc in closed["accuracy"].items():
            typer.echo(
                f"  {qtype:<10} {acc:6.1%}  (n={closed['counts'][qtype]}, "
                f"majority baseline {closed['majority_baseline'][qtype]:.1%})"
            )
    if descriptions:
        desc = scores["descriptions"]
        typer.echo(f"descriptions: precision {desc['precision']:.1%}, recall {desc['recall']:.1%}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(scores, indent=1))
        typer.echo(f"scores -> {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
