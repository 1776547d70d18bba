"""`vistune demo`: the whole LLaVA method on the miniature world, end to end, on a CPU in minutes."""

from __future__ import annotations

from pathlib import Path

import typer

_HELP = """Run the whole LLaVA method on the miniature world and write a report.

Builds the world (train + held-out images), generates instruction data with the rule-based `world` teacher,
pretrains a small vision encoder on the world (then freezes it) and a tiny language model on the world's text,
trains stage 1 (projector) and stage 2 (projector + language model), evaluates held-out exact-match accuracy per
question type and description precision/recall, and writes OUT/report.md with loss curves and examples.

--fast is a ~3-minute version for tests; --ablation adds the paper-style ablations (without stage 1, stage 2 on
captions only, a random frozen encoder).

Example: vistune demo --out runs/demo
"""


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory (report.md goes here)."),
    fast: bool = typer.Option(False, "--fast", help="Small sizes (~3 minutes on 2 cores), for tests."),
    preset: str = typer.Option("world", "--preset", help="world (tiny parts pretrained on the world)."),
    ablation: bool = typer.Option(False, "--ablation", help="Also run and tabulate the ablations."),
    seed: int = typer.Option(0, "--seed"),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="CPU threads for torch (default: all cores; 1 is faster on a busy shared machine).",
    ),
    reuse: bool = typer.Option(
        False,
        "--reuse",
        help="Skip preparation steps (world, data, encoder, LM) already done with the same settings.",
    ),
) -> None:
    from vistune.demo.pipeline import check_out_dir, run_demo, seed_everything
    from vistune.demo.settings import preset as get_preset
    from vistune.demo.settings import replace

    check_out_dir(out)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    settings = replace(get_preset("fast" if fast else preset), seed=seed)
    seed_everything(seed)
    run_demo(out, settings, ablation=ablation, reuse=reuse, say=typer.echo)


def register(app: typer.Typer) -> None:
    # No import of the encoder here: a saved demo model names the module that registers its `world_encoder`
    # tower (config.json `vision.module`) and loading imports it, so `vistune --help` stays free of torch.
    app.command("demo", help=_HELP)(demo)
