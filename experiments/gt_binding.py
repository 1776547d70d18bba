"""Can the demo's tiny language model bind a question to the right image token? Stage 2 with PERFECT image features.

Throwaway research script (plain PyTorch + transformers, not the vistune trainer), kept so the figures in
docs/demo.md ("Why closed-question accuracy is low") can be re-measured. Each of the 9 image tokens is the ground
truth of one 3x3 grid cell (one-hot color, shape, size, empty flag, row/column code) through an MLP projector;
the LM is the demo's (or a fresh Llama), trained on single-turn short-answer questions; every 100 steps it prints
teacher-forced exact match per question type on held-out images, the first answer token's NLL per type, and how
often a color answer names a color present in the image ("bag of colors").

    vistune demo --out runs/demo                                  # for its lm/ (tokenizer + pretrained LM)
    vistune world build --out runs/world20k --train 20000 --val 300 --size 72
    python experiments/gt_binding.py NAME lm=runs/demo/lm world=runs/world20k ntrain=20000 steps=1500 [key=value]

keys: types=color,shape,... (question types trained and scored), lr, bs, steps, ntrain, pre=0 (fresh LM: width,
layers, heads, tie), multi=1 per=N (one multi-turn record per image), tmpl=chatml|v0|mini (mini: the answer
follows the question directly), nosap=1 / sapfirst=1 (drop / move "Answer with a single word or phrase."),
after=1 (image after the question), cur=N first=color,shape (the first N steps on those types only; default
color), fixproj=1 (a frozen random linear projector), enc=PATH (a demo's world_encoder.safetensors: its frozen
features replace the perfect ones), seed=N (projector init and batch order), wordproj=1 (a frozen projector onto the
LM's own word embeddings: cell token = emb(color) + emb(shape) + emb(size) + emb(row) + emb(col); wordtrain=1 trains
it), theta=X (rotary base of a fresh LM, pre=0), summary=1 (every token also carries the whole scene: presence, row
and column of each color-shape pair), textscene=1 (control without images: the scene written as text, e.g. "red star
top left.", in place of the image tokens), minobj=N (train, or the first phase, on images with >= N objects),
sent=1 (sentence answers that restate what was asked: "The star is red.", "The red object is a star."; with
shapeform=it the shape reply is "It is a red star."; sent=lib: the library's sentence replies for every type, as
the demo trains them; keyscore=1 scores the answer word's tokens only), sentcur=N (the first N steps on sentence
answers, then one-word answers), shorttypes=a,b (with sent=lib: these types keep short answers), perans=1 (accuracy
per true answer; showfail=N also prints the first N wrong teacher-forced replies), posform=grid|rc|at|bare (with
sent=lib: position replies "The star is in the top row and the left column." / "The star is in the top row. The
star is in the left column." (keyscore checks both words) / "The star is at the top left." / "The star is top
left."; rowcol: "The star is top center." (row word, then column word; both checked); cellno: "The star is in cell
five." (cells numbered 1-9 row-major: one 9-way answer word); cellis: "The star is five." (that word right after
"is", as color's "The star is red.")), countform=number ("The number of circles is two."), exist=shape (POPE-style
existence: "Is there a heart?", "no" naming a shape not in the image; exreply=adj0 / adj1: replies "Heart present." /
"A heart is present."), induct=N (first N steps of in-context copying on the LM,
`vistune.demo.language.pretrain_induction`'s task; docs/demo.md, ninth round).
Controls (perfect features only unless said): perm=colmajor (the cell tokens in column-major order), poscode=obj (the
row / column code on occupied cells only) or poscode=cell (a one-hot cell index in its place), maxobj=N (train and
score only images with <= N objects), firstmax=K (with cur=N first=TYPES: the first phase on images with <= K
objects), imgmask=self (image tokens do not attend to each other), evaltrain=1 (score 200 training questions).
Read-outs: perref=1 (accuracy by object count and by how the object is named: one word or a color-shape pair);
attn=1 (after training: for each layer and head, the asked object's token's share of the attention the objects get,
at the position that predicts the first answer token, and attnoffs=N positions before it).
"""

import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from vistune.eval.world import make_closed_questions
from vistune.text.tokenize import tokenize_conversation
from vistune.world.truth import load_ground_truth
from vistune.world.vocab import COLORS, SHAPES, SIZES

args = dict(a.split("=") for a in sys.argv[2:])
name = sys.argv[1]
lr = float(args.get("lr", 1e-3))
steps = int(args.get("steps", 600))
bs = int(args.get("bs", 32))
pre = args.get("pre", "1") == "1"
width = int(args.get("width", 128))
layers = int(args.get("layers", 4))
multi = args.get("multi", "0") == "1"
types = args.get("types", "color,shape,count,position,existence").split(",")
tmpl = args.get("tmpl", "chatml")
if tmpl == "mini":
    from vistune.text.templates import Template

    tmpl = Template(
        name="mini",
        description="",
        user_format="{content}",
        assistant_prefix="",
        assistant_format=" {content}{eos}",
    )
img_after = args.get("after", "0") == "1"
feat_scale = float(args.get("fscale", 1.0))
ntrain = int(args.get("ntrain", 2000))
SEED = int(args.get("seed", 0))
torch.manual_seed(SEED)
random.seed(SEED)
lm_dir = Path(args.get("lm", "runs/demo/lm"))
tok = AutoTokenizer.from_pretrained(lm_dir)
if pre:
    lm = LlamaForCausalLM.from_pretrained(lm_dir)
else:
    cfg = LlamaConfig.from_pretrained(lm_dir)
    cfg.hidden_size = width
    cfg.num_hidden_layers = layers
    cfg.num_attention_heads = cfg.num_key_value_heads = int(args.get("heads", 4))
    cfg.intermediate_size = 3 * width
    cfg.head_dim = width // cfg.num_attention_heads
    cfg.tie_word_embeddings = args.get("tie", "1") == "1"
    if "theta" in args:  # a huge theta: rotary barely rotates, so attention is (almost) position-free
        cfg.rope_parameters = {"rope_type": "default", "rope_theta": float(args["theta"])}
    lm = LlamaForCausalLM(cfg)
H = lm.config.hidden_size
if int(
    args.get("induct", 0)
):  # in-context copying before stage 2 (with pre=1 after the text, as `vistune demo`)
    from vistune.demo.language import LanguagePretrainConfig, plain_token_ids, pretrain_induction

    copying = pretrain_induction(
        lm,
        plain_token_ids(tok),
        LanguagePretrainConfig(lr=1e-3, seed=SEED, induction_steps=int(args["induct"])),
        on_step=lambda s, loss: print(f"induct {s} loss {loss:.3f}", flush=True) if s % 100 == 0 else None,
    )
    print(f"induct: held-out copy accuracy {copying.accuracy:.3f}", flush=True)
cols = list(COLORS)
shps = list(SHAPES)
szs = list(SIZES)
D = 9 + 9 + len(szs) + 1 + (9 if args.get("poscode") == "cell" else 6)  # + the position code


SUMMARY = args.get(
    "summary", "0"
)  # 1: every token also carries the scene summary (presence + cell of each pair)
S_PAIRS = len(cols) * len(shps)
if SUMMARY == "1":
    D += S_PAIRS * 7  # per (color, shape) pair: present, then one-hot row and column


def feats(truth):
    f = cell_feats(truth)
    if SUMMARY != "1":
        return f
    summ = torch.zeros(S_PAIRS * 7)
    for o in truth.objects:
        p = cols.index(o.color) * len(shps) + shps.index(o.shape)
        summ[p] = 1
        summ[S_PAIRS + p * 6 + o.row] = 1
        summ[S_PAIRS + p * 6 + 3 + o.col] = 1
    f[:, D - S_PAIRS * 7 :] = summ
    return f


def cell_feats(truth):
    f = torch.zeros(9, D)
    f[:, 0] = 1
    f[:, 9] = 1
    f[:, 18 + len(szs)] = 1
    for o in truth.objects:
        c = o.row * 3 + o.col
        f[c, 0] = 0
        f[c, 9] = 0
        f[c, 18 + len(szs)] = 0
        f[c, 1 + cols.index(o.color)] = 1
        f[c, 10 + shps.index(o.shape)] = 1
        f[c, 18 + szs.index(o.size)] = 1
    base = D - (S_PAIRS * 7 if SUMMARY == "1" else 0)
    occupied = {o.row * 3 + o.col for o in truth.objects}
    for c in range(9):
        if args.get("poscode") == "obj" and c not in occupied:  # the row / column code on objects' cells only
            continue
        if args.get("poscode") == "cell":  # one-hot cell index (9) in place of one-hot row + column (3 + 3)
            f[c, base - 9 + c] = 1
            continue
        f[c, base - 6 + c // 3] = 1
        f[c, base - 3 + c % 3] = 1
    if args.get("perm") == "colmajor":  # the cell tokens in column-major order (their codes unchanged)
        f = f[[0, 3, 6, 1, 4, 7, 2, 5, 8]]
    return f


def load(split, n):
    truths = list(
        load_ground_truth(
            Path(args.get("world", "runs/world20k")) / "annotations" / f"ground_truth_{split}.json"
        ).values()
    )[:n]
    return truths


N_IMG = 9  # image tokens: the 3x3 cells (+ the global token of an encoder that has one, with enc=)
tr = load("train", ntrain)
va = load("val", 200)
if args.get("enc"):
    from vistune.demo.encoder import load_weights_file
    from vistune.demo.pipeline import load_pixels
    from vistune.world.build import WorldPaths

    encoder = load_weights_file(args["enc"]).eval()  # with or without the global token, as the file was saved
    N_IMG = encoder.num_tokens
    wp = WorldPaths(Path(args.get("world", "runs/world20k")))
    ENC = {}
    for split, ts in (("train", tr), ("val", va)):
        for i in range(0, len(ts), 500):
            chunk = ts[i : i + 500]
            with torch.no_grad():
                out = encoder(load_pixels(wp, split, chunk, 72))
            for t, f in zip(chunk, out, strict=True):
                ENC[t.image_id] = f
    D = next(iter(ENC.values())).shape[-1]
    feats = lambda t: ENC[t.image_id]  # noqa: E731
    print("encoder features", D, flush=True)
IMG = -200

# exist=shape: POPE-style existence, "Is there a heart?" (a shape; "no" names one not in the image);
# exreply=adj0 / adj1: the replies "Heart present." / "A heart is present." instead of "A heart? Yes, there is one."
if args.get("exist") == "shape":
    import vistune.eval.world as W

    def _q_exist_shape(t, rng):
        present = sorted({o.shape for o in t.objects})
        yes = rng.random() < 0.5
        pool = present if yes else [s for s in shps if s not in present]
        shape = pool[int(rng.integers(len(pool)))]
        named = W.with_article(shape)
        if args.get("exreply"):
            word = "present" if yes else "absent"
            said = shape.capitalize() if args["exreply"] == "adj0" else f"{named.capitalize()} is"
            return f"Is there {named}?", word, f"{said} {word}."
        found = "Yes, there is one." if yes else "No, there is none."
        return f"Is there {named}?", "yes" if yes else "no", f"{named.capitalize()}? {found}"

    W._MAKERS["existence"] = _q_exist_shape


TEXT_SCENE = args.get("textscene") == "1"
SENT = [args.get("sent") in ("1", "lib")]
TRUTHS = {t.image_id: t for t in tr + va}


def _rowcol(q):
    from vistune.world.vocab import REGIONS

    return next(rc for rc, name in REGIONS.items() if name == q.answer)


def _cell_word(q):
    """The asked object's cell as one number word, 1-9 row-major (posform=cellno)."""
    from vistune.world.vocab import NUMBER_WORDS

    row, col = _rowcol(q)
    return NUMBER_WORDS[row * 3 + col + 1]


def _position_reply(q, form):
    """The position reply in another form than the library's (posform=)."""
    from vistune.world.vocab import COL_NAMES, ROW_NAMES

    row, col = _rowcol(q)
    ref = q.question[len("Where is the ") : -1]
    replies = {
        "grid": f"The {ref} is in the {ROW_NAMES[row]} row and the {COL_NAMES[col]} column.",
        "rc": f"The {ref} is in the {ROW_NAMES[row]} row. The {ref} is in the {COL_NAMES[col]} column.",
        "at": f"The {ref} is at the {q.answer}.",
        "bare": f"The {ref} is {q.answer}.",
        "rowcol": f"The {ref} is {ROW_NAMES[row]} {COL_NAMES[col]}.",  # the row word right after the name
        # control: the cell named by one word (its number, 1-9 row-major), so the answer is one 9-way choice
        "cellno": f"The {ref} is in cell {_cell_word(q)}.",
        # the one 9-way answer word right after "is", as color's "The star is red."
        "cellis": f"The {ref} is {_cell_word(q)}.",
    }
    return replies[form]


def _answer_words(q):
    """The words a keyscore checks: the answer, or with posform=grid|rc the row and the column word."""
    if q.qtype == "position" and args.get("posform") in ("grid", "rc", "rowcol"):
        from vistune.world.vocab import COL_NAMES, ROW_NAMES

        row, col = _rowcol(q)
        return [ROW_NAMES[row], COL_NAMES[col]]
    if q.qtype == "position" and args.get("posform") in ("cellno", "cellis"):
        return [_cell_word(q)]
    return [q.answer]


def encode(q, with_answer=True):
    conv = q.conversation(with_answer=True)
    SAP = "\nAnswer with a single word or phrase."
    if args.get("nosap") == "1":
        conv[0]["value"] = conv[0]["value"].replace(SAP, "")
    if args.get("sapfirst") == "1":
        conv[0]["value"] = (
            conv[0]["value"]
            .replace(SAP, "")
            .replace("<image>\n", "<image>\nAnswer with a single word or phrase.\n")
        )
    if img_after:
        conv[0]["value"] = conv[0]["value"].replace("<image>\n", "") + "\n<image>"
    if TEXT_SCENE:  # control: the scene written as text in place of the image tokens
        from vistune.world.vocab import REGIONS

        truth = TRUTHS[q.image_id]
        scene = " ".join(
            f"{o.color} {o.shape} {REGIONS[(o.row, o.col)]}."
            for o in sorted(truth.objects, key=lambda o: (o.row, o.col))
        )
        conv[0]["value"] = conv[0]["value"].replace("<image>", scene)
    short_types = args.get("shorttypes", "").split(",")
    if SENT[0] and args.get("sent") == "lib" and q.qtype not in short_types:  # the library's sentence replies
        conv = q.conversation(with_answer=True, style="sentence")
        if q.qtype == "position" and args.get("posform"):
            conv[1]["value"] = _position_reply(q, args["posform"])
        # countform=number: the counted noun right before the number
        if q.qtype == "count" and args.get("countform") == "number":
            noun = q.question[len("How many ") : -len(" are there?")]
            conv[1]["value"] = f"The number of {noun} is {q.answer}."
    elif SENT[0] and args.get("sent") != "lib":  # a sentence answer that restates what the question is about
        key = q.question.split(" is the ", 1)[1].rstrip("?")
        if q.qtype in ("color", "shape"):
            conv[1]["value"] = f"The {key} is {'a ' if q.qtype == 'shape' else ''}{q.answer}."
            if q.qtype == "shape" and args.get("shapeform") == "it":
                conv[1]["value"] = f"It is a {key.split()[0]} {q.answer}."
    t = tokenize_conversation(conv, tok, tmpl, num_image_tokens=N_IMG)
    return t.input_ids, t.labels


def build(truths, seed, per):
    qs = [q for q in make_closed_questions(truths, seed=seed, per_type=per) if q.qtype in types]
    fm = {t.image_id: feats(t) for t in truths}
    return [(encode(q), fm[q.image_id], q) for q in qs]


def build_multi(truths, seed, per):
    qs = [q for q in make_closed_questions(truths, seed=seed, per_type=per) if q.qtype in types]
    fm = {t.image_id: feats(t) for t in truths}
    by = {}
    for q in qs:
        by.setdefault(q.image_id, []).append(q)
    r = random.Random(seed)
    out = []
    for iid, group in by.items():
        r.shuffle(group)
        conv = [turn for q in group for turn in q.conversation(with_answer=True)]
        for later in conv[2::2]:
            later["value"] = later["value"].replace("<image>\n", "")
        tk = tokenize_conversation(conv, tok, tmpl, num_image_tokens=N_IMG)
        out.append(((tk.input_ids, tk.labels), fm[iid], group[0]))
    return out


SENT_STEPS = int(
    args.get("sentcur", 0)
)  # the first N steps on sentence answers, then short answers (SENT off)
if SENT_STEPS:
    SENT[0] = True
    sent_train = build(tr, 0, 3)
    SENT[0] = False
train = build_multi(tr, 0, int(args.get("per", 2))) if multi else build(tr, 0, 3)
val = build(va, 1, 1)
if args.get("evaltrain") == "1":  # control: score 200 of the training questions instead of held-out ones
    val = [x for x in train if x[2].qtype in types][:200]
if "maxobj" in args:  # control: only images with <= N objects (1: nothing to look up), train and held-out
    train = [x for x in train if len(TRUTHS[x[2].image_id].objects) <= int(args["maxobj"])]
    held_out = load("val", 2000)  # every held-out image, to find enough such ones
    TRUTHS.update({t.image_id: t for t in held_out})
    val = [x for x in build(held_out, 1, 1) if len(TRUTHS[x[2].image_id].objects) <= int(args["maxobj"])]
print(len(train), "train qs", len(val), "val qs", flush=True)
proj = nn.Sequential(nn.Linear(D, H), nn.GELU(), nn.Linear(H, H))
if args.get("fixproj") == "1":
    proj = nn.Linear(D, H, bias=False)
    with torch.no_grad():
        proj.weight.normal_(0, float(args.get("pscale", 1.0)) / math.sqrt(4))
    proj.requires_grad_(False)
if args.get("wordproj") == "1":
    # A frozen projector that maps each one-hot attribute to the LM's own embedding of its word (what a perfect
    # stage-1 alignment would give): the cell token = emb(color) + emb(shape) + emb(size) + emb(row) + emb(col).
    from vistune.world.vocab import COL_NAMES, ROW_NAMES

    emb_w = lm.get_input_embeddings().weight.detach()

    def word(w):
        return emb_w[tok.encode(" " + w, add_special_tokens=False)].mean(0)

    M = torch.zeros(D, H)
    for i, c in enumerate(cols):
        M[1 + i] = word(c)
    for i, sh in enumerate(shps):
        M[10 + i] = word(sh)
    for i, sz in enumerate(szs):
        M[18 + i] = word(sz)
    for i in range(3):
        M[D - 6 + i] = word(ROW_NAMES[i])
        M[D - 3 + i] = word(COL_NAMES[i])
    proj = nn.Linear(D, H, bias=False)
    with torch.no_grad():
        proj.weight.copy_(M.T * float(args.get("pscale", 1.0)))
    proj.requires_grad_(args.get("wordtrain") == "1")
params = list(lm.parameters()) + [p for p in proj.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: min(1, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
)
emb = lm.get_input_embeddings()


def batch(items):
    L = max(len(i[0][0]) for i in items)
    ids = torch.full((len(items), L), tok.pad_token_id)
    lab = torch.full((len(items), L), -100)
    att = torch.zeros((len(items), L), dtype=torch.long)
    for b, ((x, y), _f, _q) in enumerate(items):
        ids[b, : len(x)] = torch.tensor(x)
        lab[b, : len(y)] = torch.tensor(y)
        att[b, : len(x)] = 1
    fe = torch.stack([i[1] for i in items]) * feat_scale
    img = ids == IMG
    e = emb(ids.clamp(min=0))
    e = e.clone()
    if img.any():
        e[img] = proj(fe).reshape(-1, H).to(e.dtype)
    if args.get("imgmask") == "self":  # control: image tokens do not attend to each other (each sees itself)
        allowed = torch.tril(torch.ones(L, L, dtype=torch.bool))[None] & att.bool()[:, None, :]
        pair = img[:, :, None] & img[:, None, :]  # query and key both image tokens
        allowed = allowed & ~(pair & ~torch.eye(L, dtype=torch.bool)[None])
        allowed |= torch.eye(L, dtype=torch.bool)[None]  # every row keeps one key (padding rows too)
        att = torch.zeros(len(items), 1, L, L).masked_fill(~allowed[:, None], float("-inf"))
    return e, lab, att


NLL = {}
PRES = []
PERANS = {}
FAILS = []


def evaluate():
    lm.eval()
    right = {}
    tot = {}
    with torch.no_grad():
        for i in range(0, len(val), 100):
            items = val[i : i + 100]
            e, lab, att = batch(items)
            logits = lm(inputs_embeds=e, attention_mask=att).logits
            pred = logits[:, :-1].argmax(-1)
            tgt = lab[:, 1:]
            for b, it in enumerate(items):
                m = tgt[b] != -100
                ok = bool((pred[b][m] == tgt[b][m]).all())
                if args.get("keyscore") == "1":  # score the answer word's tokens only (sentence answers)
                    seq = tgt[b].tolist()
                    ok = True
                    for answer in _answer_words(it[2]):
                        for form in (" " + answer, answer.capitalize(), " " + answer.capitalize(), answer):
                            aw = tok.encode(form, add_special_tokens=False)
                            at = next((j for j in range(len(seq)) if seq[j : j + len(aw)] == aw), None)
                            if at is not None:
                                break
                        assert at is not None, (tok.decode([x for x in seq if x >= 0]), answer)
                        ok = ok and bool((pred[b][at : at + len(aw)] == tgt[b][at : at + len(aw)]).all())
                first = m.nonzero()[0, 0]
                nll = -torch.log_softmax(logits[b, first], -1)[tgt[b, first]].item()
                NLL.setdefault(it[2].qtype, []).append(nll)
                if it[2].qtype == "color":
                    word = tok.decode([pred[b, first].item()]).strip()
                    present = {o.color for o in TRUTHS[it[2].image_id].objects}
                    PRES.append(word in present)
                t = it[2].qtype
                # accuracy per (type, true answer), printed after each evaluation
                if args.get("perans") == "1":
                    PERANS.setdefault((t, it[2].answer), []).append(ok)
                    if not ok and len(FAILS) < int(args.get("showfail", 0)):
                        FAILS.append(f"{it[2].question} -> {tok.decode(pred[b][m])!r} (true {it[2].answer})")
                if args.get("perref") == "1":  # accuracy by object count and by how the object is named
                    n_obj = len(TRUTHS[it[2].image_id].objects)
                    kind = "pair" if len(it[2].question.split()) > 4 else "one word"
                    PERANS.setdefault((t, f"{n_obj} objects"), []).append(ok)
                    PERANS.setdefault((t, kind), []).append(ok)
                right[t] = right.get(t, 0) + ok
                tot[t] = tot.get(t, 0) + 1
    lm.train()
    print(
        "   nll",
        {k: round(sum(v) / len(v), 2) for k, v in NLL.items()},
        "color-present",
        round(sum(PRES) / max(1, len(PRES)), 2),
    )
    if PERANS:
        print("   per answer", {f"{t}:{a}": f"{sum(v)}/{len(v)}" for (t, a), v in sorted(PERANS.items())})
    NLL.clear()
    PRES.clear()
    PERANS.clear()
    for f in FAILS:
        print("   fail:", f)
    FAILS.clear()
    return {t: round(right[t] / tot[t], 3) for t in tot}, round(sum(right.values()) / sum(tot.values()), 3)


first_types = args.get("first", "color").split(",")
first_train = [x for x in train if x[2].qtype in first_types]
if "minobj" in args:  # the first phase (or all of training with types=) only on images with >= N objects
    first_train = [x for x in first_train if len(TRUTHS[x[2].image_id].objects) >= int(args["minobj"])]
    if not int(args.get("cur", 0)):
        train = first_train
# firstmax=K: the first phase (cur=N, first=TYPES) only on images with <= K objects, easy lookups first
if "firstmax" in args:
    first_train = [x for x in first_train if len(TRUTHS[x[2].image_id].objects) <= int(args["firstmax"])]
t0 = time.time()
rng = random.Random(SEED)
for step in range(steps + 1):
    if step % 100 == 0:
        print(step, f"{time.time() - t0:.0f}s", evaluate(), flush=True)
    if step == steps:
        break
    cur = int(args.get("cur", 0))
    if step < SENT_STEPS:
        items = rng.sample(sent_train, bs)
    elif step < cur:
        items = rng.sample(first_train, bs)
    else:
        items = rng.sample(train, bs)
    e, lab, att = batch(items)
    out = lm(inputs_embeds=e, attention_mask=att, labels=lab)
    opt.zero_grad()
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    if step % 50 == 0:
        print("  loss", round(out.loss.item(), 3), flush=True)

if args.get("attn") == "1":
    # Where does the position that predicts the first answer token look? Per layer and head: the asked object's
    # token's share of the attention all object tokens get (against 1 / objects if spread alike), and how often
    # the asked token gets the most attention of all image tokens. Color, shape and position questions.
    lm.set_attn_implementation("eager")
    lm.eval()
    stats = {}
    with torch.no_grad():
        for i in range(0, len(val), 50):
            items = val[i : i + 50]
            e, lab, att = batch(items)
            out = lm(inputs_embeds=e, attention_mask=att, output_attentions=True)
            tgt = lab[:, 1:]
            for b, it in enumerate(items):
                q = it[2]
                truth = TRUTHS[q.image_id]
                words = q.question.rstrip("?").split()
                if q.qtype in ("color", "position") and "object" not in words:
                    shape = words[-1]
                    cands = [o for o in truth.objects if o.shape == shape]
                    if len(words) > 4 and q.qtype == "position":
                        cands = [o for o in cands if o.color == words[-2]]
                elif q.qtype == "shape":
                    cands = [o for o in truth.objects if o.color == words[-2]]
                else:
                    continue
                cell = cands[0].row * 3 + cands[0].col
                seq = tgt[b].tolist()
                aw = tok.encode(" " + _answer_words(q)[0].split()[0], add_special_tokens=False)
                at = next(
                    j for j in range(len(seq)) if seq[j : j + len(aw)] == aw
                )  # predicted at position `at`
                ids_img = [j for j in range(e.shape[1]) if j < len(it[0][0]) and it[0][0][j] == IMG]
                occ = [o.row * 3 + o.col for o in truth.objects]
                for layer, a in enumerate(out.attentions):
                    for off in range(int(args.get("attnoffs", 1))):  # also the positions `off` tokens earlier
                        w = a[b, :, at - off, ids_img]  # [heads, 9]
                        for h in range(w.shape[0]):
                            s = stats.setdefault((q.qtype, off, layer, h), [0.0, 0.0, 0, 0])
                            s[0] += (
                                w[h, cell] / w[h, occ].sum().clamp(min=1e-9)
                            ).item()  # share among the objects
                            s[1] += 1 / len(occ)  # what attending to all objects alike would give
                            s[2] += int(w[h].argmax().item() == cell)
                            s[3] += 1
    for (qt, back, layer, h), (on, off, top, n) in sorted(stats.items()):
        print(
            f"   attn {qt:9s} -{back} L{layer} H{h}: asked token's share of the objects' attention {on / n:.2f} "
            f"(uniform {off / n:.2f}), "
            f"argmax right {top / n:.2f}"
        )
