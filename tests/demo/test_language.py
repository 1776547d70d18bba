"""The world language model: tokenizer on world text, packing, and pretraining that learns."""

from __future__ import annotations

import torch

from vistune.demo.language import (
    LanguageModelOptions,
    LanguagePretrainConfig,
    build_language_model,
    make_world_tokenizer,
    pack_blocks,
    pretrain_language_model,
    text_config,
)

CORPUS = [
    "A red star in the top left corner and a blue circle in the center.",
    "Three shapes on a plain white background: a green heart, a red star and a blue circle.",
    "How many shapes are there? Answer with a single word or phrase. three",
] * 5
TINY = LanguageModelOptions(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=400)


def test_tokenizer_round_trips_and_words_are_few_tokens(tmp_path):
    tok = make_world_tokenizer(CORPUS, TINY, tmp_path)
    text = "A red star in the top left corner."
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert len(ids) <= len(text.split()) + 3  # world words are (nearly) single tokens
    assert (tmp_path / "tokenizer.json").is_file()


def test_pack_blocks_cuts_documents_into_full_blocks():
    tok = make_world_tokenizer(CORPUS, TINY)
    blocks = pack_blocks(CORPUS, tok, 16)
    assert blocks.ndim == 2 and blocks.shape[1] == 16
    assert (blocks == tok.eos_token_id).any()  # documents are separated by EOS


def test_pretraining_lowers_the_loss():
    tok = make_world_tokenizer(CORPUS, TINY)
    cfg = text_config(TINY, tok)
    assert cfg["model_type"] == "llama" and cfg["vocab_size"] == len(tok)
    torch.manual_seed(0)
    model = build_language_model(TINY, tok)
    losses = pretrain_language_model(
        model, pack_blocks(CORPUS, tok, 16), LanguagePretrainConfig(steps=30, batch_size=8, lr=1e-2)
    )
    assert losses[-1] < 0.5 * losses[0]
    assert not model.training


def test_world_text_puts_each_images_questions_in_one_conversation(tmp_path):
    """The LM learns in-context lookup from one conversation per image (docs/demo.md, fourth round)."""
    import json

    from vistune.demo.pipeline import DemoPaths, world_text
    from vistune.demo.settings import DemoSettings

    def qa(image, question, answer, prefix="<image>\n"):
        turns = [{"from": "human", "value": prefix + question}, {"from": "gpt", "value": answer}]
        return {"id": f"closed-{image}-{question}", "image": image, "conversations": turns}

    paths = DemoPaths(tmp_path)
    paths.data.mkdir()
    captions = [qa("a.png", "Describe it.", "A red star."), qa("b.png", "Describe it.", "A blue circle.")]
    teacher = [qa("a.png", "What is in the image?", "There is a red star in the top left corner.")]
    closed = [
        qa("a.png", "Is there a red star?", "yes"),
        qa("b.png", "What shape is the blue object?", "circle"),
        qa("a.png", "What color is the star?", "red"),
    ]
    sentence = [qa("b.png", "What shape is the blue object?", "It is a blue circle.")]
    for name, records in (
        ("stage1", captions),
        ("instruct", teacher),
        ("closed", closed),
        ("sentence", sentence),
    ):
        (paths.data / f"{name}.json").write_text(json.dumps(records))
    docs = world_text(paths, DemoSettings())
    assert docs[:2] == ["A red star.", "A blue circle."]  # captions as plain text
    assert (
        len(docs) == 2 + 1 + 2 + 1
    )  # + the teacher conversation + one conversation per image and answer style
    assert "top left corner" in docs[2] and "<|im_start|>assistant" in docs[2]
    assert (
        "It is a blue circle." in docs[-1] and "circle<|im_end|>" not in docs[-1]
    )  # styles in separate documents
    image_a = next(d for d in docs[3:] if "red star?" in d)
    assert "What color is the star?" in image_a and "blue object" not in image_a
    assert image_a.count("<|im_start|>user") == 2 and not any("<image>" in d for d in docs)
