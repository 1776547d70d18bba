"""Stage-1 training samples/s with the vision feature cache vs without, in one run.

    python benchmarks/bench_train_feature_cache.py            # fp32, 2 threads, ~2 minutes
    python benchmarks/bench_train_feature_cache.py --steps 10

Stage 1 (vision and LM frozen, projector trained) on a config where the frozen vision tower costs at least as much
as the language model: CLIP-style ViT 12x384 at 224 px / patch 16 (196 tokens) + a Llama-style LM 4x256 (vocab
32k), batch 8. Both runs are real `vistune train` runs over the same records; the cache is built before timing
(its one-off cost is printed, and amortizes over every later epoch and run). Runs alternate, best of two each; within a run the median step time counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from train_bench_common import BenchConfig, make_tokenizer, model_config, text_tokens, write_dataset

from vistune.config import to_dict
from vistune.train.config import train_config_from_dict
from vistune.train.distributed import DistEnv
from vistune.train.trainer import Trainer

CONFIG = BenchConfig("stage1-vision-heavy", 224, 16, 12, 384, 6, 4, 256, 4, 32000, 32, 8)
TEMPLATE = "chatml"


def run(
    root: Path, data: Path, images: Path, *, cached: bool, warmup: int, steps: int
) -> tuple[float, float, float]:
    cfg = {
        "model": {
            "config": to_dict(model_config(CONFIG)),
            "tokenizer": str(root / "tokenizer"),
            "trainable": {"vision": False, "projector": True, "language_model": False},
        },
        "data": {
            "train": str(data),
            "image_folder": str(images),
            "template": TEMPLATE,
            "cache_vision_features": cached,
            "feature_cache_dir": str(root / "cache"),
        },
        "train": {
            "output_dir": str(root / f"run_{cached}"),
            "max_steps": warmup + steps,
            "global_batch_size": CONFIG.batch_size,
            "micro_batch_size": CONFIG.batch_size,
            "precision": "fp32",
            "progress": False,
            "save_model": False,
            "resume": None,
        },
        "optim": {"lr": 1e-3, "warmup_steps": 0, "schedule": "constant"},
    }
    t0 = time.perf_counter()
    trainer = Trainer(train_config_from_dict(cfg), DistEnv())
    setup = time.perf_counter() - t0
    trainer.run()
    records = [json.loads(x) for x in (trainer.out / "metrics.jsonl").read_text().splitlines()]
    elapsed = _median_step_s(records, warmup) * steps
    return CONFIG.batch_size * steps / elapsed, records[0]["loss"], setup


def _median_step_s(records: list[dict], warmup: int) -> float:
    """Median wall time of the steps after warmup: robust to the load spikes of a shared machine."""
    times = [r["time_s"] for r in records]
    return statistics.median(b - a for a, b in zip(times[warmup - 1 : -1], times[warmup:], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, fp32, {args.threads} threads, CPU; config {CONFIG}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tokenizer = make_tokenizer(root / "tokenizer")
        words = next(w for w in range(2, 200) if text_tokens(tokenizer, TEMPLATE, w) >= CONFIG.text_tokens)
        n = CONFIG.batch_size * (args.warmup + args.steps)
        data, images = write_dataset(root, records=n, image_size=CONFIG.image_size, text_words=words)
        plain, cached = [], []
        for rep in range(2):
            sps, loss_plain, _ = run(root, data, images, cached=False, warmup=args.warmup, steps=args.steps)
            plain.append(sps)
            sps, loss_cached, setup = run(
                root, data, images, cached=True, warmup=args.warmup, steps=args.steps
            )
            cached.append(sps)
            if rep == 0:
                print(f"first-step loss: no cache {loss_plain:.6f}, cache {loss_cached:.6f}")
                print(
                    f"feature cache: built for {n} images during setup ({setup:.1f} s incl. model build, one-off)"
                )
        print(
            f"stage-1 samples/s: no cache {max(plain):.2f}, feature cache {max(cached):.2f}; "
            f"speed-up {max(cached) / max(plain):.2f}x (best of 2, {args.steps} timed steps after {args.warmup})"
        )


if __name__ == "__main__":
    main()
