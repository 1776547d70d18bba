"""Templates render LLaVA's official prompt strings (llava/conversation.py), written out here by hand."""

from __future__ import annotations

import pytest

from vistune.errors import VistuneError
from vistune.text.templates import (
    TEMPLATES,
    build_prompt,
    get_template,
    render,
    to_messages,
    with_image_placeholders,
)

CONV = [
    {"from": "human", "value": "<image>\nWhat is in the picture?"},
    {"from": "gpt", "value": "A red circle."},
    {"from": "human", "value": "What color is the square?"},
    {"from": "gpt", "value": "Blue."},
]

V0_SYS = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
V1_SYS = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAMA2_SYS = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)

# name -> (full render, supervised substrings in order, generation prompt after the first user turn)
EXPECTED = {
    "plain": ("<image>A red circle.\nBlue.\n", ["A red circle.\n", "Blue.\n"], "<image>"),
    "v0": (
        f"{V0_SYS}###Human: <image>\nWhat is in the picture?###Assistant: A red circle.###"
        "Human: What color is the square?###Assistant: Blue.###",
        [" A red circle.###", " Blue.###"],
        f"{V0_SYS}###Human: <image>\nWhat is in the picture?###Assistant:",
    ),
    "vicuna_v1": (
        f"{V1_SYS} USER: <image>\nWhat is in the picture? ASSISTANT: A red circle.</s>"
        "USER: What color is the square? ASSISTANT: Blue.</s>",
        [" A red circle.</s>", " Blue.</s>"],
        f"{V1_SYS} USER: <image>\nWhat is in the picture? ASSISTANT:",
    ),
    "llama_2": (
        f"[INST] <<SYS>>\n{LLAMA2_SYS}\n<</SYS>>\n\n<image>\nWhat is in the picture? [/INST] A red circle. </s>"
        "<s>[INST] What color is the square? [/INST] Blue. </s>",
        [" A red circle. </s>", " Blue. </s>"],
        f"[INST] <<SYS>>\n{LLAMA2_SYS}\n<</SYS>>\n\n<image>\nWhat is in the picture? [/INST]",
    ),
    "chatml": (
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nWhat is in the picture?"
        "<|im_end|><|im_start|>assistant\nA red circle.<|im_end|><|im_start|>user\nWhat color is the square?"
        "<|im_end|><|im_start|>assistant\nBlue.<|im_end|>",
        ["A red circle.<|im_end|>", "Blue.<|im_end|>"],
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nWhat is in the picture?"
        "<|im_end|><|im_start|>assistant\n",
    ),
    # the tiny tokenizer's ChatML chat_template (vistune.testing.CHATML_TEMPLATE)
    "hf": (
        "<|im_start|>user\n<image>\nWhat is in the picture?<|im_end|>\n<|im_start|>assistant\nA red circle."
        "<|im_end|>\n<|im_start|>user\nWhat color is the square?<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n",
        ["A red circle.<|im_end|>\n", "Blue.<|im_end|>\n"],
        "<|im_start|>user\n<image>\nWhat is in the picture?<|im_end|>\n<|im_start|>assistant\n",
    ),
}


def test_every_template_has_an_expectation():
    assert set(EXPECTED) == set(TEMPLATES) == {"plain", "v0", "vicuna_v1", "llama_2", "chatml", "hf"}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_render_matches_llava_strings_and_spans(name, tiny_tokenizer):
    text, supervised, _ = EXPECTED[name]
    rendered = render(name, to_messages(CONV), tiny_tokenizer)
    assert rendered.text == text
    assert [rendered.text[a:b] for a, b in rendered.supervised] == supervised


@pytest.mark.parametrize("name", list(EXPECTED))
def test_build_prompt_ends_with_the_generation_prompt(name, tiny_tokenizer):
    assert build_prompt(CONV[:1], name, tiny_tokenizer) == EXPECTED[name][2]


def test_build_prompt_second_turn_keeps_history(tiny_tokenizer):
    prompt = build_prompt(CONV[:3], "vicuna_v1", tiny_tokenizer)
    assert prompt.endswith("ASSISTANT: A red circle.</s>USER: What color is the square? ASSISTANT:")


def test_build_prompt_accepts_chat_messages(tiny_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>\nHi?"}]
    assert build_prompt(messages, "chatml", tiny_tokenizer) == (
        "<|im_start|>system\nBe brief.<|im_end|><|im_start|>user\n<image>\nHi?<|im_end|><|im_start|>assistant\n"
    )


def test_build_prompt_needs_a_final_user_turn(tiny_tokenizer):
    with pytest.raises(VistuneError, match="end with a user turn"):
        build_prompt(CONV[:2], "v0", tiny_tokenizer)


def test_record_system_turn_overrides_the_default(tiny_tokenizer):
    conv = [{"from": "system", "value": "SYS"}, *CONV[:2]]
    assert render("v0", to_messages(conv), tiny_tokenizer).text.startswith("SYS###Human: <image>")
    assert render("llama_2", to_messages(conv), tiny_tokenizer).text.startswith(
        "[INST] <<SYS>>\nSYS\n<</SYS>>"
    )


def test_eos_and_bos_come_from_the_tokenizer(smollm2_tokenizer):
    # SmolLM2's EOS is <|im_end|>, so vicuna_v1's "</s>" becomes "<|im_end|>".
    rendered = render("vicuna_v1", to_messages(CONV[:2]), smollm2_tokenizer)
    assert rendered.text.endswith("ASSISTANT: A red circle.<|im_end|>")


def test_content_is_never_substituted(tiny_tokenizer):
    conv = [{"from": "human", "value": "say {eos} {system}"}, {"from": "gpt", "value": "{content}"}]
    assert render("vicuna_v1", to_messages(conv), tiny_tokenizer).text.endswith(
        "USER: say {eos} {system} ASSISTANT: {content}</s>"
    )


@pytest.mark.parametrize(
    ("name", "stops"),
    [
        ("plain", ["\n", "</s>"]),
        ("v0", ["###", "</s>"]),
        ("vicuna_v1", ["</s>"]),
        ("llama_2", ["</s>"]),
        ("chatml", ["<|im_end|>", "</s>"]),
        ("hf", ["<|im_end|>", "</s>"]),
    ],
)
def test_stop_strings(name, stops, tiny_tokenizer):
    assert get_template(name).stop_strings(tiny_tokenizer) == stops


def test_unknown_template_lists_the_valid_names():
    with pytest.raises(VistuneError, match="unknown conversation template 'vicuna'.*plain, v0, vicuna_v1"):
        get_template("vicuna")


def test_hf_without_chat_template_is_an_error(tiny_tokenizer):
    tiny_tokenizer.chat_template = None
    with pytest.raises(VistuneError, match="no.*chat_template|chat_template, but this tokenizer has none"):
        render("hf", to_messages(CONV), tiny_tokenizer)


def test_hf_template_that_is_not_prefix_consistent_is_an_error(tiny_tokenizer):
    # Renders only the last message: a longer conversation does not extend a shorter one.
    tiny_tokenizer.chat_template = "{{ messages[-1]['content'] }}{% if add_generation_prompt %}>{% endif %}"
    with pytest.raises(VistuneError, match="not prefix-consistent"):
        render("hf", to_messages(CONV), tiny_tokenizer)


@pytest.mark.parametrize(
    ("turns", "match"),
    [
        ([{"from": "gpt", "value": "x"}], "expected a human turn, got gpt"),
        ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], "turn 1: expected a gpt turn"),
        ([{"from": "robot", "value": "x"}], "unknown role 'robot'"),
        ([{"from": "human", "value": 3}], "'value' must be a string"),
        (
            [{"from": "human", "value": "a"}, {"from": "system", "value": "s"}],
            "system turn may only come first",
        ),
    ],
)
def test_to_messages_rejects_bad_turns(turns, match):
    with pytest.raises(VistuneError, match=match):
        to_messages(turns)


def test_with_image_placeholders_puts_images_first_like_llava():
    assert with_image_placeholders("  What is this? <image>") == "<image>\nWhat is this?"
    assert with_image_placeholders("Compare.", 2) == "<image>\n<image>\nCompare."
    assert with_image_placeholders("Just text.", 0) == "Just text."
    assert with_image_placeholders("  <image> What is this?", 1, "after") == "What is this?\n<image>"
    with pytest.raises(VistuneError, match="'middle'"):
        with_image_placeholders("What is this?", 1, "middle")
