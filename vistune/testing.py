"""Tiny, local, offline building blocks for tests, benchmarks and the miniature world.

Nothing here touches the network: tokenizers are trained on the spot with `tokenizers`.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]

# A ChatML chat template, so the `hf` conversation template can be exercised with a local tokenizer.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "A chat between a curious user and an artificial intelligence assistant.",
    "USER: ASSISTANT: Human: Assistant: ### [INST] [/INST] <<SYS>> <</SYS>> system user assistant",
    "You are a helpful language and vision assistant. Answer the questions.",
    "Describe the image briefly. What is in the picture? How many objects are there?",
    "There is a red circle in the top left and a blue square at the bottom right of the image.",
    "The green triangle is to the left of the yellow star. Yes. No. One two three four five six.",
    "A group of people are packing luggage into a black SUV in an underground parking garage.",
    "What color is the square? What shape is on the left? Is there a purple heart?",
    "0 1 2 3 4 5 6 7 8 9 . , ; : ! ? ' \" ( ) [ ] { } - + = / \\ < > @ # $ % ^ & * _ ~ `",
]


def make_tiny_tokenizer(
    out_dir: str | Path | None = None, *, vocab_size: int = 400, corpus: list[str] | None = None
) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer (BOS added, ChatML chat template) and optionally save it.

    Byte-level, so any text round-trips; BOS `<s>` is prepended like Llama's tokenizer, EOS is `</s>`.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Once, not repeated: repeating a corpus scales every pair count alike, so the merges are the same (checked: the
    # built-in corpus at 300-1,000 tokens, the demo's 61K documents, where training went from 16.7 to 4.8 s).
    tok.train_from_iterator(corpus or _CORPUS, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


# ---------------------------------------------------------------------------------------------------------------
# Tiny models (random weights): a CLIP-style vision tower and a Llama-style LM, small enough for CPU unit tests.


def tiny_vision_hf_config(
    *, image_size: int = 32, patch_size: int = 8, hidden_size: int = 32, num_layers: int = 2
) -> dict:
    """A CLIP vision config dict: 32 px / patch 8 -> 16 patch tokens (+ CLS)."""
    return {
        "model_type": "clip_vision_model",
        "image_size": image_size,
        "patch_size": patch_size,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "projection_dim": hidden_size,
    }


def tiny_text_config(
    *,
    vocab_size: int,
    hidden_size: int = 64,
    num_layers: int = 2,
    bos_token_id: int | None = 1,
    eos_token_id: int | None = 2,
    pad_token_id: int | None = 3,
    tie_word_embeddings: bool = False,
) -> dict:
    """A Llama config dict (2 layers, hidden 64, GQA 4/2 heads). Special ids default to make_tiny_tokenizer's."""
    return {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "tie_word_embeddings": tie_word_embeddings,
    }


def tiny_model_config(
    *,
    vocab_size: int,
    projector: str = "mlp2x_gelu",
    template: str = "plain",
    image_size: int = 32,
    patch_size: int = 8,
    select_feature: str = "patch",
    tie_word_embeddings: bool = False,
    text_overrides: dict | None = None,
):
    """A ModelConfig for unit tests: CLIP vision 2 layers (32 px, patch 8 -> 16 tokens), Llama 2 layers (hidden 64)."""
    from vistune.model.config import ModelConfig, VisionConfig

    text = tiny_text_config(vocab_size=vocab_size, tie_word_embeddings=tie_word_embeddings)
    text.update(text_overrides or {})
    vision = VisionConfig(
        kind="hf",
        hf_config=tiny_vision_hf_config(image_size=image_size, patch_size=patch_size),
        select_feature=select_feature,
    )
    return ModelConfig(vision=vision, text_config=text, projector=projector, template=template)


def build_tiny_model(tokenizer: PreTrainedTokenizerFast, *, seed: int = 0, **config_kwargs):
    """A random tiny VistuneModel whose vocabulary and special ids match `tokenizer` (fp32, eval mode)."""
    import torch

    from vistune.model.llava import build_model

    overrides = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **config_kwargs.pop("text_overrides", {}),
    }
    config = tiny_model_config(vocab_size=len(tokenizer), text_overrides=overrides, **config_kwargs)
    torch.manual_seed(seed)
    return build_model(config).eval()


def save_tiny_model(out_dir: str | Path, *, template: str = "vicuna_v1", seed: int = 0) -> Path:
    """A tiny random model + tokenizer + image processor saved as a real vistune model directory."""
    from vistune.model.io import default_image_processor, save_pretrained

    tokenizer = make_tiny_tokenizer()
    model = build_tiny_model(tokenizer, template=template, seed=seed)
    save_pretrained(out_dir, model, tokenizer, default_image_processor(model))
    return Path(out_dir)


def image_row(*parts, image_token_id: int = -200, tokens_per_image: int = 16) -> list[int]:
    """Concatenate token-id lists into one sequence; the string "img" stands for one image's token positions."""
    row: list[int] = []
    for part in parts:
        row += [image_token_id] * tokens_per_image if part == "img" else list(part)
    return row


def pad_rows(rows: list[list[int]], *, pad_id: int, left: bool = False):
    """Pad id rows to one length -> (input_ids [B, L], attention_mask [B, L]) LongTensors."""
    import torch

    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask
