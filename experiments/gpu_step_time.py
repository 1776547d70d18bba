"""Stage-2 step time of a SmolLM2-135M-shaped LM (random weights) on this machine's GPU: LoRA r=16 and full.

Sizes `vistune demo --preset real-small-gpu`'s stage 2 before SmolLM2 itself is at hand (the weights are the
same shape, so the time is the same). Prints ms per optimizer step for batch 32 at a few sequence lengths.

    python experiments/gpu_step_time.py
"""

from __future__ import annotations

import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SMOLLM2_135M = dict(  # SmolLM2-135M-Instruct's shape (its config.json)
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
)


def step_time(mode: str, batch: int, length: int, steps: int = 10) -> float:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).cuda()
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, SMOLLM2_135M["vocab_size"], (batch, length), device="cuda")
    embeds = model.get_input_embeddings()(ids).detach()  # the real model gets image tokens as embeddings too

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(inputs_embeds=embeds.requires_grad_(False), labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1000


def main() -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for mode in ("lora", "full"):
        for length in (128, 256, 512):
            print(
                f"{mode:5s} batch 32 x {length:3d} tokens: {step_time(mode, 32, length):6.1f} ms/step",
                flush=True,
            )


if __name__ == "__main__":
    main()
