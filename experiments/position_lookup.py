"""Where a trained demo model's position answers go wrong: its replies, its attention, a linear probe.

Throwaway research script (docs/demo.md, eleventh round), kept so those figures can be re-measured:

    python experiments/position_lookup.py WORLD MODEL [errors|attention|probe ...]

- errors: held-out sentence replies to position questions (the first 200 val images, the evaluator's questions):
  right, or wrong naming another object's region / an empty cell next to the truth / an empty cell further away;
  accuracy by the number of objects.
- attention: for color, position and shape questions on images with 2+ objects, teacher-forced up to the reply's
  "is" (the reply prefix as the model generated it): per layer, head and query position (the last 24 tokens), how
  often the head's attention over the 9 cell tokens peaks at the asked object's cell, and the share it gives that
  cell; the 8 best.
- probe: a linear probe (9-way: the asked object's cell) on the residual stream at the reply's noun and at "is",
  per layer; trained on 1,500 train images' color and position questions, scored on the held-out ones.
"""

import sys
from collections import Counter
from pathlib import Path

import torch

from vistune.eval.world import _image_loader, extract_answer, make_closed_questions
from vistune.infer.generate import GenerationConfig, generate_batch
from vistune.model.io import load_pretrained
from vistune.text.templates import build_prompt, get_template
from vistune.text.tokenize import encode_prompt
from vistune.world.truth import load_ground_truth
from vistune.world.vocab import REGIONS

world, model_dir = Path(sys.argv[1]), sys.argv[2]
parts = sys.argv[3:] or ["errors", "attention", "probe"]
loaded = load_pretrained(model_dir)
model, tok, template = loaded.model.eval(), loaded.tokenizer, get_template(loaded.template)
REGION_CELL = {name: rc for rc, name in REGIONS.items()}


def truths(split: str, n: int) -> dict:
    found = list(load_ground_truth(world / f"annotations/ground_truth_{split}.json").values())[:n]
    return {t.file_name: t for t in found}


def questions(tr: dict, qtype: str, min_objects: int = 1) -> list:
    qs = make_closed_questions(
        list(tr.values()), seed=1
    )  # seed 1: the held-out questions `vistune demo` asks
    return [q for q in qs if q.qtype == qtype and len(tr[q.file_name].objects) >= min_objects]


def replies(qs: list, images) -> list[str]:
    out = []
    for start in range(0, len(qs), 64):
        batch = qs[start : start + 64]
        out += generate_batch(
            model,
            tok,
            loaded.image_processor,
            template,
            [q.conversation(style="sentence") for q in batch],
            [[images(q.file_name)] for q in batch],
            GenerationConfig(max_new_tokens=16),
        )
    return out


def asked_object(q, t):
    """The object the question names (a property unique in its image)."""
    if q.qtype == "position":
        return next(o for o in t.objects if o.region == q.answer)
    if q.qtype == "color":
        return next(o for o in t.objects if o.color == q.answer and o.shape in q.question)
    return next(o for o in t.objects if o.shape == q.answer and o.color in q.question)


def forward(q, images, reply_prefix: str, **kw):
    ids = encode_prompt(
        build_prompt(q.conversation(style="sentence"), template, tok),
        tok,
        num_image_tokens=model.num_image_tokens,
        image_token_id=model.image_token_id,
    )
    ids = torch.tensor([ids + tok.encode(reply_prefix, add_special_tokens=False)])
    with torch.no_grad():
        embeds = model.embed(ids, loaded.image_processor([images(q.file_name)]))
        out = model.language_model(inputs_embeds=embeds, use_cache=False, **kw)
    cells = (ids[0] == model.image_token_id).nonzero().flatten()[:9]  # the 9 cell tokens, row-major
    return out, cells


def errors() -> None:
    tr = truths("val", 200)
    qs = questions(tr, "position")
    kinds, by_n, right_n = Counter(), Counter(), Counter()
    for q, reply in zip(qs, replies(qs, _image_loader(world / "val")), strict=True):
        t = tr[q.file_name]
        said = extract_answer("position", reply)
        by_n[len(t.objects)] += 1
        right_n[len(t.objects)] += said == q.answer
        if said == q.answer:
            kind = "right"
        elif said is None:
            kind = "no region named"
        elif said in {o.region for o in t.objects}:
            kind = "another object's region"
        else:
            (r1, c1), (r2, c2) = REGION_CELL[said], REGION_CELL[q.answer]
            kind = (
                "an empty cell next to it"
                if max(abs(r1 - r2), abs(c1 - c2)) == 1
                else "an empty cell further"
            )
        kinds[kind] += 1
    for kind, n in kinds.most_common():
        print(f"  {kind:28s} {n}")
    print("  right by number of objects:", {n: f"{right_n[n]}/{by_n[n]}" for n in sorted(by_n)})


def attention(window: int = 24) -> None:
    tr = truths("val", 200)
    images = _image_loader(world / "val")
    model.language_model.config._attn_implementation = "eager"  # attention weights are returned by eager only
    for qtype in ("color", "position", "shape"):
        qs = questions(tr, qtype, min_objects=2)[:120]
        peak = share = None
        n = 0
        for q, reply in zip(qs, replies(qs, images), strict=True):
            if " is" not in reply:
                continue
            out, cells = forward(q, images, reply[: reply.index(" is") + 3], output_attentions=True)
            obj = asked_object(q, tr[q.file_name])
            cell = obj.row * 3 + obj.col
            att = torch.stack(
                [a[0, :, -window:][..., cells] for a in out.attentions]
            )  # [layer, head, pos, 9]
            p, s = (att.argmax(-1) == cell).float(), att[..., cell] / att.sum(-1)
            peak, share = (p, s) if peak is None else (peak + p, share + s)
            n += 1
        layers, heads, positions = peak.shape
        ranked = sorted(
            (peak[i, j, k].item() / n, share[i, j, k].item() / n, i, j, k)
            for i in range(layers)
            for j in range(heads)
            for k in range(positions)
        )[::-1]
        print(f"  {qtype} ({n} questions): best heads (peak rate, share, layer, head, position from the end)")
        for rate, sh, layer, head, pos in ranked[:8]:
            print(f"    {rate:.2f} {sh:.2f} layer {layer} head {head} at {pos - window}")


def probe() -> None:
    def collect(split: str, n: int):
        tr = truths(split, n)
        images = _image_loader(world / split)
        xs, ys, types = [], [], []
        for qtype in ("color", "position"):
            for q in questions(tr, qtype, min_objects=2):
                noun = q.question[q.question.index(" the ") + 5 : q.question.index("?")]
                out, _ = forward(q, images, f"The {noun} is", output_hidden_states=True)
                xs.append(torch.stack([h[0, [-2, -1]] for h in out.hidden_states]))  # [layers + 1, 2, D]
                obj = asked_object(q, tr[q.file_name])
                ys.append(obj.row * 3 + obj.col)
                types.append(qtype)
        return torch.stack(xs), torch.tensor(ys), types

    torch.manual_seed(0)
    x_train, y_train, _ = collect("train", 1500)
    x_test, y_test, test_types = collect("val", 200)
    for layer in range(x_train.shape[1]):
        for at, where in enumerate(("noun", "is")):
            a, b = x_train[:, layer, at], x_test[:, layer, at]
            mean, std = a.mean(0), a.std(0) + 1e-5
            a, b = (a - mean) / std, (b - mean) / std
            head = torch.nn.Linear(a.shape[1], 9)
            opt = torch.optim.Adam(head.parameters(), 1e-2, weight_decay=1e-4)
            for _ in range(300):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(head(a), y_train).backward()
                opt.step()
            right = head(b).argmax(-1) == y_test
            acc = {
                t: right[[i for i, x in enumerate(test_types) if x == t]].float().mean().item()
                for t in ("color", "position")
            }
            print(
                f"  layer {layer} at {where:4s}: held-out probe accuracy, color questions {acc['color']:.2f}, "
                f"position questions {acc['position']:.2f}"
            )


for part in parts:
    print(part)
    {"errors": errors, "attention": attention, "probe": probe}[part]()
