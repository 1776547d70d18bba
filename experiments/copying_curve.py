"""How fast in-context copying forms from a demo's text-pretrained LM, with variants (docs/demo.md, thirteenth round).

Throwaway research script. Trains `lm_text/` (the LM before its copying) on the copying task with one change and
prints, every 300 steps: step, training loss, held-out copy accuracy (the demo's own task and measure), seconds.

    python experiments/copying_curve.py NAME lm=runs/demo/lm_text [lr=3e-3 warm=100] [vocab=100]
                                        [minlen=20 maxlen=40] [bs=N] [steps=N] [threads=N] [save=DIR]
"""

import sys
import time

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from vistune.demo.language import induction_batch, plain_token_ids

args = dict(a.split("=", 1) for a in sys.argv[2:])
name = sys.argv[1]
torch.set_num_threads(int(args.get("threads", 1)))
src = args["lm"]
model = AutoModelForCausalLM.from_pretrained(src)
tok = AutoTokenizer.from_pretrained(src)
vocab = plain_token_ids(tok)
if "vocab" in args:
    g = torch.Generator().manual_seed(5)
    vocab = vocab[torch.randperm(len(vocab), generator=g)[: int(args["vocab"])]]
steps = int(args.get("steps", 1800))
lr = float(args.get("lr", 1e-3))
warm = int(args.get("warm", 0))
bs = int(args.get("bs", 32))
maxlen = int(args.get("maxlen", 20))
minlen = int(args.get("minlen", 5))
torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)


def batch(g, mn, mx, b):
    L = int(torch.randint(mn, mx + 1, (1,), generator=g))
    P = int(torch.randint(0, 11, (1,), generator=g))
    d = vocab[torch.randint(len(vocab), (b, P + L), generator=g)]
    ids = torch.cat([d, d[:, P:]], 1)
    lab = ids.clone()
    lab[:, : P + L + 1] = -100
    return ids, lab


full = plain_token_ids(tok)


def evaluate():
    model.eval()
    h = torch.Generator().manual_seed(1)
    r = t = 0
    with torch.no_grad():
        for _ in range(8):
            ids, labels = induction_batch(full, 32, 20, h)
            pred = model(input_ids=ids).logits[:, :-1].argmax(-1)
            sc = labels[:, 1:] != -100
            r += int((pred == ids[:, 1:])[sc].sum())
            t += int(sc.sum())
    model.train()
    return r / t


model.train()
t0 = time.time()
log = []
for s in range(steps):
    ids, lab = batch(gen, minlen, maxlen, bs)
    loss = model(input_ids=ids, labels=lab).loss
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    if (s + 1) % 300 == 0:
        a = evaluate()
        log.append((s + 1, round(loss.item(), 3), round(a, 3), round(time.time() - t0)))
        print(name, *log[-1], flush=True)
if "save" in args:
    model.save_pretrained(args["save"])
    tok.save_pretrained(args["save"])
