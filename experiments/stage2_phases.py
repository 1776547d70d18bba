"""Rerun stage 2 of a finished `vistune demo` run with one change, then score it on held-out images.

Throwaway research script, kept so the figures of docs/demo.md's tenth round can be re-measured. It calls the
demo's own pieces (`stage_config`, `vistune.train`, `evaluate_model`), reads the demo directory's world, data,
encoder, feature cache, LM and stage-1 projector, and writes only under OUT (default /tmp/stage2_phases). The
trainer is deterministic: the defaults reproduce the demo's lookup phase exactly (checked: the same scores).

    vistune demo --out runs/demo
    python experiments/stage2_phases.py runs/demo NAME [key=value ...]

keys:
  steps=N bs=N lr=X seed=N     the lookup phase (default: DemoSettings().lookup, seed 0)
  rounds=N types=a,b           lookup data made anew: N question rounds per train image of these types
                               (default: the demo's data/lookup.json)
  init=stage1|none|PATH        the projector stage 2 starts from: the run's stage 1, a fresh one, or a file
  s1lr=X s1steps=N s1data=F s1lm=DIR
                               run stage 1 anew (lr X, N steps, caption file F, aligned to the LM in DIR) and
                               start from its projector
  pscale=X                     the encoder's position code magnitude (default: DemoSettings's, 8 since the
                               eleventh round; pass pscale=4 for a run directory made before it); a new value
                               with s1lr= (the run's stage-1 projector was aligned to its own)
  gfrom=cells                  the encoder's global token summarizes its cell tokens (a run directory made by
                               `variant_dir.py ... encoder gfrom=cells`)
  ccode=X                      the encoder appends its class codes at scale X (`variant_dir.py ... encoder ccode=X`)
  lstyle=both                  the lookup phase also on the short-answer form of its questions (data/closed.json's
                               records of the lookup types, shuffled in with the sentence ones; the same steps)
  first=a,b:N                  curriculum: the first N lookup steps on these types only
  posform=bare                 the lookup data's position replies as "The star is top left." (the region right
                               after "is", where color's answer is)
  from_lookup=DIR              skip the lookup phase: phase 2 (mixed=1) starts from this lookup-phase model
  countform=echo               phase 2's sentence count replies as "Stars? There are two." (the counted noun
                               first, as existence's "A brown heart? No, there is none.")
  countboost=N                 phase 2's data gains N per-shape count questions (both answer styles) on every
                               train image where a shape appears 2+ times, about such a shape (the evaluator's
                               per-shape questions are mostly "one": a shape picked from the objects is rarely
                               repeated)
  short_after=N                after the lookup phase, N steps on the short-answer records of the lookup types
                               (data/closed.json), before phase 2: the short path trained once the lookup formed
  count_after=N                after the one-word phase (or from_lookup's model), N steps on count questions alone
                               (data/closed.json's and data/sentence.json's, both answer styles, shuffled), before
                               phase 2: alone, the LM learned per-shape counts in 300 steps (ninth round)
  count_q=singular             per-shape count questions (count phase and phase 2) as "How many star objects are
                               there?" -> "There are two star objects.": the question names the shape by the same
                               token as color questions do (a hypothesis test: evaluate with count_answers.py
                               singular=1; the demo's evaluator keeps the plural)
  count_kind=shape             count_after's records: only the per-shape questions ("How many stars")
  place=before|after           the image before or after the question in every stage-2 record and held-out
                               question (default: DemoSettings's, after since the seventeenth round; `qfirst=1`
                               in its figures)
  plr=X                        every stage-2 phase trains the projector at lr X (the LM at the phase's own)
  mixed=1                      then phase 2 (all instruction data, DemoSettings().stage2) from the lookup model
  msteps=N                     phase 2's steps (default DemoSettings().stage2.steps)
  descriptions=N               held-out images described (default 0)
  out=DIR
"""

import json
import sys
import time
from pathlib import Path

from vistune.demo.pipeline import DemoPaths, load_truths, place_images, stage_config
from vistune.demo.settings import DemoSettings, StageSettings
from vistune.eval.world import (
    QUESTION_TYPES,
    SCORE_KEYS,
    evaluate_model,
    make_closed_questions,
    question_records,
)
from vistune.train.trainer import train
from vistune.world.build import WorldPaths

demo, name = Path(sys.argv[1]), sys.argv[2]
args = dict(a.split("=", 1) for a in sys.argv[3:])
out = Path(args.get("out", "/tmp/stage2_phases"))
out.mkdir(parents=True, exist_ok=True)
s = DemoSettings()
s.seed = int(args.get("seed", 0))
s.lookup = StageSettings(
    steps=int(args.get("steps", s.lookup.steps)),
    batch_size=int(args.get("bs", s.lookup.batch_size)),
    lr=float(args.get("lr", s.lookup.lr)),
)
s.image_placement = args.get("place", s.image_placement)
if "msteps" in args:
    s.stage2 = StageSettings(steps=int(args["msteps"]), batch_size=s.stage2.batch_size, lr=s.stage2.lr)
if "pscale" in args:
    s.encoder.position_scale = float(args["pscale"])
if "gfrom" in args:
    s.encoder.global_from = args["gfrom"]
if "ccode" in args:  # a run directory made by `variant_dir.py ... encoder ccode=X`
    s.encoder.class_code, s.encoder.class_scale = True, float(args["ccode"])
paths = DemoPaths(demo)
world = WorldPaths(paths.world)
QUESTION_START = {
    "color": "What color",
    "shape": "What shape",
    "count": "How many",
    "position": "Where",
    "existence": "Is there",
}


def of_types(records: list[dict], types) -> list[dict]:
    """The single-turn question records whose question is of these types (records carry no type: by its start)."""
    return [
        r
        for r in records
        if any(
            r["conversations"][0]["value"].replace("<image>", "").strip().startswith(QUESTION_START[t])
            for t in types
        )
    ]


def run(cfg, subdir: str) -> Path:
    cfg.train.output_dir = str(out / subdir)
    start = time.time()
    train(cfg)
    print(f"{subdir}: trained in {time.time() - start:.0f} s", flush=True)
    return out / subdir


data = "lookup.json"
if "rounds" in args:
    types = args.get("types", ",".join(s.lookup_types)).split(",")
    assert set(types) <= set(QUESTION_TYPES), types
    questions = make_closed_questions(
        load_truths(world, "train"), seed=0, per_type=int(args["rounds"]), types=types
    )
    data = str(out / f"{name}_data.json")
    Path(data).write_text(json.dumps(question_records(questions, id_prefix="lookup", style="sentence")))
    print(f"lookup data: {len(questions)} questions", flush=True)


def bare_positions(source: str, target: str) -> str:
    """posform=bare: every sentence position reply as "The star is top left." (short answers are left as they are)."""
    from vistune.world.vocab import REGION_PHRASES

    region_of = {phrase: region for region, phrase in REGION_PHRASES.items()}
    records = json.loads((paths.data / source).read_text())
    for r in records:
        for turn in r["conversations"][1::2]:
            named, _, phrase = turn["value"].rstrip(".").partition(" is ")
            if phrase in region_of:
                turn["value"] = f"{named} is {region_of[phrase]}."
    Path(target).write_text(json.dumps(records))
    return target


if args.get("lstyle") == "both":
    import random

    both = json.loads((paths.data / data).read_text()) + of_types(
        json.loads((paths.data / "closed.json").read_text()), s.lookup_types
    )
    random.Random(s.seed).shuffle(both)
    data = str(out / f"{name}_lookup_both.json")
    Path(data).write_text(json.dumps(both))
    print(f"lookup data, both answer styles: {len(both)} records", flush=True)

if args.get("posform") == "bare":
    data = bare_positions(data, str(out / f"{name}_lookup_bare.json"))


def singular_counts(records: list[dict]) -> list[dict]:
    """count_q=singular: "How many stars are there?" -> "How many star objects are there?" (and the reply)."""
    from vistune.world.vocab import SHAPES, plural

    for r in records:
        turns = r["conversations"]
        for shape in SHAPES:
            many = plural(shape, 2)
            if f"How many {many} are there?" in turns[0]["value"]:
                turns[0]["value"] = turns[0]["value"].replace(f"{many} are", f"{shape} objects are")
                reply = turns[1]["value"]
                turns[1]["value"] = reply.replace(f" {many}.", f" {shape} objects.").replace(
                    f" {shape}.", f" {shape} object."
                )
    return records


def echo_counts(source: str, target: str) -> str:
    """countform=echo: sentence count replies name what is counted first, as existence's do ("Stars? There are two.")."""
    records = json.loads((paths.data / source).read_text())
    for r in records:
        turns = r["conversations"]
        for question, reply in zip(turns[0::2], turns[1::2], strict=False):
            asked = question["value"].replace("<image>\n", "")
            if (
                asked.startswith("How many ")
                and asked.endswith(" are there?")
                and reply["value"].startswith("There ")
            ):
                noun = asked[len("How many ") : -len(" are there?")]
                verb_number = " ".join(reply["value"].split()[1:3])  # "are two" / "is one"
                reply["value"] = f"{noun.capitalize()}? There {verb_number}."
    Path(target).write_text(json.dumps(records))
    return target


def boost_counts(source: str, target: str, rounds: int) -> str:
    """countboost=N: per-shape count questions about repeated shapes, both answer styles, shuffled into `source`."""
    import random
    from collections import Counter

    from vistune.eval.world import ClosedQuestion
    from vistune.world.vocab import number_word, plural

    rng = random.Random(s.seed)
    questions = []
    for t in load_truths(world, "train"):
        repeated = sorted((shape, n) for shape, n in Counter(o.shape for o in t.objects).items() if n >= 2)
        for _ in range(rounds if repeated else 0):
            shape, n = rng.choice(repeated)
            questions.append(
                ClosedQuestion(
                    t.image_id,
                    t.file_name,
                    "count",
                    f"How many {plural(shape, 2)} are there?",
                    number_word(n),
                    f"There are {number_word(n)} {plural(shape, n)}.",
                )
            )
    extra = question_records(questions, id_prefix="boost") + question_records(
        questions, id_prefix="boost_sentence", style="sentence"
    )
    records = json.loads((paths.data / source).read_text()) + extra
    random.Random(s.seed).shuffle(records)
    Path(target).write_text(json.dumps(records))
    print(f"count boost: {len(extra)} records ({len(questions)} questions) added to {source}", flush=True)
    return target


init = args.get("init", "stage1")
projector = {"stage1": str(paths.stage("stage1") / "projector.safetensors"), "none": None}.get(init, init)
if "s1lr" in args:
    stage1 = StageSettings(
        steps=int(args.get("s1steps", s.stage1.steps)), batch_size=64, lr=float(args["s1lr"])
    )
    cfg = stage_config(
        paths,
        s,
        name=f"{name}_stage1",
        data=args.get("s1data", "stage1.json"),
        template="plain",
        stage=stage1,
        train_lm=False,
        init_projector=None,
        language_model=Path(args["s1lm"]) if "s1lm" in args else None,
    )
    projector = str(run(cfg, f"{name}_stage1") / "projector.safetensors")

init_model = None
if "first" in args:
    first_types, first_steps = args["first"].split(":")
    records = place_images(
        of_types(json.loads((paths.data / data).read_text()), first_types.split(",")), s.image_placement
    )
    first_data = out / f"{name}_first.json"
    first_data.write_text(json.dumps(records))
    stage = StageSettings(steps=int(first_steps), batch_size=s.lookup.batch_size, lr=s.lookup.lr)
    cfg = stage_config(
        paths,
        s,
        name=f"{name}_first",
        data=str(first_data),
        template=s.template,
        stage=stage,
        train_lm=True,
        init_projector=projector,
    )
    init_model = str(run(cfg, f"{name}_first") / "model")
    s.lookup.steps -= int(first_steps)


def placed(source: str, target: Path) -> str:
    """Every record's image placed as `s.image_placement` says (a run made before the seventeenth round has its
    data image-first), written to `target`."""
    source_path = Path(source) if Path(source).is_absolute() else paths.data / source
    records = place_images(json.loads(source_path.read_text()), s.image_placement)
    target.write_text(json.dumps(records))
    return str(target)


def phase(data: str, stage: StageSettings, subdir: str, init_model: str | None) -> Path:
    data = placed(data, out / f"{subdir}_{s.image_placement}.json")
    cfg = stage_config(
        paths,
        s,
        name=subdir,
        data=data,
        template=s.template,
        stage=stage,
        train_lm=True,
        init_projector=None if init_model else projector,
        overrides={
            **({"model": {"init": init_model, "config": None}} if init_model else {}),
            **({"optim": {"projector_lr": float(args["plr"])}} if "plr" in args else {}),
        },
    )
    return run(cfg, subdir) / "model"


model = Path(args["from_lookup"]) if "from_lookup" in args else phase(data, s.lookup, name, init_model)
if "short_after" in args:
    import random

    short = of_types(json.loads((paths.data / "closed.json").read_text()), s.lookup_types)
    random.Random(s.seed).shuffle(short)
    short_data = out / f"{name}_short.json"
    short_data.write_text(json.dumps(short))
    stage = StageSettings(steps=int(args["short_after"]), batch_size=s.lookup.batch_size, lr=s.lookup.lr)
    model = phase(str(short_data), stage, f"{name}_short", str(model))
if "count_after" in args:
    import random

    counts = of_types(
        json.loads((paths.data / "closed.json").read_text())
        + json.loads((paths.data / "sentence.json").read_text()),
        ["count"],
    )
    if args.get("count_q") == "singular":
        counts = singular_counts(counts)
    if args.get("count_kind") == "shape":
        counts = [r for r in counts if "How many shapes" not in r["conversations"][0]["value"]]
    random.Random(s.seed).shuffle(counts)
    count_data = out / f"{name}_count.json"
    count_data.write_text(json.dumps(counts))
    print(f"count phase: {len(counts)} records", flush=True)
    stage = StageSettings(steps=int(args["count_after"]), batch_size=s.lookup.batch_size, lr=s.lookup.lr)
    model = phase(str(count_data), stage, f"{name}_count", str(model))
if args.get("mixed") == "1":
    mixed = "stage2.json"
    if args.get("posform") == "bare":
        mixed = bare_positions(mixed, str(out / f"{name}_stage2_bare.json"))
    if args.get("countform") == "echo":
        mixed = echo_counts(mixed, str(out / f"{name}_stage2_counts.json"))
    if args.get("count_q") == "singular":
        target = out / f"{name}_stage2_singular.json"
        target.write_text(json.dumps(singular_counts(json.loads((paths.data / mixed).read_text()))))
        mixed = str(target)
    if "countboost" in args:
        mixed = boost_counts(mixed, str(out / f"{name}_stage2_boost.json"), int(args["countboost"]))
    model = phase(mixed, s.stage2, f"{name}_mixed", str(model))
scores = evaluate_model(
    model,
    load_truths(world, "val"),
    world.images("val"),
    seed=1,  # the held-out questions `vistune demo` asks (its seed 0 + 1), whatever the training seed
    max_images=s.eval_images,
    max_descriptions=int(args.get("descriptions", 0)),
)
for style, key in SCORE_KEYS.items():
    result = scores[key]
    per_type = ", ".join(f"{t} {v:.1%}" for t, v in result["accuracy"].items())
    print(f"{name} {style}: {result['overall']:.1%} ({per_type})", flush=True)
if int(args.get("descriptions", 0)):
    print(f"{name} descriptions: {scores['descriptions']}", flush=True)
