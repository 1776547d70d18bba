"""A tiny LLaVA world on disk for training tests: tokenizer, images, stage-1 and stage-2 data, a config builder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vistune.testing import make_tiny_tokenizer

COLORS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 220, 40)}
SHAPES = ["circle", "square", "triangle"]


def _image(path: Path, color: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 40, size=(36, 44, 3), dtype=np.uint8) + np.array(color, dtype=np.uint8) // 2
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_world")
    tok_dir = root / "tokenizer"
    make_tiny_tokenizer(tok_dir)
    images = root / "images"
    images.mkdir()
    stage1, stage2 = [], []
    for i in range(24):
        color = list(COLORS)[i % len(COLORS)]
        shape = SHAPES[i % len(SHAPES)]
        name = f"img_{i:03d}.png"
        _image(images / name, COLORS[color], i)
        caption = f"There is a {color} {shape} in the image."
        stage1.append(
            {
                "id": f"s1-{i}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": "Describe the image briefly.\n<image>"},
                    {"from": "gpt", "value": caption},
                ],
            }
        )
        question = "<image>\nWhat color is the square?" if i % 2 else "What color is the square?\n<image>"
        stage2.append(
            {
                "id": f"s2-{i}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": question},
                    {"from": "gpt", "value": f"The square is {color}."},
                    {"from": "human", "value": "How many objects are there?"},
                    {"from": "gpt", "value": f"One {shape}."},
                ],
            }
        )
    for i in range(6):  # text-only records
        stage2.append(
            {
                "id": f"text-{i}",
                "conversations": [
                    {"from": "human", "value": "What is a square?"},
                    {"from": "gpt", "value": "A shape with four equal sides." + " Yes." * i},
                ],
            }
        )
    stage2.append(  # two images in one record
        {
            "id": "two-images",
            "image": ["img_000.png", "img_001.png"],
            "conversations": [
                {"from": "human", "value": "<image>\n<image>\nWhat is in the picture?"},
                {"from": "gpt", "value": "A red circle and a green square."},
            ],
        }
    )
    (root / "stage1.json").write_text(json.dumps(stage1))
    (root / "stage2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stage2))
    (root / "val.json").write_text(json.dumps(stage2[:4] + stage2[-3:]))
    return {
        "root": root,
        "tokenizer": tok_dir,
        "images": images,
        "stage1": root / "stage1.json",
        "stage2": root / "stage2.jsonl",
        "val": root / "val.json",
    }
