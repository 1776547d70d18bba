"""The world language model: tokenizer on world text, packing, and pretraining that learns."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

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


def test_head_dim_widens_the_attention_beyond_the_model_width():
    import dataclasses

    tok = make_world_tokenizer(CORPUS, TINY)
    assert "head_dim" not in text_config(
        TINY, tok
    )  # default: hidden_size // num_heads, as transformers derives
    wide = dataclasses.replace(TINY, num_heads=4, head_dim=16)  # 4 x 16 = 64 against a width of 32
    model = build_language_model(wide, tok)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert (q_proj.in_features, q_proj.out_features) == (32, 64)
    assert model(input_ids=torch.tensor([[1, 5, 6]])).logits.shape == (1, 3, len(tok))


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


def _qa(image, question, answer, prefix="<image>\n"):
    turns = [{"from": "human", "value": prefix + question}, {"from": "gpt", "value": answer}]
    return {"id": f"closed-{image}-{question}", "image": image, "conversations": turns}


def _write_data(paths):
    """A demo run's instruction data, in miniature."""
    import json

    qa = _qa
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


def test_world_text_puts_each_images_questions_in_one_conversation(tmp_path):
    """The LM learns in-context lookup from one conversation per image (docs/demo.md, fourth round)."""
    from vistune.demo.pipeline import DemoPaths, world_text
    from vistune.demo.settings import DemoSettings

    paths = DemoPaths(tmp_path)
    _write_data(paths)
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


def test_induction_batch_repeats_a_random_run_and_labels_only_the_predictable_repeat():
    from vistune.demo.language import induction_batch

    vocab = torch.arange(100, 140)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        ids, labels = induction_batch(vocab, 4, 12, gen)
        scored = (labels != -100).nonzero()[:, 1].unique()
        first = int(scored.min())  # the repeat's second token
        run_len = int(ids.shape[1] - first + 1)  # ids = prefix + run + run
        prefix = ids.shape[1] - 2 * run_len
        assert 5 <= run_len <= 12 and 0 <= prefix <= 10
        assert torch.equal(ids[:, prefix : prefix + run_len], ids[:, prefix + run_len :])
        assert torch.equal(labels[:, first:], ids[:, first:])
        assert ((ids >= 100) & (ids < 140)).all()
    with pytest.raises(ValueError, match="induction_max_len is 4"):
        induction_batch(vocab, 4, 4, gen)
    lengths = set()
    for _ in range(20):  # a longer minimum run
        ids, labels = induction_batch(vocab, 2, 10, gen, min_len=9)
        lengths.add(int(ids.shape[1] - (labels != -100).nonzero()[:, 1].min() + 1))
    assert lengths == {9, 10}
    with pytest.raises(ValueError, match="runs are 9 tokens or longer"):
        induction_batch(vocab, 2, 8, gen, min_len=9)


def test_induction_pretraining_learns_to_copy_a_repeated_run():
    """A tiny LM learns in-context copying far above chance (1 / 16) on held-out runs (0.44 measured at 400 steps;
    nothing but the run's first copy can tell the next token)."""
    from vistune.demo.language import pretrain_induction

    tok = make_world_tokenizer(CORPUS, TINY)
    torch.manual_seed(0)
    model = build_language_model(
        LanguageModelOptions(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), tok
    )
    cfg = LanguagePretrainConfig(lr=3e-3, induction_steps=400, induction_max_len=8, induction_batch_size=16)
    result = pretrain_induction(model, torch.arange(10, 26), cfg)
    assert len(result.losses) == 400 and not model.training
    assert result.accuracy > 0.25, result.accuracy


def test_language_step_pretrains_on_the_text_then_on_copying_and_the_report_says_so(tmp_path):
    import dataclasses
    import json

    from vistune.demo.pipeline import DemoPaths, language_step
    from vistune.demo.report import _copying
    from vistune.demo.settings import DemoSettings, replace

    paths = DemoPaths(tmp_path)
    _write_data(paths)
    train = LanguagePretrainConfig(
        steps=3, batch_size=2, block_size=16, induction_steps=4, induction_batch_size=2
    )
    s = replace(DemoSettings(), language=TINY, language_train=train)
    assert len(language_step(paths, s)) == 3  # the text's loss curve
    copying = json.loads((paths.language_model / "induction.json").read_text())
    assert len(copying["losses"]) == 4 and 0.0 <= copying["accuracy"] <= 1.0
    assert _copying(paths.out) == (
        f", then on in-context copying (4 steps; held-out copy accuracy {copying['accuracy']:.1%})"
    )
    # The checkpoint before the copying is kept, and stage 1 aligns the projector to it (unless told otherwise).
    before = load_file(paths.text_language_model / "model.safetensors")
    after = load_file(paths.language_model / "model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert paths.stage1_language_model(s) == paths.text_language_model
    assert paths.stage1_language_model(replace(s, stage1_before_copying=False)) == paths.language_model
    # Trained again without copying (a rerun into the same directory): no stale record, the report names none,
    # and stage 1 aligns to the one checkpoint there is.
    s = replace(s, language_train=dataclasses.replace(train, induction_steps=0))
    language_step(paths, s)
    assert not (paths.language_model / "induction.json").exists() and _copying(paths.out) == ""
    assert not paths.text_language_model.exists() and paths.stage1_language_model(s) == paths.language_model
