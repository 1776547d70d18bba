"""`vistune train` and `vistune merge-lora`."""

from __future__ import annotations

from pathlib import Path

import typer

from vistune.errors import VistuneError


def register(app: typer.Typer) -> None:
    app.command(
        "train",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help=(
            "Train one LLaVA stage from a YAML config; extra `key.path=value` arguments override config keys.\n\n"
            "Example: vistune train --config configs/world_stage1.yaml train.max_steps=20\n\n"
            "Several processes: torchrun --nproc_per_node 2 --no-python vistune train --config ..."
        ),
    )(train_command)
    app.command(
        "merge-lora",
        help=(
            "Fold a LoRA adapter (written by a `model.lora.enabled` run) into its base model; writes a plain "
            "model directory.\n\nExample: vistune merge-lora runs/stage2_lora/adapter --out runs/stage2_merged"
        ),
    )(merge_lora_command)


def train_command(
    ctx: typer.Context,
    config: Path = typer.Option(..., "--config", "-c", help="the YAML config (see configs/)"),
) -> None:
    from vistune.train.config import load_train_config
    from vistune.train.trainer import train

    overrides = list(ctx.args)
    bad = [a for a in overrides if "=" not in a]
    if bad:
        raise VistuneError(
            f"unexpected argument(s) {bad}: overrides are key.path=value (e.g. train.max_steps=10)"
        )
    result = train(load_train_config(config, overrides))
    if result.stopped_early:
        typer.echo(f"stopped at step {result.steps}; run the same command again to resume")
    else:
        typer.echo(f"done: {result.steps} steps; outputs in {result.output_dir}")


def merge_lora_command(
    adapter: Path = typer.Argument(..., help="an adapter directory (<output_dir>/adapter of a LoRA run)"),
    out: Path = typer.Option(..., "--out", "-o", help="where to write the merged model directory"),
) -> None:
    from vistune.train.merge import merge_adapter

    merged = merge_adapter(adapter, out)
    typer.echo(f"merged model written to {merged}")
