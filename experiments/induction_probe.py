"""Why the demo's tiny LM did not learn lookups, in the smallest setting: a fresh 4 x 128 Llama, 9 perfect cell tokens.

Throwaway research script (plain PyTorch + transformers), kept so the figures in docs/demo.md (ninth round) can be
re-measured. Each image is 1-6 objects (8 colors x 8 shapes) in the cells of a 3x3 grid; each cell token is its
one-hot color, shape, empty flag and cell index through an MLP projector. The question follows the 9 image tokens
as word tokens, and the model answers yes / no (held-out accuracy every 100 steps):

    existshape  [9 image tokens] heart [SEP]        -> yes / no   is there a heart?
    exist       [9 image tokens] red heart [SEP]    -> yes / no   is there a red heart? (every "no" a near miss)

keys: task=existshape|exist, sep=0 (no SEP: the answer is read at the shape word itself), steps, lr, seed,
induct=N (first N steps of in-context copying, `vistune.demo.language.pretrain_induction`, on the same LM),
prevtok=N (instead: N steps of "say the previous token", a previous-token head alone).

    python experiments/induction_probe.py task=existshape sep=0        # the answer at the key word
    python experiments/induction_probe.py task=existshape              # one token later: needs a previous-token hop
    python experiments/induction_probe.py task=existshape induct=1500  # the same after in-context copying
"""

import math
import random
import sys

import torch
import torch.nn as nn
from transformers import LlamaConfig, LlamaForCausalLM

from vistune.demo.language import LanguagePretrainConfig, pretrain_induction

args = dict(a.split("=") for a in sys.argv[1:])
SEED = int(args.get("seed", 0))
torch.manual_seed(SEED)
random.seed(SEED)
steps = int(args.get("steps", 1000))
task = args.get("task", "existshape")
sep = args.get("sep", "1") == "1"
NC = NS = 8
V = 200  # the task's words are ids 0..NC+NS+2; the rest only appear in the copying runs
YES, NO, SEP = NC + NS, NC + NS + 1, NC + NS + 2
H = 128
cfg = LlamaConfig(
    vocab_size=V,
    hidden_size=H,
    intermediate_size=3 * H,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=128,
    tie_word_embeddings=True,
)
lm = LlamaForCausalLM(cfg)
D = NC + NS + 1 + 9
proj = nn.Sequential(nn.Linear(D, H), nn.GELU(), nn.Linear(H, H))


def scene():
    cells = random.sample(range(9), random.randint(1, 6))
    return [(random.randrange(NC), random.randrange(NS), c) for c in cells]


def feats(objs):
    f = torch.zeros(9, D)
    f[:, NC + NS] = 1  # empty
    f[torch.arange(9), NC + NS + 1 + torch.arange(9)] = 1  # cell index
    for color, shape, c in objs:
        f[c, color], f[c, NC + shape], f[c, NC + NS] = 1, 1, 0
    return f


def sample():
    objs = scene()
    if task == "existshape":
        shapes = {o[1] for o in objs}
        if random.random() < 0.5:
            shape, answer = random.choice(sorted(shapes)), YES
        else:
            shape, answer = random.choice([s for s in range(NS) if s not in shapes]), NO
        words = [NC + shape]
    else:
        present = {(o[0], o[1]) for o in objs}
        if random.random() < 0.5:
            color, shape, _ = random.choice(objs)
            answer = YES
        else:
            near = [(c, o[1]) for o in objs for c in range(NC) if (c, o[1]) not in present]
            near += [(o[0], s) for o in objs for s in range(NS) if (o[0], s) not in present]
            (color, shape), answer = random.choice(near), NO
        words = [color, NC + shape]
    return feats(objs), words + ([SEP] if sep else []), answer


if int(args.get("induct", 0)):
    copying = LanguagePretrainConfig(lr=1e-3, seed=SEED, induction_steps=int(args["induct"]))
    result = pretrain_induction(
        lm,
        torch.arange(V),
        copying,
        on_step=lambda s, loss: print(f"copying {s} loss {loss:.3f}", flush=True) if s % 100 == 0 else None,
    )
    print(f"copying: held-out accuracy {result.accuracy:.3f}", flush=True)
    lm.train()
if int(args.get("prevtok", 0)):  # control: a previous-token head alone (label at t = the token at t - 1)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    for _ in range(int(args["prevtok"])):
        x = torch.randint(0, V, (32, 40))
        logits = lm(input_ids=x).logits[:, 1:]
        loss = nn.functional.cross_entropy(logits.reshape(-1, V), x[:, :-1].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"previous token: accuracy {(logits.argmax(-1) == x[:, :-1]).float().mean():.3f}", flush=True)

lr = float(args.get("lr", 1e-3))
opt = torch.optim.AdamW(list(lm.parameters()) + list(proj.parameters()), lr=lr, weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: min(1, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
)
emb = lm.get_input_embeddings()


def run(batch):
    f = torch.stack([b[0] for b in batch])
    words = torch.tensor([b[1] for b in batch])
    answers = torch.tensor([b[2] for b in batch])
    logits = lm(inputs_embeds=torch.cat([proj(f), emb(words)], 1)).logits[:, -1]
    return nn.functional.cross_entropy(logits, answers), (logits.argmax(-1) == answers).float().mean().item()


val = [sample() for _ in range(500)]
for s in range(steps + 1):
    if s % 100 == 0:
        lm.eval()
        with torch.no_grad():
            print(s, f"held-out accuracy {run(val)[1]:.3f}", flush=True)
        lm.train()
    loss, _ = run([sample() for _ in range(32)])
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
