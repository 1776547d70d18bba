"""How much a stage-1 projector's image tokens resemble the LM's color and shape words (docs/demo.md, tenth and
thirteenth rounds): the copying heads copy what looks like a word, so tokens that resemble every color word invite
"a color from the image" answers instead of the asked object's.

For each occupied cell of held-out images: the cosine of its projected token to the LM's embedding of its own color
word, and the mean cosine to all color words (likewise shapes); and the tokens' mean norm.

    python experiments/projector_words.py WORLD MODEL_DIR [MODEL_DIR ...]    # e.g. runs/demo/stage1/model
"""

import sys
from pathlib import Path

import torch

from vistune.demo.pipeline import load_pixels, load_truths
from vistune.model.io import load_pretrained
from vistune.world.build import WorldPaths
from vistune.world.vocab import COLORS, SHAPES

world = WorldPaths(Path(sys.argv[1]))
truths = load_truths(world, "val")[:100]
pixels = load_pixels(world, "val", truths, 72)
for directory in sys.argv[2:]:
    loaded = load_pretrained(directory)
    model, tok = loaded.model.eval(), loaded.tokenizer
    table = model.language_model.get_input_embeddings().weight.detach()

    # each word's first token as it appears mid-sentence
    colors, shapes = (
        torch.stack([table[tok(" " + w, add_special_tokens=False)["input_ids"][0]] for w in words])
        for words in (COLORS, SHAPES)
    )
    with torch.no_grad():
        tokens = model.encode_images(pixels)  # [N, 10, D]
    sims = {"own color": [], "any color": [], "own shape": [], "any shape": []}
    for t, truth in zip(tokens, truths, strict=True):
        for o in truth.scene.objects:
            cell = t[o.row * 3 + o.col]
            c = torch.cosine_similarity(cell[None], colors, dim=-1)
            s = torch.cosine_similarity(cell[None], shapes, dim=-1)
            sims["own color"].append(float(c[list(COLORS).index(o.color)]))
            sims["any color"].append(float(c.mean()))
            sims["own shape"].append(float(s[list(SHAPES).index(o.shape)]))
            sims["any shape"].append(float(s.mean()))
    means = {k: sum(v) / len(v) for k, v in sims.items()}
    norm = float(tokens[:, :9].norm(dim=-1).mean())
    print(directory, " ".join(f"{k} {v:.3f}" for k, v in means.items()), f"norm {norm:.2f}", flush=True)
