"""The miniature world's language model: a tokenizer trained on the world's text and a tiny Llama pretrained on it.

LLaVA starts from Vicuna, a chat-tuned LLM; the miniature starts from a tiny causal LM pretrained, before any image
is seen, on the world's text: captions, descriptions and question-answer turns rendered in the chat template the
model is later tuned with (text only). So it knows the world's words and the chat format, not the images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vistune.testing import make_tiny_tokenizer


@dataclass
class LanguageModelOptions:
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    # Per head; None: hidden_size // num_heads (the attention as wide as the model).
    head_dim: int | None = None
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    vocab_size: int = 1000  # BPE vocabulary; the world's ~300 words each become one or two tokens
    # Tied, as measured best in the demo: untied, the color lookup formed far less often (held-out color 50-58% in
    # two seeds, tied 92-93%). Tying does collapse the input embeddings of words the text cannot predict (colors:
    # mean cosine 0.66 after pretraining; 0.16 untied), and a tied LM could not learn the existence reply's color
    # comparison as text where an untied one could (experiments/comparison_probe.py; docs/demo.md, sixth round).
    tie_word_embeddings: bool = True


@dataclass
class LanguagePretrainConfig:
    steps: int = 300
    batch_size: int = 32
    block_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.05
    seed: int = 0
    # Steps of in-context copying (`pretrain_induction`), after the world's text; 0: none.
    induction_steps: int = 0
    induction_max_len: int = 20  # longest random run that is repeated
    induction_batch_size: int = 32


@dataclass
class InductionResult:
    losses: list[float]
    accuracy: float  # next-token accuracy on the repeated half of held-out sequences (chance: 1 / vocabulary)


def make_world_tokenizer(
    corpus: Sequence[str], opts: LanguageModelOptions, out_dir: str | Path | None = None
) -> Any:
    """A byte-level BPE tokenizer (any text round-trips) trained on the world's own text, saved to `out_dir`."""
    return make_tiny_tokenizer(out_dir, vocab_size=opts.vocab_size, corpus=list(corpus))


def text_config(opts: LanguageModelOptions, tokenizer: Any) -> dict[str, Any]:
    """The HF Llama config dict (the `text_config` of a `ModelConfig`)."""
    extra = {} if opts.head_dim is None else {"head_dim": opts.head_dim}
    return {
        **extra,
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": opts.hidden_size,
        "intermediate_size": opts.intermediate_size,
        "num_hidden_layers": opts.num_layers,
        "num_attention_heads": opts.num_heads,
        "num_key_value_heads": opts.num_heads,
        "max_position_embeddings": opts.max_position_embeddings,
        "tie_word_embeddings": opts.tie_word_embeddings,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def build_language_model(opts: LanguageModelOptions, tokenizer: Any) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(text_config(opts, tokenizer))
    model_type = cfg.pop("model_type")
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **cfg))


def pack_blocks(texts: Sequence[str], tokenizer: Any, block_size: int) -> torch.Tensor:
    """Tokenize documents (BOS ... EOS), concatenate, cut into [num_blocks, block_size] (the tail is dropped)."""
    eos = [tokenizer.eos_token_id]
    ids: list[int] = []
    # In batches: a fast tokenizer encodes a batch on all cores (the demo's 61K documents: 6.6 s, not 13 s one by one).
    for start in range(0, len(texts), 4096):
        for doc in tokenizer(list(texts[start : start + 4096]))["input_ids"]:
            ids += doc
            ids += eos
    n = len(ids) // block_size
    if n == 0:
        raise ValueError(f"the pretraining text has {len(ids)} tokens, fewer than one block of {block_size}")
    return torch.tensor(ids[: n * block_size]).view(n, block_size)  # [num_blocks, block_size]


def induction_batch(
    vocab: torch.Tensor, batch_size: int, max_len: int, gen: torch.Generator, *, min_len: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token runs, each followed by itself: [B, P + 2L] ids (a random prefix of 0-10 tokens, a run of
    min_len..max_len tokens from `vocab`, the run again) and labels (-100 except where the repeat is predictable)."""
    if max_len < min_len:
        raise ValueError(
            f"induction_max_len is {max_len}; the copied runs are {min_len} tokens or longer, so use >= {min_len}"
        )
    run_len = int(torch.randint(min_len, max_len + 1, (1,), generator=gen))
    prefix_len = int(torch.randint(0, 11, (1,), generator=gen))
    draw = vocab[torch.randint(len(vocab), (batch_size, prefix_len + run_len), generator=gen)]
    ids = torch.cat([draw, draw[:, prefix_len:]], dim=1)
    labels = ids.clone()
    labels[:, : prefix_len + run_len + 1] = -100  # the repeat's first token cannot be known before it starts
    return ids, labels


def pretrain_induction(
    model: nn.Module,
    vocab: torch.Tensor,
    cfg: LanguagePretrainConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> InductionResult:
    """Train in-context copying: predict the second copy of a random token run from the first.

    A real LLM arrives at LLaVA training with the attention circuits that find an earlier token by its content and
    read what it says (induction heads); a tiny LM pretrained for seconds on the world's text does not, and then never
    learns to pick the named object's token out of the image tokens (docs/demo.md, ninth round). This task is the
    classic way to grow those circuits; it needs no text and no images. `vocab`: the token ids runs are drawn from.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    losses = _fit(
        model,
        optim,
        None,
        cfg.induction_steps,
        lambda: induction_batch(vocab, cfg.induction_batch_size, cfg.induction_max_len, gen),
        on_step,
    )
    return InductionResult(losses, copy_accuracy(model, vocab, cfg.induction_max_len, seed=cfg.seed + 1))


@torch.no_grad()
def copy_accuracy(model: nn.Module, vocab: torch.Tensor, max_len: int, *, seed: int) -> float:
    """Next-token accuracy on the predictable part of the repeat, over 8 held-out batches of 32 (drawn with `seed`)."""
    held_out = torch.Generator().manual_seed(seed)
    right = total = 0
    for _ in range(8):
        ids, labels = induction_batch(vocab, 32, max_len, held_out)
        pred = model(input_ids=ids).logits[:, :-1].argmax(-1)
        scored = labels[:, 1:] != -100
        right += int((pred == ids[:, 1:])[scored].sum())
        total += int(scored.sum())
    return right / total


def plain_token_ids(tokenizer: Any) -> torch.Tensor:
    """Every token id of the tokenizer but its special tokens (what random runs are drawn from)."""
    special = set(tokenizer.all_special_ids)
    return torch.tensor([i for i in range(len(tokenizer)) if i not in special])


def pretrain_language_model(
    model: nn.Module,
    blocks: torch.Tensor,
    cfg: LanguagePretrainConfig,
    *,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Next-token training on packed text blocks [N, block_size]; returns the loss curve."""
    torch.manual_seed(cfg.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))
    )
    gen = torch.Generator().manual_seed(cfg.seed)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        batch = blocks[torch.randint(len(blocks), (cfg.batch_size,), generator=gen)]
        return batch, batch

    return _fit(model, optim, sched, cfg.steps, next_batch, on_step)


def _fit(
    model: nn.Module,
    optim: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler | None,
    steps: int,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    on_step: Callable[[int, float], None] | None,
) -> list[float]:
    """The pretraining loop both tasks share: `steps` clipped optimizer steps on `next_batch()`'s (ids, labels);
    leaves the model in eval mode; returns the loss curve."""
    model.train()
    losses = []
    for step in range(steps):
        ids, labels = next_batch()
        loss = model(input_ids=ids, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses
