"""The one labels function: masks cover exactly the assistant replies + end-of-turn markers, for every template and
for three kinds of tokenizer (tiny byte-level BPE with BOS, real SmolLM2 without BOS, Llama-style SentencePiece)."""

from __future__ import annotations

import pytest

from vistune.errors import AllMaskedError, VistuneError
from vistune.text.templates import TEMPLATES, build_prompt
from vistune.text.tokenize import (
    IGNORE_INDEX,
    adds_bos,
    encode_conversation,
    encode_prompt,
    tokenize_conversation,
    tokenize_records,
)

IMG = -200
CONV = [
    {"from": "human", "value": "<image>\nWhat is in the picture?"},
    {"from": "gpt", "value": "A red circle."},
    {"from": "human", "value": "What color is the square?"},
    {"from": "gpt", "value": "Blue."},
]

# Supervised text per template, by hand: each reply plus the end-of-turn marker the model must learn to emit.
# "{eos}" is the tokenizer's EOS string ("</s>" for tiny/llama, "<|im_end|>" for SmolLM2).
SUPERVISED = {
    "plain": ["A red circle.\nBlue.\n"],  # plain: consecutive replies with nothing between them form one run
    "v0": [" A red circle.###", " Blue.###"],
    "vicuna_v1": [" A red circle.{eos}", " Blue.{eos}"],
    "llama_2": [" A red circle. {eos}", " Blue. {eos}"],
    "chatml": ["A red circle.<|im_end|>", "Blue.<|im_end|>"],
    "hf": ["A red circle.<|im_end|>\n", "Blue.<|im_end|>\n"],
}
TOKENIZERS = ["tiny_tokenizer", "smollm2_tokenizer", "llama_tokenizer"]
# every (template, tokenizer) pair, except `hf` with the Llama-style tokenizer, which has no chat template
CASES = [(t, k) for t in SUPERVISED for k in TOKENIZERS if (t, k) != ("hf", "llama_tokenizer")]


def supervised_runs(input_ids: list[int], labels: list[int]) -> list[list[int]]:
    """Maximal runs of consecutive supervised tokens."""
    runs: list[list[int]] = []
    previous = False
    for token, label in zip(input_ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token, "a label must be the token itself (the model shifts)"
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = label != IGNORE_INDEX
    return runs


def decode_exact(tok, ids: list[int]) -> str:
    """Decode keeping a leading space (Llama's decoder strips one, so decode after an anchor token and cut it)."""
    anchor = tok("x", add_special_tokens=False)["input_ids"][-1:]
    return tok.decode(anchor + ids)[len(tok.decode(anchor)) :]


@pytest.mark.parametrize(("template", "tok_name"), CASES)
def test_supervised_tokens_are_exactly_replies_and_end_markers(template, tok_name, request):
    tok = request.getfixturevalue(tok_name)
    out = tokenize_conversation(CONV, tok, template, num_image_tokens=3, image_token_id=IMG)
    expected = [s.replace("{eos}", tok.eos_token) for s in SUPERVISED[template]]
    if template == "plain" and tok_name == "llama_tokenizer":
        # Text right after an <image> is tokenized as its own chunk, so a Llama tokenizer gives it its "▁" prefix,
        # exactly as LLaVA's tokenizer_image_token does: the caption's first token is "▁A".
        expected = [" " + s for s in expected]
    assert [decode_exact(tok, run) for run in supervised_runs(out.input_ids, out.labels)] == expected
    assert out.input_ids.count(IMG) == 3 and out.num_images == 1 and not out.truncated
    assert all(
        label == IGNORE_INDEX for token, label in zip(out.input_ids, out.labels, strict=True) if token == IMG
    )


@pytest.mark.parametrize(("template", "tok_name"), CASES)
def test_inference_prompt_is_a_prefix_of_training_tokens(template, tok_name, request):
    """Train/inference consistency at the supervised boundary (where leading-space bugs live): the tokens of the
    generation prompt are exactly the training tokens before the reply, and the first reply token is supervised."""
    tok = request.getfixturevalue(tok_name)
    full = tokenize_conversation(CONV, tok, template, num_image_tokens=2, image_token_id=IMG)
    for turns in (1,) if template == "plain" else (1, 3):  # plain is single-turn (stage-1 captions)
        prompt = encode_prompt(
            build_prompt(CONV[:turns], template, tok), tok, num_image_tokens=2, image_token_id=IMG
        )
        assert full.input_ids[: len(prompt)] == prompt
        assert full.labels[len(prompt)] != IGNORE_INDEX, "the first token after the prompt must be trained on"
        assert full.labels[len(prompt) - 1] == IGNORE_INDEX, "the prompt's last token must not be trained on"


def test_plain_labels_by_hand(tiny_tokenizer):
    out = tokenize_conversation(
        [{"from": "human", "value": "Describe <image> briefly."}, {"from": "gpt", "value": "Blue."}],
        tiny_tokenizer,
        "plain",
        num_image_tokens=2,
        image_token_id=IMG,
    )
    caption = tiny_tokenizer("Blue.\n", add_special_tokens=False)["input_ids"]
    bos = tiny_tokenizer.bos_token_id
    assert out.input_ids == [bos, IMG, IMG, *caption]
    assert out.labels == [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, *caption]


def test_v0_labels_by_hand(tiny_tokenizer):
    tok = tiny_tokenizer
    conv = [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]
    out = tokenize_conversation(conv, tok, "v0", num_image_tokens=1)
    prompt = tok("S###Human: Q###Assistant:")["input_ids"]  # BOS included: the tiny tokenizer adds it
    reply = tok(" A###", add_special_tokens=False)["input_ids"]
    assert out.input_ids == prompt + reply
    assert out.labels == [IGNORE_INDEX] * len(prompt) + reply


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_bos_only_when_the_tokenizer_adds_it(tok_name, request):
    tok = request.getfixturevalue(tok_name)
    expected = tok_name != "smollm2_tokenizer"  # Llama-style and tiny add BOS; SmolLM2 (GPT-2 style) does not
    assert adds_bos(tok) is expected
    ids = encode_prompt("<image>\nHi", tok, num_image_tokens=2)
    assert (ids[0] == tok.bos_token_id) is expected
    assert ids.count(tok.bos_token_id) == int(expected)


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_text_only_tokens_equal_the_tokenizers_own(tok_name, request):
    tok = request.getfixturevalue(tok_name)
    enc = encode_conversation(CONV[2:], tok, "vicuna_v1", num_image_tokens=4)
    assert enc.input_ids == tok(enc.text)["input_ids"]
    assert enc.image_regions == []


def test_no_double_bos_when_the_text_starts_with_it(tiny_tokenizer):
    ids = encode_prompt("<s>[INST] hi [/INST]", tiny_tokenizer, num_image_tokens=1)
    assert ids.count(tiny_tokenizer.bos_token_id) == 1


@pytest.mark.parametrize(
    "question",
    ["<image>\nWhat is in the picture?", "What is in the picture?\n<image>", "What is <image> there?"],
)
def test_image_stays_where_the_record_puts_it(question, tiny_tokenizer):
    conv = [{"from": "human", "value": question}, {"from": "gpt", "value": "A red circle."}]
    enc = encode_conversation(conv, tiny_tokenizer, "vicuna_v1", num_image_tokens=5, image_token_id=IMG)
    (a, b) = enc.image_regions[0]
    assert enc.input_ids[a:b] == [IMG] * 5 and enc.input_ids.count(IMG) == 5
    before = tiny_tokenizer.decode([t for t in enc.input_ids[:a]], skip_special_tokens=True)
    assert before.endswith("USER: " + question.split("<image>")[0])


def test_multi_image_record(tiny_tokenizer):
    conv = [
        {"from": "human", "value": "<image> and <image>: which is red?"},
        {"from": "gpt", "value": "The first."},
    ]
    out = tokenize_conversation(conv, tiny_tokenizer, "chatml", num_image_tokens=3, image_token_id=IMG)
    enc = encode_conversation(conv, tiny_tokenizer, "chatml", num_image_tokens=3, image_token_id=IMG)
    assert out.num_images == 2 and out.input_ids.count(IMG) == 6
    (a1, b1), (a2, b2) = enc.image_regions
    assert b1 - a1 == b2 - a2 == 3 and b1 < a2
    assert [decode_exact(tiny_tokenizer, r) for r in supervised_runs(out.input_ids, out.labels)] == [
        "The first.<|im_end|>"
    ]


def test_text_only_record(tiny_tokenizer):
    conv = [{"from": "human", "value": "How many?"}, {"from": "gpt", "value": "Two."}]
    out = tokenize_conversation(conv, tiny_tokenizer, "v0", num_image_tokens=576)
    assert out.num_images == 0 and IMG not in out.input_ids
    assert [decode_exact(tiny_tokenizer, r) for r in supervised_runs(out.input_ids, out.labels)] == [
        " Two.###"
    ]


def test_truncation_never_cuts_an_image_in_half(tiny_tokenizer):
    conv = [
        {"from": "human", "value": "<image>\nfirst"},
        {"from": "gpt", "value": "Yes."},
        {"from": "human", "value": "<image>\nsecond"},
        {"from": "gpt", "value": "No."},
    ]
    enc = encode_conversation(conv, tiny_tokenizer, "vicuna_v1", num_image_tokens=8, image_token_id=IMG)
    (_, _), (a2, b2) = enc.image_regions
    out = tokenize_conversation(
        conv, tiny_tokenizer, "vicuna_v1", num_image_tokens=8, image_token_id=IMG, max_length=a2 + 3
    )
    assert out.truncated and out.num_images == 1
    assert out.input_ids == enc.input_ids[:a2]  # cut before the second image, not inside it
    assert out.input_ids.count(IMG) == 8
    # a cut exactly after an image keeps it whole
    exact = tokenize_conversation(conv, tiny_tokenizer, "vicuna_v1", num_image_tokens=8, max_length=b2)
    assert exact.num_images == 2 and exact.input_ids == enc.input_ids[:b2]


def test_no_truncation_when_it_fits(tiny_tokenizer):
    out = tokenize_conversation(CONV, tiny_tokenizer, "v0", num_image_tokens=2, max_length=10_000)
    assert not out.truncated and out.num_images == 1


def test_truncation_that_removes_every_reply_raises_all_masked(tiny_tokenizer):
    with pytest.raises(AllMaskedError, match="record r7: all labels are masked.*max_length=12"):
        tokenize_conversation(CONV, tiny_tokenizer, "v0", num_image_tokens=2, max_length=12, record_id="r7")


def test_no_gpt_turn_raises_all_masked(tiny_tokenizer):
    with pytest.raises(AllMaskedError, match="record q1: has no gpt turn"):
        tokenize_conversation(CONV[:1], tiny_tokenizer, "v0", num_image_tokens=2, record_id="q1")


def test_unknown_template(tiny_tokenizer):
    with pytest.raises(VistuneError, match="unknown conversation template 'llava'"):
        tokenize_conversation(CONV, tiny_tokenizer, "llava", num_image_tokens=2)


class _Rec:
    def __init__(self, id: str, conversations: list[dict[str, str]]):
        self.id, self.conversations = id, conversations


def test_tokenize_records_skips_and_counts(tiny_tokenizer):
    long_question = [
        {"from": "human", "value": "What color is the square? " * 20},
        {"from": "gpt", "value": "Blue."},
    ]
    records = [_Rec("ok", CONV), _Rec("long", long_question), _Rec("short", CONV[2:])]
    report = tokenize_records(records, tiny_tokenizer, "v0", num_image_tokens=2, max_length=90)
    assert [r.id for r, _ in report.items] == ["ok", "short"]
    assert report.skipped == 1 and report.skipped_ids == ["long"]
    assert report.truncated == 1  # "ok" is cut too, but keeps its first reply
    with pytest.raises(AllMaskedError, match="record long"):
        tokenize_records(
            records, tiny_tokenizer, "v0", num_image_tokens=2, max_length=90, on_all_masked="raise"
        )


def test_slow_tokenizer_is_a_clear_error(tiny_tokenizer):
    class Slow:
        is_fast = False

    with pytest.raises(VistuneError, match="fast tokenizer"):
        encode_prompt("hi", Slow(), num_image_tokens=1)


def test_all_templates_covered():
    assert set(SUPERVISED) == set(TEMPLATES)
