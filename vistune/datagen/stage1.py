"""Stage-1 (feature alignment) data from captions alone, in the LLaVA pretrain format.

Each record pairs an image with a brief-description instruction (sampled from `prompts/instructions/brief.txt`)
and one of its captions as the answer:

    {"id": "42", "image": "000000000042.png", "conversations": [
        {"from": "human", "value": "Describe the image briefly.\n<image>"}, {"from": "gpt", "value": "<caption>"}]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vistune.datagen.annotations import AnnotationSet
from vistune.datagen.parse import IMAGE_TOKEN
from vistune.errors import VistuneError


def stage1_records(
    annotations: AnnotationSet,
    instructions: list[str],
    *,
    seed: int = 0,
    all_captions: bool = False,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """One record per image (a caption picked at random), or one per caption with `all_captions`."""
    records = []
    images = annotations.images[:limit] if limit else annotations.images
    for image in images:
        if not image.captions:
            continue
        rng = np.random.default_rng([seed, image.image_id])
        picks = range(len(image.captions)) if all_captions else [int(rng.integers(len(image.captions)))]
        for k in picks:
            instruction = instructions[int(rng.integers(len(instructions)))]
            human = f"{instruction}\n{IMAGE_TOKEN}" if rng.random() < 0.5 else f"{IMAGE_TOKEN}\n{instruction}"
            records.append(
                {
                    "id": f"{image.image_id}" if not all_captions else f"{image.image_id}_{k}",
                    "image": image.file_name,
                    "conversations": [
                        {"from": "human", "value": human},
                        {"from": "gpt", "value": image.captions[k]},
                    ],
                }
            )
    if not records:
        raise VistuneError(
            "stage-1 data needs captions, and no image has any; pass a COCO captions file as --captions"
        )
    return records


def write_json(records: list[dict[str, Any]], out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=1, ensure_ascii=False))
    os.replace(tmp, out)
