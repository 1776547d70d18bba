"""`vistune demo`: the whole LLaVA method on the miniature world, end to end, on a CPU in minutes."""

from __future__ import annotations

from pathlib import Path

import typer

from vistune.errors import VistuneError

_HELP = """Run the whole LLaVA method on the miniature world and write a report.

Builds the world (train + held-out images), generates instruction data with the rule-based `world` teacher,
pretrains a small vision encoder on the world (then freezes it) and a tiny language model on the world's text,
trains stage 1 (projector) and stage 2 (projector + language model), evaluates held-out exact-match accuracy per
question type and description precision/recall, and writes OUT/report.md with loss curves and examples.

--fast is a few-minute version for tests; --ablation adds the paper-style ablations (without stage 1, stage 2 on
captions only, a random frozen encoder).

--preset real-small runs the same steps with real pretrained parts loaded offline: EfficientNet-Lite0 (ImageNet) as
the frozen encoder and SmolLM2-135M-Instruct as the LLM (LoRA in stage 2), and shows that the tuned model still
answers general questions (photos from skimage.data, text-only). --fast with it is a few-minute check for tests.

Example: vistune demo --out runs/demo
"""


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory (report.md goes here)."),
    fast: bool = typer.Option(False, "--fast", help="Small sizes (a few minutes on 2 cores), for tests."),
    preset: str = typer.Option(
        "world",
        "--preset",
        help="world (tiny parts pretrained on the world), real-small (EfficientNet-Lite0 + SmolLM2-135M, "
        "pretrained, offline; LoRA in stage 2; ~20-30 minutes on 2 CPU cores) or real-small-gpu (the same, sized "
        "for one GPU; the whole LM tuned in stage 2).",
    ),
    ablation: bool = typer.Option(False, "--ablation", help="Also run and tabulate the ablations."),
    stage2: str | None = typer.Option(
        None,
        "--stage2",
        help="real-small presets only: lora (adapters on SmolLM2, merged after training; real-small's default) or "
        "full (all of SmolLM2; real-small-gpu's default).",
    ),
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
    real = preset.startswith("real-small")
    if real and (ablation or reuse):
        raise VistuneError(
            f"{'--ablation' if ablation else '--reuse'} is not supported for --preset {preset} (it runs the "
            "full method only; the ablation table comes with the world preset)"
        )
    if stage2 is not None and not real:
        raise VistuneError(
            "--stage2 applies to --preset real-small only (the world preset trains its whole LM)"
        )
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if real:
        from vistune.demo import real_small

        settings = real_small.preset("real-small-fast" if fast else preset)
        changes: dict = {"seed": seed} if stage2 is None else {"seed": seed, "stage2_mode": stage2}
        seed_everything(seed)
        real_small.run_real_small(out, real_small.replace(settings, **changes), say=typer.echo)
        return
    settings = replace(get_preset("fast" if fast else preset), seed=seed)
    seed_everything(seed)
    run_demo(out, settings, ablation=ablation, reuse=reuse, say=typer.echo)


def register(app: typer.Typer) -> None:
    # No import of the encoder here: a saved demo model names the module that registers its `world_encoder`
    # tower (config.json `vision.module`) and loading imports it, so `vistune --help` stays free of torch.
    app.command("demo", help=_HELP)(demo)
