"""Config builder for the tiny training world (the world itself is the `tiny_world` fixture in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from vistune.config import to_dict
from vistune.testing import tiny_model_config


def tiny_config(world: dict[str, Path], out: Path, *, stage: int = 1, **sections) -> dict:
    """A train config dict for the tiny world; `sections` update the model/data/train/optim sections."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(world["tokenizer"]))
    model_cfg = tiny_model_config(
        vocab_size=len(tok),
        template="plain" if stage == 1 else "vicuna_v1",
        text_overrides={
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        },
    )
    cfg = {
        "name": f"tiny-stage{stage}",
        "model": {
            "config": to_dict(model_cfg),
            "tokenizer": str(world["tokenizer"]),
            "trainable": {"vision": False, "projector": True, "language_model": stage == 2},
        },
        "data": {
            "train": str(world["stage1" if stage == 1 else "stage2"]),
            "image_folder": str(world["images"]),
            "model_max_length": 128,
        },
        "train": {
            "output_dir": str(out),
            "seed": 0,
            "epochs": 1,
            "global_batch_size": 8,
            "micro_batch_size": 4,
            "progress": False,
            "save_model": False,
        },
        "optim": {"lr": 1e-3 if stage == 1 else 1e-4, "projector_lr": 1e-3, "warmup_ratio": 0.1},
    }
    for name, values in sections.items():
        cfg[name].update(values)
    return cfg
