"""How a trained demo model answers count questions, by the true answer: total counts against per-shape counts.

Throwaway research script (docs/demo.md, twelfth round), kept so those figures can be re-measured:

    python experiments/count_answers.py WORLD MODEL

Asks the evaluator's count questions (`make_closed_questions(seed=1)`, the first 200 held-out images) in both answer
styles and prints, per kind ("How many shapes" = total, "How many stars" = per shape) and true answer, how often
the answer was right and what was answered.
"""

import sys
from collections import Counter, defaultdict
from pathlib import Path

from vistune.eval.world import _image_loader, extract_answer, make_closed_questions, normalize_answer
from vistune.infer.generate import GenerationConfig, generate_batch
from vistune.model.io import load_pretrained
from vistune.text.templates import get_template
from vistune.world.truth import load_ground_truth

world, model_dir = Path(sys.argv[1]), sys.argv[2]
loaded = load_pretrained(model_dir)
template = get_template(loaded.template)
truths = list(load_ground_truth(world / "annotations/ground_truth_val.json").values())[:200]
questions = [q for q in make_closed_questions(truths, seed=1) if q.qtype == "count"]
if "singular=1" in sys.argv[3:]:  # stage2_phases.py's count_q=singular: "How many star objects are there?"
    import dataclasses

    from vistune.world.vocab import SHAPES, plural

    for i, q in enumerate(questions):
        for shape in SHAPES:
            if q.question == f"How many {plural(shape, 2)} are there?":
                questions[i] = dataclasses.replace(q, question=f"How many {shape} objects are there?")
images = _image_loader(world / "val")
for style, max_new_tokens in (("short", 8), ("sentence", 16)):
    answers = generate_batch(
        loaded.model,
        loaded.tokenizer,
        loaded.image_processor,
        template,
        [q.conversation(style=style) for q in questions],
        [[images(q.file_name)] for q in questions],
        GenerationConfig(max_new_tokens=max_new_tokens),
    )
    table: dict[tuple[str, str], Counter] = defaultdict(Counter)
    examples: list[tuple[str, str]] = []
    for q, answer in zip(questions, answers, strict=True):
        got = normalize_answer(answer) if style == "short" else extract_answer("count", answer)
        table[("total" if q.question == "How many shapes are there?" else "per shape", q.answer)][got] += 1
        if style == "sentence" and len(examples) < 3 and q.answer != "one":
            examples.append((q.question, answer))
    print(style, examples)
    for (kind, truth), got in sorted(table.items()):
        n = sum(got.values())
        print(
            f"  {kind:9s} {truth:5s} n={n:3d} right {got[truth] / n:4.0%}  answered {dict(got.most_common(4))}"
        )
