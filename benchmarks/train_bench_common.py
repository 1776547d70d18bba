"""Shared pieces of the training benchmarks: synthetic LLaVA data on disk, FLOP counting, the matmul peak.

Not a benchmark itself. The model configs (tiny, mid) and the transformers twin come from
`bench_model_forward_backward.py`, so every benchmark measures the same shapes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from bench_model_forward_backward import CONFIGS, BenchConfig, hf_twin, model_config  # noqa: E402

__all__ = [
    "CONFIGS",
    "BenchConfig",
    "hf_twin",
    "make_tokenizer",
    "matmul_peak",
    "model_config",
    "text_tokens",
    "train_flops",
    "write_dataset",
]

_WORDS = [
    "the",
    "red",
    "circle",
    "is",
    "left",
    "of",
    "a",
    "blue",
    "square",
    "and",
    "the",
    "green",
    "triangle",
    "sits",
    "below",
    "a",
    "yellow",
    "star",
    "in",
    "the",
    "picture",
    "there",
    "are",
    "two",
    "three",
    "four",
    "shapes",
    "what",
    "color",
    "is",
    "it",
    "how",
    "many",
    "objects",
    "are",
    "there",
    "describe",
]


def make_tokenizer(out_dir: Path, vocab_size: int = 300):
    """A tiny BPE tokenizer that knows the benchmark's words (ids < vocab_size, so never the image id)."""
    from vistune.testing import SPECIAL_TOKENS, make_tiny_tokenizer

    corpus = [
        " ".join(_WORDS),
        "You are a helpful assistant.",
        " ".join(SPECIAL_TOKENS),
        "user assistant system",
    ]
    return make_tiny_tokenizer(out_dir, vocab_size=vocab_size, corpus=corpus * 8)


def text_tokens(tokenizer, template: str, words: int) -> int:
    """Text tokens (template included) of a record with `words` words: to size the records to a token target."""
    from vistune.text.tokenize import tokenize_conversation

    record = _record(0, words, np.random.default_rng(0))
    return (
        len(tokenize_conversation(record["conversations"], tokenizer, template, num_image_tokens=1).input_ids)
        - 1
    )


def _record(i: int, words: int, rng: np.random.Generator) -> dict:
    picked = [_WORDS[j] for j in rng.integers(0, len(_WORDS), size=words)]
    half = words // 2
    return {
        "id": str(i),
        "image": f"{i:05d}.png",
        "conversations": [
            {"from": "system", "value": "You are a helpful assistant."},
            {"from": "human", "value": "<image>\n" + " ".join(picked[:half]) + "?"},
            {"from": "gpt", "value": " ".join(picked[half:]) + "."},
        ],
    }


def write_dataset(
    root: Path, *, records: int, image_size: int, text_words: int, seed: int = 0
) -> tuple[Path, Path]:
    """`records` LLaVA records, each one image + a short system turn, a question and a reply (`text_words` words)."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    data = []
    for i in range(records):
        pixels = rng.integers(0, 256, size=(image_size, image_size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i:05d}.png")
        data.append(_record(i, text_words, rng))
    path = root / "data.json"
    path.write_text(json.dumps(data))
    return path, images


def matmul_peak(threads: int, seconds: float = 1.0) -> float:
    """This machine's fp32 matmul FLOP/s now: the best of a few LM-shaped and square GEMMs."""
    torch.set_num_threads(threads)
    best = 0.0
    for m, k, n in ((512, 768, 3072), (1024, 1024, 1024), (2048, 768, 2048)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - start))
    return best


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def train_flops(
    model, *, tokens: int, supervised: int, images: int, seq_lens: list[int], cached: bool
) -> float:
    """FLOPs of one stage-2 step (vision frozen; projector + LM trained), counted honestly.

    LM decoder (embeddings excluded): 6 x params x real (unpadded) tokens; attention scores 3 x 4 x seq^2 x d per
    layer and sequence (QK^T and AV, forward + backward); LM head: 6 x params x supervised tokens (the only positions
    where a model needs it); projector: 6 x params x image tokens; frozen vision tower: 2 x params x its tokens
    per image (forward only), 0 when its features come from the cache.
    """
    lm = model.language_model
    cfg = lm.config
    head = _params(lm.get_output_embeddings())
    embed = _params(lm.get_input_embeddings())
    body = _params(lm) - head - embed
    attention = sum(3 * 4 * n * n * cfg.hidden_size * cfg.num_hidden_layers for n in seq_lens)
    image_tokens = images * model.num_image_tokens
    vision = 0 if cached else 2 * _params(model.vision) * images * (model.num_image_tokens + 1)
    return (
        6 * body * tokens
        + attention
        + 6 * head * supervised
        + 6 * _params(model.projector) * image_tokens
        + vision
    )
