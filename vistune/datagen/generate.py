"""The library entry points behind `vistune datagen`: wire annotations, prompts, a teacher and the pipeline.

from vistune.datagen import DatagenConfig, TeacherOptions, generate, generate_stage1

stats = generate("data/instruct.json", captions=..., instances=..., images=...,
                 teacher=TeacherOptions("world"), config=DatagenConfig(limit=100, progress=False))
generate_stage1("data/stage1.json", captions=...)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vistune.datagen.annotations import AnnotationSet, load_annotations
from vistune.datagen.grounding import WORLD_TOTAL_NOUNS, GroundingChecker
from vistune.datagen.pipeline import DatagenConfig, RunStats, run_datagen
from vistune.datagen.prompt_sets import check_flavors, load_instructions, load_prompts
from vistune.datagen.teachers.base import Teacher
from vistune.errors import VistuneError

WORLD_DESCRIPTION_PREFIX = "vistune miniature world"  # the `info.description` `vistune world build` writes


@dataclass
class TeacherOptions:
    """Which teacher and how to reach it. `name`: openai | hf | world (rule-based)."""

    name: str = "openai"
    model: str | None = None  # openai: the served model's name; hf: a dir, a .gguf or "smollm2"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.7
    max_tokens: int = 1024
    timeout: float = 120.0
    ground_truth: Path | None = None  # world: defaults to ground_truth_{split}.json next to the captions
    seed: int = 0


def make_teacher(options: TeacherOptions, *, captions: Path | None = None) -> Teacher:
    if options.name == "openai":
        if not options.model:
            raise VistuneError("--teacher openai needs --model (the model name the endpoint serves)")
        from vistune.datagen.teachers.openai_teacher import OpenAITeacher

        return OpenAITeacher(
            options.model,
            base_url=options.base_url,
            api_key_env=options.api_key_env,
            temperature=options.temperature,
            max_tokens=options.max_tokens,
            timeout=options.timeout,
        )
    if options.name == "hf":
        from vistune.datagen.teachers.hf_teacher import HFTeacher

        return HFTeacher(
            options.model or "smollm2",
            temperature=options.temperature,
            max_tokens=options.max_tokens,
            seed=options.seed,
        )
    if options.name == "world":
        from vistune.datagen.teachers.world_teacher import WorldTeacher

        return WorldTeacher(options.ground_truth or _sibling_ground_truth(captions), seed=options.seed)
    raise VistuneError(f"unknown --teacher {options.name!r}; choose openai, hf or world (rule-based)")


def _sibling_ground_truth(captions: Path | None) -> Path:
    """`annotations/captions_train.json` -> `annotations/ground_truth_train.json` (as `vistune world build` writes)."""
    if captions is None or not Path(captions).name.startswith("captions_"):
        raise VistuneError(
            "--teacher world needs --ground-truth (the world's annotations/ground_truth_{split}.json)"
        )
    captions = Path(captions)
    return captions.with_name(captions.name.replace("captions_", "ground_truth_", 1))


def resolve_prompt_set(name: str, annotations: AnnotationSet) -> str:
    """`auto` -> `world` for annotations written by `vistune world build`, else `photo`."""
    if name == "auto":
        return "world" if annotations.description.startswith(WORLD_DESCRIPTION_PREFIX) else "photo"
    return name


def grounding_checker(annotations: AnnotationSet, prompt_set: str) -> GroundingChecker:
    return GroundingChecker(
        annotations.categories,
        annotations.attribute_values(),
        total_nouns=WORLD_TOTAL_NOUNS if prompt_set == "world" else (),
    )


def generate(
    out: str | Path,
    *,
    captions: str | Path | None = None,
    instances: str | Path | None = None,
    images: str | Path | None = None,
    teacher: TeacherOptions | Teacher,
    config: DatagenConfig | None = None,
    prompts_dir: str | Path | None = None,
    prompt_set: str = "auto",
) -> RunStats:
    """Generate instruction data into `out` (resumable; see `pipeline.py`). Inputs are checked before any request."""
    config = config or DatagenConfig()
    check_flavors(config.flavors)
    annotations = load_annotations(captions, instances, images)
    chosen = resolve_prompt_set(prompt_set, annotations)
    prompts = {flavor: load_prompts(flavor, chosen, prompts_dir) for flavor in config.flavors}
    instructions = {"detail": load_instructions("detail", prompts_dir)}
    if isinstance(teacher, TeacherOptions):
        teacher = make_teacher(teacher, captions=Path(captions) if captions else None)
    return run_datagen(
        annotations,
        teacher,
        prompts,
        out,
        config,
        instructions=instructions,
        grounding=grounding_checker(annotations, chosen),
    )


def generate_stage1(
    out: str | Path,
    *,
    captions: str | Path,
    images: str | Path | None = None,
    prompts_dir: str | Path | None = None,
    seed: int = 0,
    all_captions: bool = False,
    limit: int | None = None,
) -> int:
    """Write stage-1 (caption) records to `out`; returns how many."""
    from vistune.datagen.stage1 import stage1_records, write_json

    annotations = load_annotations(captions, None, images)
    records = stage1_records(
        annotations,
        load_instructions("brief", prompts_dir),
        seed=seed,
        all_captions=all_captions,
        limit=limit,
    )
    write_json(records, out)
    return len(records)
