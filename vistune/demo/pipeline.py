"""`vistune demo`: the whole LLaVA method on the miniature world, end to end, each step timed.

world build -> [vision encoder pretraining (a second process) | instruction data (the `world` teacher) -> language
model pretraining] -> stage 1 (projector only) -> stage 2 (projector + LLM) -> held-out evaluation -> report.md.

Every step calls the library (world, datagen, train, infer, eval); this module only wires them and records time.
Wall time on a shared machine overstates the cost, so CPU time (the process's and its workers') is recorded next
to it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vistune.demo.settings import DemoSettings, StageSettings
from vistune.errors import VistuneError


@dataclass
class StepTime:
    name: str
    wall_s: float
    cpu_s: float


@dataclass
class DemoResult:
    out: Path
    model_dir: Path
    scores: dict[str, Any]
    times: list[StepTime] = field(default_factory=list)
    encoder_metrics: dict[str, float] = field(default_factory=dict)
    ablations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def total_wall_s(self) -> float:
        return sum(t.wall_s for t in self.times)

    @property
    def total_cpu_s(self) -> float:
        return sum(t.cpu_s for t in self.times)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "model_dir": str(self.model_dir),
            "scores": self.scores,
            "times": [asdict(t) for t in self.times],
            "total_wall_s": self.total_wall_s,
            "total_cpu_s": self.total_cpu_s,
            "encoder_metrics": self.encoder_metrics,
            "ablations": self.ablations,
        }


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (the world's rendering workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Steps:
    """Numbered, timed steps with one line of progress each (`[3/8] name ... done in 12.3 s`)."""

    def __init__(self, total: int, say: Callable[[str], None]) -> None:
        self.total, self.say, self.done = total, say, 0
        self.times: list[StepTime] = []

    @contextmanager
    def step(self, name: str):
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {name} ...")
        wall, cpu = time.perf_counter(), _cpu_seconds()
        yield
        t = StepTime(name, time.perf_counter() - wall, _cpu_seconds() - cpu)
        self.times.append(t)
        self.say(f"[{self.done}/{self.total}] {name}: done in {t.wall_s:.1f} s (CPU {t.cpu_s:.1f} s)")


@dataclass(frozen=True)
class DemoPaths:
    out: Path

    @property
    def world(self) -> Path:
        return self.out / "world"

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def encoder(self) -> Path:
        return self.out / "encoder" / "world_encoder.safetensors"

    @property
    def language_model(self) -> Path:
        return self.out / "lm"

    @property
    def text_language_model(self) -> Path:
        """The LM after its text pretraining, before the in-context copying (written only when there is copying)."""
        return self.out / "lm_text"

    def stage1_language_model(self, s: DemoSettings) -> Path:
        """The LM stage 1 aligns the projector to (`DemoSettings.stage1_before_copying`)."""
        if s.stage1_before_copying and s.language_train.induction_steps:
            return self.text_language_model
        return self.language_model

    def stage(self, name: str) -> Path:
        return self.out / name

    @property
    def feature_cache(self) -> Path:
        return self.out / "feature_cache"


# ------------------------------------------------------------------------------------------------ the steps
def build_world_step(paths: DemoPaths, s: DemoSettings):
    from vistune.world.build import build_world

    return build_world(
        paths.world,
        {"train": s.train_images, "val": s.val_images},
        seed=s.seed,
        size=s.image_size,
        config=s.world,
        workers=torch.get_num_threads(),  # the cores the demo may use (`--threads`)
        progress=True,
    )


def load_truths(world, split: str) -> list:
    from vistune.world.truth import load_ground_truth

    return list(load_ground_truth(world.ground_truth(split)).values())


def datagen_step(paths: DemoPaths, s: DemoSettings, world, truths: list, say: Callable[[str], None]) -> dict:
    """Teacher data (conversation, detail, complex_reasoning), stage-1 captions, closed questions in both answer
    styles (short and sentence)."""
    from vistune.datagen.annotations import load_annotations
    from vistune.datagen.grounding import WORLD_TOTAL_NOUNS, GroundingChecker
    from vistune.datagen.pipeline import DatagenConfig, run_datagen
    from vistune.datagen.prompt_sets import load_instructions, load_prompts
    from vistune.datagen.stage1 import stage1_records
    from vistune.datagen.teachers.world_teacher import WorldTeacher
    from vistune.eval.world import make_closed_questions, question_records

    paths.data.mkdir(parents=True, exist_ok=True)
    annotations = load_annotations(world.captions("train"), world.instances("train"), world.images("train"))
    stats = run_datagen(
        annotations,
        WorldTeacher(world.ground_truth("train"), seed=s.seed),
        {f: load_prompts(f, "world", None) for f in s.flavors},
        paths.data / "instruct.json",
        DatagenConfig(flavors=list(s.flavors), limit=s.teacher_images, seed=s.seed, progress=False),
        instructions={"detail": load_instructions("detail", None)},
        grounding=GroundingChecker(
            annotations.categories, annotations.attribute_values(), total_nouns=WORLD_TOTAL_NOUNS
        ),
    )
    say(f"    teacher (rule-based `world`): {stats.dataset_records} records, {stats.items_failed} failed")
    instruct = place_images(json.loads((paths.data / "instruct.json").read_text()), s.image_placement)
    stage1 = stage1_records(annotations, load_instructions("brief", None), seed=s.seed)
    # Single-turn records, one question each, as evaluation asks them (packing an image's questions into one
    # conversation lets later answers lean on earlier questions instead of the image).
    questions = make_closed_questions(truths, seed=s.seed, per_type=s.closed_rounds)
    # Each question in every answer style: short ("red", LLaVA-1.5's VQA prompt) and sentence ("The star is red.").
    place = s.image_placement
    closed = question_records(questions, placement=place)
    sentence = question_records(questions, id_prefix="sentence", style="sentence", placement=place)
    lookup = question_records(
        [q for q in questions if q.qtype in s.lookup_types],
        id_prefix="lookup",
        style=s.lookup_style,
        placement=place,
    )
    # The lookup types' short-answer records, for the phase between the lookup phase and the mix.
    lookup_short = [r for r, q in zip(closed, questions, strict=True) if q.qtype in s.lookup_types]
    random.Random(s.seed).shuffle(lookup_short)
    mixed = instruct + closed + sentence
    random.Random(s.seed).shuffle(mixed)
    files = {
        "stage1": stage1,
        "instruct": instruct,
        "closed": closed,
        "sentence": sentence,
        "lookup": lookup,
        "lookup_short": lookup_short,
        "stage2": mixed,
    }
    for name, records in files.items():
        (paths.data / f"{name}.json").write_text(json.dumps(records))
    say(
        f"    stage 1: {len(stage1)} caption records; stage 2: {len(lookup)} lookup questions "
        f"({', '.join(s.lookup_types)}; {s.lookup_style} answers), then {len(instruct)} teacher + "
        f"{len(closed)} short-answer + {len(sentence)} sentence-answer records"
    )
    return {name: len(records) for name, records in files.items()}


def encoder_step(
    paths: DemoPaths, s: DemoSettings, world, train: list, val: list, *, random_init: bool = False
):
    """Pretrain the world encoder on the train split (held-out accuracies on val), save its weights."""
    from safetensors.torch import save_file

    from vistune.demo.encoder import WorldEncoder
    from vistune.demo.pretrain_vision import evaluate_encoder, pretrain_encoder, stack_targets

    train_px, val_px = (
        load_pixels(world, split, t, s.image_size) for split, t in (("train", train), ("val", val))
    )
    train_t = stack_targets([t.scene for t in train], s.encoder)
    val_t = stack_targets([t.scene for t in val], s.encoder)
    paths.encoder.parent.mkdir(parents=True, exist_ok=True)
    if random_init:
        torch.manual_seed(s.seed)
        encoder = WorldEncoder(s.encoder)
        save_file(encoder.state_dict(), str(paths.encoder))
        return {}, []
    encoder, heads, losses = pretrain_encoder(
        s.encoder, train_px, train_t, s.encoder_train, on_step=_every(50, "encoder")
    )
    metrics = evaluate_encoder(encoder, heads, val_px, val_t, summary=s.encoder_train.scene_summary)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(paths.encoder))
    (paths.encoder.parent / "metrics.json").write_text(json.dumps({"val": metrics, "losses": losses}))
    return metrics, losses


def _encoder_job(paths: DemoPaths, s: DemoSettings) -> dict[str, float]:
    """`encoder_step` on the demo's world, from paths alone (what a second process is given)."""
    from vistune.world.build import WorldPaths

    world = WorldPaths(paths.world)
    metrics, _ = encoder_step(paths, s, world, load_truths(world, "train"), load_truths(world, "val"))
    precompute_features(paths, s, world)
    return metrics


def precompute_features(paths: DemoPaths, s: DemoSettings, world) -> None:
    """The frozen encoder's features of every train image, into the feature cache stages 1 and 2 read (it is keyed
    by the tower's fingerprint and each image's content hash, so they find them there). The encoder's process does
    this right after pretraining: the language model's side of that step takes longer (the encoder finished about
    40 s before it, estimated from the order of their progress lines), so the features use that idle time instead
    of ~23 s of stage 1."""
    from vistune.data.features import open_feature_cache
    from vistune.data.images import load_image
    from vistune.model.io import default_image_processor
    from vistune.model.llava import VisionPart

    # Stage 1's own config: its tower config and image aspect are what the cache's fingerprint covers.
    cfg = stage1_config(paths, s, language_model=paths.stage1_language_model(s))
    tower = VisionPart(cfg.model.config)
    open_feature_cache(
        sorted(str(p) for p in world.images("train").glob("*.png")),
        model=tower,
        image_processor=default_image_processor(tower),
        load_image=load_image,
        cache_dir=cfg.data.feature_cache_dir,
    )


class SideBySide:
    """Run `job(*args)` in a second process while the `with` body runs here, the CPU threads split between them.

    The demo's pretraining steps are compute-bound and gain less than 2x from a second thread, so on 2 cores the two
    side by side, one thread each, finish sooner than the two in turn (a probe: 51.9 + 84.8 s in turn at 2 threads,
    80.3 and 114.8 s side by side; the demo's step 281.5 s against 341.6 s; docs/demo.md, fifteenth round). Each
    side's thread count is fixed, so results do not depend on timing. With fewer than 2 threads, or `run=False`, the
    job runs here after the body (or not at all).
    The body's exception stops the second process; the job's exception is raised by `result()`.
    """

    def __init__(self, job: Callable[..., Any], *args: Any, run: bool = True) -> None:
        self.job, self.args, self.run = job, args, run
        self.threads = torch.get_num_threads()
        self._pool: Any = None
        self._async: Any = None
        self._value: Any = None

    def __enter__(self) -> SideBySide:
        if self.run and self.threads >= 2:
            import multiprocessing

            side = self.threads // 2
            # spawn, not fork: a forked child of a process that has run OpenMP work can deadlock.
            self._pool = multiprocessing.get_context("spawn").Pool(
                1, initializer=torch.set_num_threads, initargs=(side,)
            )
            self._async = self._pool.apply_async(self.job, self.args)
            torch.set_num_threads(self.threads - side)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        torch.set_num_threads(self.threads)
        if self._pool is None:
            if exc is None and self.run:
                self._value = self.job(*self.args)
            return
        if exc is not None:
            self._pool.terminate()
        else:
            self._async.wait()
            self._pool.close()
        self._pool.join()  # reaps the worker, so its CPU time is counted (`_cpu_seconds`)

    def result(self) -> Any:
        return self._value if self._async is None else self._async.get()


def load_pixels(world, split: str, truths: list, size: int) -> torch.Tensor:
    """The split's images, preprocessed exactly as training will (the tower's ImageProcessor)."""
    from vistune.data.images import ImageProcessor, load_image
    from vistune.model.vision import HALF

    processor = ImageProcessor(size=size, crop_size=size, image_mean=HALF, image_std=HALF, aspect="pad")
    images = [load_image(world.images(split) / t.file_name) for t in truths]
    return processor(images)  # [N, 3, S, S]


def _every(n: int, what: str) -> Callable[[int, float], None]:
    def report(step: int, loss: float) -> None:
        if step % n == 0:
            print(f"    {what} step {step}: loss {loss:.3f}", flush=True)

    return report


def language_step(paths: DemoPaths, s: DemoSettings) -> list[float]:
    """Tokenizer + tiny Llama pretrained on the world's text (captions and teacher text, no images), then on
    in-context copying (`LanguagePretrainConfig.induction_steps`)."""
    from vistune.demo.language import (
        build_language_model,
        make_world_tokenizer,
        pack_blocks,
        plain_token_ids,
        pretrain_induction,
        pretrain_language_model,
    )

    docs = world_text(paths, s)
    tokenizer = make_world_tokenizer(docs, s.language, paths.language_model)
    torch.manual_seed(s.seed)
    model = build_language_model(s.language, tokenizer)
    blocks = pack_blocks(docs, tokenizer, s.language_train.block_size)
    losses = pretrain_language_model(model, blocks, s.language_train, on_step=_every(50, "language model"))
    record = paths.language_model / "induction.json"  # the report reads it: none when there was no copying
    record.unlink(missing_ok=True)
    shutil.rmtree(paths.text_language_model, ignore_errors=True)
    if s.language_train.induction_steps:  # after the text: text after the copying undid much of its gain
        # The checkpoint before the copying: stage 1 aligns the projector to it (`DemoSettings.stage1_before_copying`).
        model.save_pretrained(str(paths.text_language_model))
        tokenizer.save_pretrained(str(paths.text_language_model))
        induction = pretrain_induction(
            model, plain_token_ids(tokenizer), s.language_train, on_step=_every(200, "in-context copying")
        )
        print(f"    in-context copying, held-out next-token accuracy: {induction.accuracy:.3f}", flush=True)
        record.write_text(json.dumps(asdict(induction)))
    model.save_pretrained(str(paths.language_model))
    tokenizer.save_pretrained(str(paths.language_model))
    (paths.language_model / "losses.json").write_text(json.dumps(losses))
    return losses


def place_images(records: list[dict], placement: str) -> list[dict]:
    """Each record's `<image>` placeholders moved before or after the text of its first human turn (in place)."""
    from vistune.text.templates import IMAGE_PLACEHOLDER, with_image_placeholders

    for record in records:
        first = next(t for t in record["conversations"] if t["from"] == "human")
        if count := first["value"].count(IMAGE_PLACEHOLDER):
            first["value"] = with_image_placeholders(first["value"], count, placement)
    return records


def world_text(paths: DemoPaths, s: DemoSettings) -> list[str]:
    """Documents for the LM, in the chat template, with the `<image>` placeholder removed (the LM never sees images
    before LLaVA training): every stage-1 caption, every teacher conversation, and each train image's closed
    questions as ONE multi-turn conversation per answer style (short, then sentence in a separate document).

    One conversation per image because its later answers can be read off its earlier turns ("Is there an orange
    circle? yes" ... "What shape is the orange object? circle"): text that asks the LM to look things up in its
    context, the ability stage 2 must point at the image tokens. The two LMs that learned the color/shape lookup
    best from perfect image features were pretrained on such text; others pretrained the same way did not, so this
    is the better-evidenced text, not a fix (docs/demo.md, fourth round). The sentence replies teach, from text
    alone, to restate what a question names ("What shape is the red object?" -> "It is a red star.").
    """
    from vistune.testing import make_tiny_tokenizer
    from vistune.text.templates import render, to_messages

    chat_tokens = make_tiny_tokenizer(vocab_size=300)  # only its BOS/EOS strings are used by the template

    def text(turns: list[dict[str, str]]) -> str:
        turns = [{**t, "value": t["value"].replace("<image>\n", "").replace("\n<image>", "")} for t in turns]
        return render(s.template, to_messages(turns), chat_tokens).text

    docs = [r["conversations"][1]["value"] for r in json.loads((paths.data / "stage1.json").read_text())]
    docs += [text(r["conversations"]) for r in json.loads((paths.data / "instruct.json").read_text())]
    rng = random.Random(s.seed)
    for style_file in ("closed.json", "sentence.json"):
        per_image: dict[str, list[list[dict[str, str]]]] = {}
        for r in json.loads((paths.data / style_file).read_text()):
            per_image.setdefault(r["image"], []).append(r["conversations"])
        for pairs in per_image.values():
            rng.shuffle(pairs)
            docs.append(text([turn for pair in pairs for turn in pair]))
    return docs


def stage_config(
    paths: DemoPaths,
    s: DemoSettings,
    *,
    name: str,
    data: str,
    template: str,
    stage: StageSettings,
    train_lm: bool,
    init_projector: str | None,
    model_config: dict[str, Any] | None = None,
    tokenizer: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    language_model: Path | None = None,
):
    """The `vistune.train` config of one stage: built from parts (encoder file + pretrained LM).

    language_model: the world preset's LM checkpoint to build from (default: the finished one, `lm/`);
    model_config / tokenizer: other parts than the world preset's (its encoder file + tiny LM), e.g. real-small's;
    overrides: keys merged into a section of the config (e.g. {"model": {"lora": {...}}, "optim": {...}}).
    """
    from vistune.train.config import train_config_from_dict

    if model_config is None:
        from vistune.demo.encoder import vision_config

        model_config = {
            "vision": asdict(vision_config(s.encoder, str(paths.encoder))),
            "text_pretrained": str(language_model or paths.language_model),
            "projector": s.projector,
        }
    model_config = {**model_config, "template": template, "image_placement": s.image_placement}
    config = {
        "name": name,
        "model": {
            "config": model_config,
            "tokenizer": tokenizer or str(paths.language_model),
            "init_projector": init_projector,
            "trainable": {"vision": False, "projector": True, "language_model": train_lm},
            # the chat template's system turn and user header: 12 of ~40 tokens of a closed question
            "share_prompt_prefix": True,
        },
        "data": {
            "train": str(paths.data / data),
            "image_folder": str(paths.world / "train"),
            "template": template,
            "model_max_length": 512,
            "cache_vision_features": True,
            "feature_cache_dir": str(paths.feature_cache),
        },
        "train": {
            "output_dir": str(paths.stage(name)),
            "seed": s.seed,
            "max_steps": stage.steps,
            "global_batch_size": stage.batch_size,
            "micro_batch_size": stage.batch_size,
            "precision": "auto",  # fp32 on the CPU (bf16 matmuls are far slower there), bf16 autocast on a GPU
            "log_every": 1,
            "resume": None,
            "progress": True,
        },
        "optim": {"lr": stage.lr, "warmup_ratio": stage.warmup_ratio, "schedule": "cosine"},
    }
    for section, keys in (overrides or {}).items():
        config[section] = {**config[section], **keys}
    return train_config_from_dict(config, where=f"demo {name}")


def stage1_config(paths: DemoPaths, s: DemoSettings, *, name: str = "stage1", **parts: Any):
    """Stage 1's `vistune.train` config: the projector alone on the captions (`plain` template), encoder and LM
    frozen, from a fresh projector. parts: `stage_config`'s `language_model` / `model_config` / `tokenizer`."""
    return stage_config(
        paths,
        s,
        name=name,
        data="stage1.json",
        template="plain",
        stage=s.stage1,
        train_lm=False,
        init_projector=None,
        **parts,
    )


def train_stages(
    paths: DemoPaths,
    s: DemoSettings,
    steps: Steps,
    *,
    prefix: str = "",
    stage1: bool | str = True,
    stage2_data: str = "stage2.json",
    lookup: bool = True,
) -> Path:
    """Stage 1 (projector on captions, `plain` template) then stage 2 (projector + LM); returns the model dir.

    stage1: True to train it, False to skip it (stage 2 starts from a random projector), or the path of a stage-1
    projector to reuse.
    lookup: run stage 2's first phase (lookup questions only, `DemoSettings.lookup`) when the settings have one.
    """
    from vistune.train.trainer import train

    init_projector = stage1 if isinstance(stage1, str) else None
    if stage1 is True:
        with steps.step(f"{prefix}stage 1: align the projector on captions"):
            cfg = stage1_config(
                paths, s, name=f"{prefix}stage1", language_model=paths.stage1_language_model(s)
            )
            train(cfg)
            init_projector = str(paths.stage(f"{prefix}stage1") / "projector.safetensors")

    def phase(name: str, data: str, stage: StageSettings, init_model: str | None) -> Path:
        """One stage-2 phase; it continues from the previous phase's whole model (projector + LM), if any."""
        cfg = stage_config(
            paths,
            s,
            name=f"{prefix}{name}",
            data=data,
            template=s.template,
            stage=stage,
            train_lm=True,
            init_projector=None if init_model else init_projector,
            overrides={"model": {"init": init_model, "config": None}} if init_model else None,
        )
        train(cfg)
        return paths.stage(f"{prefix}{name}") / "model"

    init_model = None
    if lookup and s.lookup is not None:
        with steps.step(f"{prefix}stage 2, phase 1: lookup questions ({', '.join(s.lookup_types)})"):
            init_model = str(phase("stage2_lookup", "lookup.json", s.lookup, None))
        if s.short_lookup is not None:
            with steps.step(f"{prefix}stage 2, phase 1b: the same questions with one-word answers"):
                init_model = str(phase("stage2_short", "lookup_short.json", s.short_lookup, init_model))
    title = ", phase 2: all instruction data" if init_model else ""
    with steps.step(f"{prefix}stage 2{title}: instruction tuning (projector + language model)"):
        return phase("stage2", stage2_data, s.stage2, init_model)


def evaluate_step(model_dir: Path, world, val: list, s: DemoSettings) -> dict[str, Any]:
    """Held-out exact match per question type + detailed-description precision/recall, with a few examples."""
    from vistune.eval.world import evaluate_model

    return evaluate_model(
        model_dir,
        val,
        world.images("val"),
        seed=s.seed + 1,
        max_images=s.eval_images,
        max_descriptions=s.eval_descriptions,
        examples=s.examples,
    )


class Reuse:
    """With `--reuse`, a preparation step whose settings are unchanged since it last finished is skipped.

    Each finished step writes `.done/<name>.json` with the settings it depends on, its upstream steps' settings
    included (their outputs are deterministic for them); a step is reused only if that record equals the current
    settings, so a changed setting reruns the step and every step that depends on it.
    """

    def __init__(self, out: Path, enabled: bool) -> None:
        self.dir, self.enabled = out / ".done", enabled

    def has(self, name: str, depends: dict[str, Any]) -> bool:
        marker = self.dir / f"{name}.json"
        return self.enabled and marker.is_file() and json.loads(marker.read_text()) == _jsonable(depends)

    def mark(self, name: str, depends: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / f"{name}.json").write_text(json.dumps(_jsonable(depends), sort_keys=True))


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))  # tuples -> lists, so a record read back compares equal


def step_dependencies(s: DemoSettings) -> dict[str, dict[str, Any]]:
    """The settings each preparation step's output depends on, its upstream steps' included (for `Reuse`).

    The encoder is pretrained on the world alone, so the instruction data's settings do not rerun it; the language
    model is pretrained on the world's text, which the instruction data are part of.
    """
    world = {
        "seed": s.seed,
        "image_size": s.image_size,
        "train": s.train_images,
        "val": s.val_images,
        "world": asdict(s.world),
    }
    data = {
        **world,
        "teacher": s.teacher_images,
        "closed": s.closed_rounds,
        "flavors": s.flavors,
        "lookup_types": s.lookup_types,
        "lookup_style": s.lookup_style,
        "image_placement": s.image_placement,
        "records": 4,  # the records' layout (3: single-turn, both styles; 4: + lookup_short.json); bump on change
    }
    return {
        "world": world,
        "data": data,
        "encoder": {**world, "encoder": asdict(s.encoder), "encoder_train": asdict(s.encoder_train)},
        "lm": {
            **data,
            "lm": asdict(s.language),
            "lm_train": asdict(s.language_train),
            "template": s.template,
            "text": 3,  # world_text's layout (3: each image's closed questions as one conversation per style)
            "checkpoints": 2,  # what the step saves (2: also lm_text/, the LM before its copying); bump on change
        },
    }


def run_demo(
    out: str | Path,
    s: DemoSettings,
    *,
    ablation: bool = False,
    reuse: bool = False,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run every step; write `report.md` and `results.json` into `out`."""
    from vistune.demo.report import write_report
    from vistune.world.build import WorldPaths

    paths = DemoPaths(Path(out))
    paths.out.mkdir(parents=True, exist_ok=True)
    # Stage 2's lookup phase and its one-word-answer phase: one more step each per full training.
    phases = 0 if s.lookup is None else 1 + (s.short_lookup is not None)
    steps = Steps(6 + phases + (7 + 2 * phases if ablation else 0), say)
    cache = Reuse(paths.out, reuse)
    depends = step_dependencies(s)
    with steps.step(
        f"build the world ({s.train_images} train + {s.val_images} held-out images, {s.image_size} px)"
    ):
        world = (
            WorldPaths(paths.world) if cache.has("world", depends["world"]) else build_world_step(paths, s)
        )
        cache.mark("world", depends["world"])
        train_truths, val_truths = load_truths(world, "train"), load_truths(world, "val")
    copying = ", then on in-context copying" if s.language_train.induction_steps else ""
    with steps.step(
        "side by side: pretrain the vision encoder on the world (dense per-region targets; then frozen) | make the "
        "instruction data (teacher: rule-based `world`; stage-1 captions; closed questions, short and sentence "
        f"answers), then pretrain the language model on the world's text{copying}"
    ):
        encoder_done = cache.has("encoder", depends["encoder"])
        with SideBySide(_encoder_job, paths, s, run=not encoder_done) as encoder_job:
            if not cache.has("data", depends["data"]):
                datagen_step(paths, s, world, train_truths, say)
            cache.mark("data", depends["data"])
            if not cache.has("lm", depends["lm"]):
                language_step(paths, s)
            cache.mark("lm", depends["lm"])
        encoder_metrics = (
            json.loads((paths.encoder.parent / "metrics.json").read_text())["val"]
            if encoder_done
            else encoder_job.result()
        )
        cache.mark("encoder", depends["encoder"])
        say("    encoder, held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in encoder_metrics.items()))
    model_dir = train_stages(paths, s, steps)
    with steps.step(f"evaluate on {s.eval_images} held-out images"):
        scores = evaluate_step(model_dir, world, val_truths, s)
        say("    " + headline(scores))
    result = DemoResult(paths.out, model_dir, scores, steps.times, encoder_metrics)
    if ablation:
        result.ablations = run_ablations(paths, s, steps, world, train_truths, val_truths, say)
    with steps.step("write report.md"):
        (paths.out / "results.json").write_text(json.dumps(result.to_dict(), indent=1))
        write_report(result, s, world, val_truths)
    say(f"report: {paths.out / 'report.md'}")
    say(
        f"chat with the trained model: vistune chat --model {model_dir} --image {world.images('val')}/"
        f"{val_truths[0].file_name}"
    )
    return result


def run_ablations(paths, s, steps, world, train_truths, val_truths, say) -> dict[str, dict[str, Any]]:
    """The paper-style ablations, each trained with the same step budget and evaluated the same way."""
    out: dict[str, dict[str, Any]] = {}
    model_dir = train_stages(paths, s, steps, prefix="no_stage1_", stage1=False)
    with steps.step("evaluate: without stage 1"):
        out["without stage 1"] = evaluate_step(model_dir, world, val_truths, s)
    captions_only = paths.data / "stage2_captions.json"
    captions_only.write_text((paths.data / "stage1.json").read_text())
    model_dir = train_stages(
        paths,
        s,
        steps,
        prefix="captions_",
        stage1=str(paths.stage("stage1") / "projector.safetensors"),  # the same stage 1 as the full method
        stage2_data="stage2_captions.json",
        lookup=False,  # no instruction data at all, lookup questions included
    )
    with steps.step("evaluate: stage 2 on captions only"):
        out["stage 2 on captions only (no instruction data)"] = evaluate_step(model_dir, world, val_truths, s)
    random_paths = DemoPaths(paths.out / "random_encoder")
    _link_shared(paths, random_paths)
    encoder_step(random_paths, s, world, train_truths, val_truths, random_init=True)
    model_dir = train_stages(random_paths, s, steps, prefix="")
    with steps.step("evaluate: random frozen encoder"):
        out["random frozen encoder"] = evaluate_step(model_dir, world, val_truths, s)
    for name, scores in out.items():
        say(f"    {name}: {headline(scores)}")
    return out


def _link_shared(paths: DemoPaths, other: DemoPaths) -> None:
    """The random-encoder run reuses the world, the data and the language model (symlinks, no copies)."""
    other.out.mkdir(parents=True, exist_ok=True)
    for name in ("world", "data", "lm", "lm_text"):
        link = other.out / name
        if not link.exists() and (paths.out / name).exists():
            link.symlink_to((paths.out / name).resolve(), target_is_directory=True)


def headline(scores: dict[str, Any]) -> str:
    """One line of held-out scores, for progress output."""
    from vistune.eval.world import SCORE_KEYS

    parts = []
    for style, key in SCORE_KEYS.items():
        c = scores[key]
        per_type = ", ".join(f"{k} {v:.1%}" for k, v in c["accuracy"].items())
        parts.append(f"{style} answers {c['overall']:.1%} on {c['n']} questions ({per_type})")
    desc = scores["descriptions"]
    return (
        f"closed questions: {'; '.join(parts)}; descriptions "
        f"precision {desc['precision']:.1%} recall {desc['recall']:.1%}"
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise VistuneError(f"--out {out} exists and is not a directory; pick another path")
