"""Forward + backward samples/s with the shared prompt prefix (`model.share_prompt_prefix`) against without it and
against transformers' LlavaForConditionalGeneration, same run, same weights, same batch.

    python benchmarks/bench_shared_prefix.py                  # tiny (the demo's sizes) and mid, fp32, 2 threads
    python benchmarks/bench_shared_prefix.py --configs tiny --iters 30

Every sample starts with the same prompt prefix (a chat template's system turn and first user header: 12 tokens in
the demo's chatml, 31 in LLaVA's vicuna_v1 with SmolLM2's tokenizer), then its image and its own text, the reply half supervised. The three
models alternate step by step so machine load hits them alike; their losses are printed as a check that they
compute the same thing (equal to float rounding).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

import torch
from bench_model_forward_backward import CONFIGS as MODEL_CONFIGS
from bench_model_forward_backward import hf_twin, model_config, step_hf, step_ours

from vistune.model.llava import build_model


@dataclass(frozen=True)
class PrefixConfig:
    name: str
    model: str  # a config of bench_model_forward_backward.py (its sizes and batch)
    prefix: int  # shared tokens at the start of every sample
    text: int  # each sample's own text tokens after its image


CONFIGS = {
    # The demo's closed questions: 12 shared tokens, 9 image tokens, ~20 of question and reply (~41 in all).
    "tiny": PrefixConfig("tiny", "tiny", prefix=12, text=20),
    # LLaVA's vicuna_v1 system prompt and "USER:" (31 tokens with SmolLM2's tokenizer), 196 image tokens, 64 of conversation; batch 2 as that config.
    "mid": PrefixConfig("mid", "mid", prefix=31, text=64),
}


def make_batch(cfg: PrefixConfig, model, vocab: int, batch: int, image_size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(4, vocab - 1, (1, cfg.prefix), generator=g).expand(batch, -1)
    image = torch.full((batch, model.num_image_tokens), model.image_token_id)
    own = torch.randint(4, vocab - 1, (batch, cfg.text), generator=g)
    ids = torch.cat([prefix, image, own], dim=1)
    labels = ids.clone()
    labels[:, : ids.shape[1] - cfg.text // 2] = -100  # the reply half of each sample's own text is supervised
    pixels = torch.randn(batch, 3, image_size, image_size, generator=g)
    return ids, torch.ones_like(ids), labels, pixels


def run(cfg: PrefixConfig, iters: int, warmup: int) -> None:
    sizes = MODEL_CONFIGS[cfg.model]
    torch.manual_seed(0)
    model = build_model(model_config(sizes))
    model.set_trainable(vision=False, projector=True, language_model=True)
    model.train()
    twin = hf_twin(model)
    batch = make_batch(cfg, model, sizes.vocab_size, sizes.batch_size, sizes.image_size)
    seq = batch[0].shape[1]
    print(
        f"[{cfg.name}] batch {sizes.batch_size} x {seq} tokens: {cfg.prefix} shared, {model.num_image_tokens} image"
    )

    def shared(b):
        model.share_prompt_prefix = True
        return step_ours(model, b)

    def plain(b):
        model.share_prompt_prefix = False
        return step_ours(model, b)

    runs = {
        "vistune, shared prefix": shared,
        "vistune, per sample": plain,
        "transformers Llava": lambda b: step_hf(twin, b),
    }
    for _ in range(warmup):
        for step in runs.values():
            step(batch)
    times: dict[str, list[float]] = {name: [] for name in runs}
    losses: dict[str, float] = {}
    for _ in range(iters):  # alternate, so load on the machine hits all alike
        for name, step in runs.items():
            elapsed, losses[name] = step(batch)
            times[name].append(elapsed)
    print(f"[{cfg.name}] losses: " + ", ".join(f"{name} {loss:.6f}" for name, loss in losses.items()))
    rate = {name: sizes.batch_size / statistics.median(t) for name, t in times.items()}
    peer = rate["transformers Llava"]
    print(
        f"[{cfg.name}] forward+backward samples/s (median of {iters} steps): "
        + ", ".join(f"{name} {r:.1f} ({r / peer:.2f}x transformers)" for name, r in rate.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "mid"], choices=sorted(CONFIGS))
    parser.add_argument("--iters", type=int, default=None, help="measured steps (default: tiny 20, mid 3)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, fp32, {args.threads} threads, CPU")
    for name in args.configs:
        run(CONFIGS[name], args.iters or (20 if name == "tiny" else 3), args.warmup)


if __name__ == "__main__":
    main()
