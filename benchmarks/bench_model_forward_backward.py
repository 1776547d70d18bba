"""Forward + backward samples/s: vistune's model vs transformers' LlavaForConditionalGeneration, same run.

    python benchmarks/bench_model_forward_backward.py                 # tiny and mid, fp32, 2 threads
    python benchmarks/bench_model_forward_backward.py --configs mid --iters 5

Both models hold the same weights and see the same batch (one image + 48 / 64 text tokens per sample, the reply half
supervised); stage-2 trainability (vision frozen, projector + LM train). Steps alternate between the two models so
machine load affects both alike. The loss of both is printed as a check that they compute the same thing.
Configs: tiny (the demo's sizes: CLIP-style 2x128 at 72 px / patch 24 -> 9 image tokens, Llama 4x128, vocab 1000,
batch 32) and mid (ViT 12x384 at 224 px / patch 16 -> 196 image
tokens, Llama 12x768, vocab 32k).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from vistune.model.config import ModelConfig, VisionConfig
from vistune.model.llava import VistuneModel, build_model


@dataclass(frozen=True)
class BenchConfig:
    name: str
    image_size: int
    patch_size: int
    vision_layers: int
    vision_hidden: int
    vision_heads: int
    lm_layers: int
    lm_hidden: int
    lm_heads: int
    vocab_size: int
    text_tokens: int
    batch_size: int
    lm_intermediate: int | None = None  # default: LLaMA's 8/3 x hidden, rounded down to a multiple of 64


CONFIGS = {
    # The demo's sizes: its LM (4 x 128, MLP 384, BPE vocabulary 1000), 9 image tokens from a 2 x 128 tower at
    # 72 px, batch 32, single-turn records of ~50 tokens.
    "tiny": BenchConfig("tiny", 72, 24, 2, 128, 4, 4, 128, 4, 1000, 48, 32, lm_intermediate=384),
    "mid": BenchConfig("mid", 224, 16, 12, 384, 6, 12, 768, 12, 32000, 64, 2),
}


def model_config(cfg: BenchConfig) -> ModelConfig:
    vision = {
        "model_type": "clip_vision_model",
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "hidden_size": cfg.vision_hidden,
        "intermediate_size": 4 * cfg.vision_hidden,
        "num_hidden_layers": cfg.vision_layers,
        "num_attention_heads": cfg.vision_heads,
    }
    text = {
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.lm_hidden,
        "intermediate_size": cfg.lm_intermediate or int(8 / 3 * cfg.lm_hidden) // 64 * 64,
        "num_hidden_layers": cfg.lm_layers,
        "num_attention_heads": cfg.lm_heads,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
    }
    # A real token id for the image positions, so transformers' model (which embeds input_ids first) can read them.
    return ModelConfig(
        vision=VisionConfig(hf_config=vision), text_config=text, image_token_id=cfg.vocab_size - 1
    )


def hf_twin(model: VistuneModel) -> torch.nn.Module:
    """transformers' LlavaForConditionalGeneration with our model's weights (strictly loaded)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from vistune.model.convert import hf_config_dict

    config = LlavaConfig(**hf_config_dict(model, model.image_token_id, "plain"))
    twin = LlavaForConditionalGeneration(config)
    renames = (  # ours -> transformers 5 in-memory names
        ("vision.model.", "model.vision_tower."),
        ("projector.0.", "model.multi_modal_projector.linear_1."),
        ("projector.2.", "model.multi_modal_projector.linear_2."),
        ("language_model.model.", "model.language_model."),
        ("language_model.lm_head.", "lm_head."),
    )
    state = {}
    for key, value in model.state_dict().items():
        src, dst = next((s, d) for s, d in renames if key.startswith(s))
        state[dst + key[len(src) :]] = value
    twin.load_state_dict(state, strict=True)
    twin.model.vision_tower.requires_grad_(False)
    return twin.train()


def make_batch(cfg: BenchConfig, model: VistuneModel, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = model.num_image_tokens
    text = torch.randint(4, cfg.vocab_size - 1, (cfg.batch_size, cfg.text_tokens), generator=g)
    image = torch.full((cfg.batch_size, t), model.image_token_id)
    prompt = cfg.text_tokens // 2
    ids = torch.cat([text[:, :1], image, text[:, 1:]], dim=1)  # [B, 1 + T + text-1]: image after BOS
    labels = ids.clone()
    labels[:, : 1 + t + prompt] = -100  # supervise the reply half only
    mask = torch.ones_like(ids)
    pixels = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, generator=g)
    return ids, mask, labels, pixels


def step_ours(model, batch) -> tuple[float, float]:
    ids, mask, labels, pixels = batch
    start = time.perf_counter()
    loss = model(ids, mask, labels, pixel_values=pixels).loss
    loss.backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed, float(loss.detach())


def step_hf(model, batch) -> tuple[float, float]:
    ids, mask, labels, pixels = batch
    start = time.perf_counter()
    loss = model(input_ids=ids, attention_mask=mask, labels=labels, pixel_values=pixels).loss
    loss.backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed, float(loss.detach())


def run(cfg: BenchConfig, iters: int, warmup: int) -> None:
    torch.manual_seed(0)
    ours = build_model(model_config(cfg))
    ours.set_trainable(vision=False, projector=True, language_model=True)
    ours.train()
    theirs = hf_twin(ours)
    batch = make_batch(cfg, ours)
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    seq = batch[0].shape[1]
    print(
        f"[{cfg.name}] {params:.1f}M params, batch {cfg.batch_size} x {seq} tokens ({ours.num_image_tokens} image)"
    )
    for _ in range(warmup):
        step_ours(ours, batch)
        step_hf(theirs, batch)
    times_ours, times_hf = [], []
    for _ in range(iters):  # alternate, so load on the machine hits both alike
        t, loss_ours = step_ours(ours, batch)
        times_ours.append(t)
        t, loss_hf = step_hf(theirs, batch)
        times_hf.append(t)
    sps_ours = cfg.batch_size / statistics.median(times_ours)
    sps_hf = cfg.batch_size / statistics.median(times_hf)
    print(f"[{cfg.name}] loss ours {loss_ours:.6f} vs transformers {loss_hf:.6f}")
    print(
        f"[{cfg.name}] forward+backward samples/s: vistune {sps_ours:.2f}, transformers Llava {sps_hf:.2f}, "
        f"ratio {sps_ours / sps_hf:.2f}x (median of {iters} steps after {warmup} warmup)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "mid"], choices=sorted(CONFIGS))
    parser.add_argument("--iters", type=int, default=None, help="measured steps (default: tiny 10, mid 3)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, fp32, {args.threads} threads, CPU")
    for name in args.configs:
        iters = args.iters or (10 if name == "tiny" else 3)
        run(CONFIGS[name], iters, args.warmup)


if __name__ == "__main__":
    main()
