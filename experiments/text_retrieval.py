"""Can the demo's tiny LM learn in-context retrieval from TEXT alone? Throwaway research script (docs/demo.md, fifth
round): each train scene written out ("red star top left. blue circle center.") followed by its closed questions as
one conversation, packed into blocks and trained as plain next-token LM pretraining of a fresh 4 x 128 Llama; every
`every` steps it prints held-out single-turn (scene + one question) teacher-forced exact match per question type.

    vistune demo --out runs/demo          # for runs/demo/world and runs/demo/lm (the tokenizer)
    python experiments/text_retrieval.py world=runs/demo/world tok=runs/demo/lm steps=2000 lr=3e-3 [key=value]

keys: steps, lr, bs, block, ntrain, seed, layers, width, heads, rounds (question rounds per scene), every, shuf=0
(objects in grid order instead of shuffled), init=STD (re-initialize every weight with this std), save=DIR.
"""

import math
import random
import sys
import time

import torch
from transformers import AutoTokenizer

from vistune.demo.language import LanguageModelOptions, build_language_model, pack_blocks
from vistune.eval.world import make_closed_questions
from vistune.text.templates import render, to_messages
from vistune.text.tokenize import tokenize_conversation
from vistune.world.truth import load_ground_truth
from vistune.world.vocab import REGIONS

a = dict(x.split("=") for x in sys.argv[1:])
steps = int(a.get("steps", 2000))
lr = float(a.get("lr", 3e-3))
bs = int(a.get("bs", 32))
block = int(a.get("block", 128))
ntrain = int(a.get("ntrain", 20000))
seed = int(a.get("seed", 0))
layers = int(a.get("layers", 4))
width = int(a.get("width", 128))
heads = int(a.get("heads", 4))
rounds = int(a.get("rounds", 2))
evry = int(a.get("every", 200))
shuffle_obj = a.get("shuf", "1") == "1"
torch.manual_seed(seed)
random.seed(seed)
W = a.get("world", "runs/demo/world")
tok = AutoTokenizer.from_pretrained(a.get("tok", "runs/demo/lm"))
tr = list(load_ground_truth(f"{W}/annotations/ground_truth_train.json").values())[:ntrain]
va = list(load_ground_truth(f"{W}/annotations/ground_truth_val.json").values())
rng = random.Random(seed)


def scene(t):
    objs = list(t.objects)
    if shuffle_obj:
        rng.shuffle(objs)
    else:
        objs.sort(key=lambda o: (o.row, o.col))
    return " ".join(f"{o.color} {o.shape} {REGIONS[(o.row, o.col)]}." for o in objs)


def doc(t, qs):
    turns = []
    for i, q in enumerate(qs):
        c = q.conversation(with_answer=True)
        c[0]["value"] = (
            c[0]["value"].replace("<image>", scene(t)) if i == 0 else c[0]["value"].replace("<image>\n", "")
        )
        turns += c
    return render("chatml", to_messages(turns), tok).text


byimg = {}
for q in make_closed_questions(tr, seed=0, per_type=rounds):
    byimg.setdefault(q.image_id, []).append(q)
T = {t.image_id: t for t in tr}
docs = []
for iid, qs in byimg.items():
    rng.shuffle(qs)
    docs.append(doc(T[iid], qs))
rng.shuffle(docs)
blocks = pack_blocks(docs, tok, block)
print(len(docs), "docs", blocks.shape, "blocks", flush=True)
val = []
VA = {t.image_id: t for t in va}
for q in make_closed_questions(va, seed=1, per_type=1):
    c = q.conversation(with_answer=True)
    c[0]["value"] = c[0]["value"].replace("<image>", scene(VA[q.image_id]))
    tk = tokenize_conversation(c, tok, "chatml", num_image_tokens=1)
    val.append((torch.tensor(tk.input_ids), torch.tensor(tk.labels), q.qtype))
opts = LanguageModelOptions(
    hidden_size=width, num_layers=layers, num_heads=heads, intermediate_size=3 * width
)
lm = build_language_model(opts, tok)
if "init" in a:
    std = float(a["init"])
    for m in lm.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(m.weight, 0, std)
            if getattr(m, "bias", None) is not None:
                torch.nn.init.zeros_(m.bias)


def evaluate():
    lm.eval()
    right = {}
    n = {}
    with torch.no_grad():
        for ids, lab, qt in val:
            lg = lm(input_ids=ids[None]).logits[0, :-1].argmax(-1)
            m = lab[1:] != -100
            ok = bool((lg[m] == lab[1:][m]).all())
            right[qt] = right.get(qt, 0) + ok
            n[qt] = n.get(qt, 0) + 1
    lm.train()
    return {k: round(right[k] / n[k], 3) for k in n}


opt = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.05)
warm = max(1, steps // 20)
sch = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
)
g = torch.Generator().manual_seed(seed)
t0 = time.time()
lm.train()
for step in range(1, steps + 1):
    b = blocks[torch.randint(len(blocks), (bs,), generator=g)]
    loss = lm(input_ids=b, labels=b).loss
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
    opt.step()
    sch.step()
    if step % evry == 0 or step == steps:
        print(step, f"{time.time() - t0:.0f}s loss {loss.item():.3f}", evaluate(), flush=True)
if "save" in a:
    lm.save_pretrained(a["save"])
    tok.save_pretrained(a["save"])
