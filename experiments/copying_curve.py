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

from vistune.demo.language import copy_accuracy, induction_batch, plain_token_ids

name = sys.argv[1]
args = dict(a.split("=", 1) for a in sys.argv[2:])
keys = {"steps": 1800, "lr": 1e-3, "warm": 0, "bs": 32, "maxlen": 20, "minlen": 5, "threads": 1}
keys |= {k: type(keys[k])(v) for k, v in args.items() if k in keys}
torch.set_num_threads(keys["threads"])
model = AutoModelForCausalLM.from_pretrained(args["lm"])
tok = AutoTokenizer.from_pretrained(args["lm"])
full = plain_token_ids(tok)
vocab = full
if "vocab" in args:  # runs drawn from a random subset of the tokens
    vocab = full[torch.randperm(len(full), generator=torch.Generator().manual_seed(5))[: int(args["vocab"])]]
torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)
opt = torch.optim.AdamW(model.parameters(), lr=keys["lr"], weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: min(1.0, (s + 1) / keys["warm"]) if keys["warm"] else 1.0
)
model.train()
t0 = time.time()
for s in range(keys["steps"]):
    ids, lab = induction_batch(vocab, keys["bs"], keys["maxlen"], gen, min_len=keys["minlen"])
    loss = model(input_ids=ids, labels=lab).loss
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    if (s + 1) % 300 == 0:
        model.eval()  # held out as the demo measures it: the full vocabulary, runs of 5-20, seed 1
        a = copy_accuracy(model, full, 20, seed=1)
        model.train()
        print(name, s + 1, round(loss.item(), 3), round(a, 3), round(time.time() - t0), flush=True)
if "save" in args:
    model.save_pretrained(args["save"])
    tok.save_pretrained(args["save"])
