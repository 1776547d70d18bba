"""The demo's settings: one typed dataclass, with presets (`world`, `fast`) that differ only in sizes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vistune.demo.encoder import WorldEncoderOptions
from vistune.demo.language import LanguageModelOptions, LanguagePretrainConfig
from vistune.demo.pretrain_vision import EncoderPretrainConfig
from vistune.errors import VistuneError
from vistune.world.scene import WorldConfig


@dataclass
class StageSettings:
    """One LLaVA training stage (passed on to `vistune.train`)."""

    steps: int
    batch_size: int
    lr: float
    warmup_ratio: float = 0.05


@dataclass
class DemoSettings:
    """Everything `vistune demo` does, sized for a 2-core CPU."""

    seed: int = 0
    image_size: int = 72
    world: WorldConfig = field(
        default_factory=WorldConfig
    )  # which shapes / colors / object counts scenes have
    # Many distinct images, not many epochs: with 2,000 the LM memorized answers instead of learning to look them up
    # (experiments/gt_binding.py; docs/demo.md). 20,000 with a 4,000-step lookup phase fit 10 minutes on 2 idle
    # cores (9 min 10-30 s measured); 8,000 with 1,200 steps took 5 min 04 s and learned less.
    train_images: int = 20000
    val_images: int = 200
    # Train images the teacher writes conversation / detail / reasoning data for. Fewer than all: with perfect
    # (ground-truth) image features, a stage 2 on short-answer questions alone learned the closed questions faster
    # than one where long teacher text took most of the gradient (see docs/demo.md), so the mix favours them.
    teacher_images: int = 300
    # Closed-question rounds per train image (5 types each; every question in both answer styles).
    closed_rounds: int = 1
    flavors: list[str] = field(default_factory=lambda: ["conversation", "detail", "complex_reasoning"])
    # A global token for the counts keeps the 9 cell tokens local (docs/demo.md, seventh round). The position code
    # at magnitude 8, not 4: at 4 the LM found the asked object's token (0.80 of one head's attention on it) but
    # carried its cell on poorly (a linear probe read it 50% at the restated noun), and position stayed a bag of
    # occupied cells. At 8, over 5 seeds of stage 2's sample order: position 72.0% (45.0-87.5%) against 50.7%,
    # sentence overall 87.5% against 82.0%, short 83.8% against 78.6%; 12 was in between, 24 drowned the object
    # features (docs/demo.md, eleventh round). The global token summarizes the cell tokens, not the patches: the
    # encoder then reads per-shape counts 96.8% right (90.8% from the patches), objects' patches 95.4% (91.6%), and
    # stage 2 (seed 0) scored sentence 95.3 / short 95.1% against 95.0 / 94.9% (docs/demo.md, fourteenth round).
    encoder: WorldEncoderOptions = field(
        default_factory=lambda: WorldEncoderOptions(
            global_token=True, position_scale=8.0, global_from="cells"
        )
    )
    # 850 steps, not 400: the encoder then reads each cell (color, shape, size) 99.0% right (93.1% at 400; 99.6% at
    # 1,000), and with the counts on a global token (`WorldEncoderOptions.global_token`) the LM's lookup forms on it
    # (docs/demo.md seventh round). Without the global token the longer pretraining hurt (color 47%). 850 (was
    # 1,000) pays, with the shorter lookup phase, for the LM's in-context copying within the 10 minutes.
    encoder_train: EncoderPretrainConfig = field(default_factory=lambda: EncoderPretrainConfig(steps=850))
    language: LanguageModelOptions = field(default_factory=LanguageModelOptions)
    # lr 1e-3, not 3e-3: an LM pretrained at 3e-3 then learned the sentence-answer lookup from perfect image
    # features far slower (color 47%, shape 11% at 900 steps) than one pretrained at 1e-3 (50% / 100%).
    # Then in-context copying (`pretrain_induction`; 1,800 steps in the ninth round): without it the LM never found the
    # named object's token when the answer comes after the naming word (existence one constant answer, position a
    # bag of occupied cells); with it existence 93.5-96.5%, one-word answers 68-74% (46% before; docs/demo.md, ninth
    # round). 900 steps were not enough (sentence 54.5%); runs of at most 12 tokens lost existence once (42%).
    # 2,600, not 1,800: the copying sits mid-transition there (held-out copy accuracy 0.12 at 1,800, 0.21 at 2,600),
    # and with the pretraining run side by side at one thread each (`pipeline.SideBySide`), 1,800 left stage 2
    # without the color and position lookups (sentence 77.1%), where 2,600 formed them on both encoders tried
    # (sentence 94.1 / 93.2%, short 95.7 / 93.5%) and in the demo itself (94.5 / 95.4%; docs/demo.md, fifteenth
    # round). Near the edge: copying run to completion broke the lookups (3,600 steps; thirteenth round). Those three
    # were all stage-2 seed 0: with seed 1 the lookups did not form (sentence 73.5%; docs/demo.md, sixteenth round).
    language_train: LanguagePretrainConfig = field(
        default_factory=lambda: LanguagePretrainConfig(steps=100, lr=1e-3, induction_steps=2600)
    )
    # Stage 1 aligns the projector to the LM as pretrained on text, before its in-context copying (the copying LM is
    # the one stage 2 trains). Aligned to the copying LM, the projector made every image token resemble the
    # color and shape words in general (mean cosine 0.18-0.20 to them, against 0.01-0.04 when aligned before it),
    # and stage 2 never left answering a color that is somewhere in the image: 48-56% in 3 seeds x 500
    # color-only steps and 50% in 2 seeds x 1,200, against 99-100% from a projector aligned before the copying
    # (docs/demo.md, tenth round). False aligns to the finished LM, as LLaVA does with its one LLM.
    stage1_before_copying: bool = True
    projector: str = "mlp2x_gelu"
    template: str = "chatml"
    # Where stage 2's records and the evaluation put the image: after the question ("What color is the star?\n<image>";
    # LLaVA's instruction data places it before or after), so every image token can see what is asked. Before it,
    # the lookups keyed by a shape word (color and position questions) formed in 1 of 4 sample orders of stage 2
    # (sentence 70.8-93.0%); after it, in 4 of 4 on the same world, encoder, LM and stage-1 projector
    # (docs/demo.md, seventeenth round). Saved in the model's config, so `vistune chat` asks the same way.
    image_placement: str = "after"
    # 160 steps x 64 (about half an epoch of the 20,000 captions), not 40: the caption loss barely moves (3.15 against
    # 3.17) but stage 2 then forms the color and position lookups in all five runs measured (three stage-2 seeds, two
    # more stage-1 draws): sentence 89.6-95.3% (mean 93.7%), short 89.1-95.1% (93.2%), against 74.1-87.5% and
    # 73.8-79.0% after 40 steps in the same three stage-2 seeds. One epoch (313 steps, one run) lost them again
    # (68.2 / 68.9%). docs/demo.md, thirteenth round.
    stage1: StageSettings = field(default_factory=lambda: StageSettings(steps=160, batch_size=64, lr=2e-3))
    # Stage 2 runs in two phases. First only the questions whose answer must be looked up in the image token the
    # question names (`lookup_types`): mixed with every other type from the start, the tiny LM never learned that
    # lookup (color stayed at chance for 2,500 steps even with perfect features); alone, it can learn it, and then
    # the full mix (`stage2`) keeps it (with perfect features it also learned existence on top; with the encoder's,
    # existence stayed near its baseline). `lookup: None` trains stage 2 in one phase.
    # The lookup forms slowly on the real encoder's features, hence most of the budget. 1,850 steps (was 3,000; and
    # 850 mixed steps, was 1,000) pay for the LM's in-context copying within the 10 minutes; with the copying, 3,000
    # read more (sentence 78.1% against 73.0% at 2,000, position 56% against 33.5%: docs/demo.md, ninth round) but
    # do not fit.
    lookup: StageSettings | None = field(
        default_factory=lambda: StageSettings(steps=1850, batch_size=32, lr=1e-3)
    )
    # Measured (docs/demo.md, fifth round): with color + shape here, position stayed at chance (11.5%); adding it
    # moved it to 31-35%; adding existence did not move existence (it answers "no" to all) nor cost the others.
    lookup_types: list[str] = field(default_factory=lambda: ["color", "shape", "position", "existence"])
    # Sentence answers that restate what was asked ("What color is the star?" -> "The star is red.") make the lookup
    # one step: the answer word follows the word naming the object. With perfect image features a fresh LM learned
    # color and shape to 100% in 800 steps this way, against 40% / 17% after 2,000 steps with one-word answers.
    lookup_style: str = "sentence"
    # Then the same questions with one-word answers (LLaVA-1.5's "Answer with a single word or phrase."), before
    # the full mix: a one-word answer has no restated noun to key the lookup on, so the short path needs a lookup
    # of its own, and in the mix alone it did not form (short color 49-53% in three seeds, where the sentence path
    # read 96-98% in two). 1,200 steps of these: short +5.5 / +9.6 / +4.7 points, sentence -0.1 / +1.8 / +0.6 (seeds 0-2;
    # docs/demo.md, twelfth round); 194 s on a 2-core machine that ran the whole demo in 21 min. `None` skips it.
    short_lookup: StageSettings | None = field(
        default_factory=lambda: StageSettings(steps=1200, batch_size=32, lr=1e-3)
    )
    stage2: StageSettings = field(default_factory=lambda: StageSettings(steps=850, batch_size=32, lr=1e-3))
    eval_images: int = 200  # held-out images asked one question of each type
    eval_descriptions: int = 40  # held-out images described in detail
    examples: int = 4  # example images with questions and answers in the report

    def __post_init__(self) -> None:
        if self.teacher_images > self.train_images:
            raise VistuneError(
                f"demo: teacher_images ({self.teacher_images}) cannot exceed train_images ({self.train_images})"
            )
        if self.eval_images > self.val_images or self.eval_descriptions > self.val_images:
            raise VistuneError("demo: eval_images and eval_descriptions cannot exceed val_images")


def _fast() -> DemoSettings:
    """Small enough for CI (a few minutes on 2 cores), big enough to learn counting well above chance."""
    return DemoSettings(
        train_images=1500,
        val_images=100,
        teacher_images=100,
        closed_rounds=2,
        encoder_train=EncoderPretrainConfig(steps=200),
        # No copying: with 100 steps of it the sentence-style count fell to 54%, under the fast test's 55%.
        language_train=LanguagePretrainConfig(steps=60),
        stage1=StageSettings(steps=15, batch_size=64, lr=2e-3),
        lookup=StageSettings(steps=150, batch_size=32, lr=1e-3),
        short_lookup=None,  # its 150 lookup steps form no lookup to carry over
        stage2=StageSettings(steps=400, batch_size=32, lr=1e-3),
        eval_images=100,
        eval_descriptions=10,
        examples=2,
    )


PRESETS = {"world": DemoSettings, "fast": _fast}


def preset(name: str) -> DemoSettings:
    if name not in PRESETS:
        raise VistuneError(f"unknown demo preset {name!r}; valid presets are: {', '.join(PRESETS)}")
    return PRESETS[name]()


def replace(settings: DemoSettings, **changes) -> DemoSettings:
    return dataclasses.replace(settings, **changes)
