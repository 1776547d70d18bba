"""Can a tiny LM learn the existence reply's comparison step, as text alone? A probe of the LM's trainability.

Throwaway research script (plain PyTorch + transformers), kept so the figures in docs/demo.md ("Sixth round") can
be re-measured. It trains a causal LM on one text task, no images: "A brown heart? The heart is orange, so" ->
" no" (and " yes" when the two colors are equal, half the time); the loss is on the yes/no token only, and every
100 steps it prints the accuracy on 256 fresh samples. Chance is ~50%; an LM that cannot learn it stays on one
constant answer.

    vistune demo --out runs/demo                                         # for runs/demo/lm and its text
    python experiments/comparison_probe.py lm=runs/demo/lm               # the demo's pretrained LM
    python experiments/comparison_probe.py lm=runs/demo/lm fresh=1       # same architecture, random weights
    python experiments/comparison_probe.py lm=runs/demo/lm reinit=emb    # pretrained layers, fresh embeddings
    python experiments/comparison_probe.py lm=runs/demo/lm pretrain=runs/demo tie=0 psteps=100
        # first pretrain a new LM (the demo's recipe) on runs/demo's world text, untied if tie=0, then probe it

keys: lm=PATH (a saved LM + tokenizer), fresh=1, reinit=emb|layers, pretrain=RUN_DIR (world text of that demo
run) with tie=0|1 psteps=N plr=X, steps=N lr=X bs=N (the probe's training), chat=1 (the probe's text in the chatml
template, as the demo renders it), seed=N (fresh weights and sample order), threads=N.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from vistune.world.vocab import COLORS, SHAPES, with_article

args = dict(a.split("=", 1) for a in sys.argv[1:])
torch.set_num_threads(int(args.get("threads", 1)))
lm_dir = Path(args.get("lm", "runs/demo/lm"))
SEED = int(args.get("seed", 0))  # fresh weights' init and the samples' order
tok = AutoTokenizer.from_pretrained(lm_dir)


def pretrained_variant(run_dir: Path, tie: bool) -> LlamaForCausalLM:
    """The demo's LM recipe (`vistune.demo.language`) on that run's world text, tied or untied embeddings."""
    from dataclasses import replace

    from vistune.demo.language import build_language_model, pack_blocks, pretrain_language_model
    from vistune.demo.pipeline import DemoPaths, world_text
    from vistune.demo.settings import DemoSettings

    s = DemoSettings()
    blocks = pack_blocks(world_text(DemoPaths(run_dir), s), tok, s.language_train.block_size)
    torch.manual_seed(s.seed)
    model = build_language_model(replace(s.language, tie_word_embeddings=tie), tok)
    train = replace(
        s.language_train,
        steps=int(args.get("psteps", s.language_train.steps)),
        lr=float(args.get("plr", s.language_train.lr)),
    )
    losses = pretrain_language_model(model, blocks, train)
    print(f"pretrained {train.steps} steps (tie={tie}): loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return model


if "pretrain" in args:
    lm = pretrained_variant(Path(args["pretrain"]), tie=args.get("tie", "1") == "1")
elif args.get("fresh") == "1":
    torch.manual_seed(SEED)
    lm = LlamaForCausalLM(LlamaConfig.from_pretrained(lm_dir))
else:
    lm = LlamaForCausalLM.from_pretrained(lm_dir)
if "reinit" in args:
    part = {"emb": ("embed_tokens", "lm_head"), "layers": ("layers.",)}[args["reinit"]]
    torch.manual_seed(SEED)
    fresh = LlamaForCausalLM(lm.config).state_dict()
    state = {k: (fresh[k] if any(p in k for p in part) else v) for k, v in lm.state_dict().items()}
    lm.load_state_dict(state)

rng = random.Random(SEED)
colors, shapes = list(COLORS), list(SHAPES)
CHAT = args.get("chat") == "1"
if CHAT:  # the chat template reads only its BOS / EOS strings from a tokenizer (as vistune.demo.pipeline.world_text)
    from vistune.testing import make_tiny_tokenizer
    from vistune.text.templates import render, to_messages

    chat_tokens = make_tiny_tokenizer(vocab_size=300)


def sample() -> tuple[str, str]:
    shape, asked = rng.choice(shapes), rng.choice(colors)
    seen = asked if rng.random() < 0.5 else rng.choice([c for c in colors if c != asked])
    answer = "yes" if seen == asked else "no"
    prefix = f"{with_article(f'{asked} {shape}').capitalize()}? The {shape} is {seen}, so"
    if CHAT:
        turns = [
            {"from": "human", "value": f"Is there {with_article(f'{asked} {shape}')}?"},
            {"from": "gpt", "value": f"{prefix} {answer}."},
        ]
        full = render("chatml", to_messages(turns), chat_tokens).text
        prefix = full[: full.rindex(", so") + len(", so")]
    return prefix, " " + answer


def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, labels = [], []
    for _ in range(n):
        prefix, answer = sample()
        p = tok(prefix, add_special_tokens=False).input_ids
        a = tok(answer, add_special_tokens=False).input_ids
        ids.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(map(len, ids))
    x = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i in ids])
    y = torch.tensor([label + [-100] * (width - len(label)) for label in labels])
    return x, y, (x != tok.pad_token_id).long()


def accuracy(n: int = 256) -> float:
    lm.eval()
    with torch.no_grad():
        x, y, mask = batch(n)
        pred = lm(input_ids=x, attention_mask=mask).logits[:, :-1].argmax(-1)
        target = y[:, 1:]
        right = ((pred == target) | (target == -100)).all(1).float().mean().item()
    lm.train()
    return right


opt = torch.optim.AdamW(lm.parameters(), lr=float(args.get("lr", 1e-3)))
steps, bs = int(args.get("steps", 800)), int(args.get("bs", 32))
start = time.time()
for step in range(steps + 1):
    if step % 100 == 0:
        print(f"step {step}: accuracy {accuracy():.3f} ({time.time() - start:.0f} s)", flush=True)
    if step == steps:
        break
    x, y, mask = batch(bs)
    lm(input_ids=x, attention_mask=mask, labels=y).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
