"""`vistune convert ...`: move models between vistune's format and transformers' llava-hf format.

vistune convert to-hf runs/stage2 exported/llava-hf      # then LlavaForConditionalGeneration.from_pretrained
vistune convert from-hf llava-hf-dir runs/imported
"""

from __future__ import annotations

from pathlib import Path

import typer

convert_app = typer.Typer(
    help="Convert models between vistune's format and transformers' llava-hf format.",
    no_args_is_help=True,
    add_completion=False,
)


def register(app: typer.Typer) -> None:
    """Add the `convert` command group to the root `vistune` app."""
    app.add_typer(convert_app, name="convert")


@convert_app.command("to-hf")
def to_hf(
    src: Path = typer.Argument(..., help="a vistune model directory"),
    dst: Path = typer.Argument(..., help="where to write the llava-hf directory"),
) -> None:
    """Write a vistune model as a LlavaForConditionalGeneration directory (transformers, vLLM, SGLang).

    Example: vistune convert to-hf runs/stage2 exported/llava-hf
    """
    from vistune.model.convert import convert_to_hf

    out = convert_to_hf(src, dst)
    typer.echo(f"wrote llava-hf model to {out}")


@convert_app.command("from-hf")
def from_hf(
    src: Path = typer.Argument(..., help="a llava-hf (LlavaForConditionalGeneration) directory"),
    dst: Path = typer.Argument(..., help="where to write the vistune directory"),
) -> None:
    """Write a llava-hf model as a vistune model directory (its image_token_index is kept).

    Example: vistune convert from-hf llava-1.5-7b-hf runs/llava15
    """
    from vistune.model.convert import convert_from_hf

    out = convert_from_hf(src, dst)
    typer.echo(f"wrote vistune model to {out}")
