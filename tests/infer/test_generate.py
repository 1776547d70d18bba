from __future__ import annotations

import pytest
from PIL import Image

from vistune.errors import VistuneError
from vistune.infer.generate import (
    GenerationConfig,
    StopAwareStreamer,
    cut_at_stop,
    generate_batch,
    generate_reply,
)
from vistune.text.templates import get_template

QUESTION = [{"from": "human", "value": "<image>\nWhat is in the picture?"}]


def _reply(loaded, image_path, config, on_text=None, conversation=QUESTION):
    image = Image.open(image_path).convert("RGB")
    return generate_reply(
        loaded.model,
        loaded.tokenizer,
        loaded.image_processor,
        get_template(loaded.template),
        conversation,
        [image],
        config,
        on_text=on_text,
    )


def test_streamed_text_equals_answer(loaded, image_path):
    pieces: list[str] = []
    answer = _reply(loaded, image_path, GenerationConfig(max_new_tokens=24), on_text=pieces.append)
    assert len(pieces) > 1  # really streamed, not delivered at once
    assert "".join(pieces).strip() == answer


def test_greedy_is_deterministic_and_sampling_follows_the_seed(loaded, image_path):
    greedy = GenerationConfig(max_new_tokens=16)
    assert _reply(loaded, image_path, greedy) == _reply(loaded, image_path, greedy)
    hot = {"max_new_tokens": 16, "temperature": 1.5, "top_k": 50, "top_p": 0.95}
    first = _reply(loaded, image_path, GenerationConfig(**hot, seed=7))
    assert first == _reply(loaded, image_path, GenerationConfig(**hot, seed=7))
    assert first != _reply(loaded, image_path, GenerationConfig(**hot, seed=8))


def test_stop_string_is_cut_and_never_streamed(loaded, image_path):
    free = _reply(loaded, image_path, GenerationConfig(max_new_tokens=24))
    stop = free[len(free) // 2 : len(free) // 2 + 2]
    assert stop.strip(), "the random model's answer is too short to pick a stop string from"
    pieces: list[str] = []
    cut = _reply(loaded, image_path, GenerationConfig(max_new_tokens=24, stop=[stop]), on_text=pieces.append)
    assert stop not in cut and stop not in "".join(pieces)
    assert free.startswith(cut)


def test_batch_matches_one_by_one(loaded, image_path):
    image = Image.open(image_path).convert("RGB")
    template = get_template(loaded.template)
    conversations = [QUESTION, [{"from": "human", "value": "Count the shapes, please."}], QUESTION]
    images = [[image], [], [image.transpose(Image.FLIP_LEFT_RIGHT)]]
    config = GenerationConfig(max_new_tokens=12)
    batch = generate_batch(
        loaded.model, loaded.tokenizer, loaded.image_processor, template, conversations, images, config
    )
    single = [
        generate_reply(loaded.model, loaded.tokenizer, loaded.image_processor, template, c, i, config)
        for c, i in zip(conversations, images, strict=True)
    ]
    assert batch == single


def test_cut_at_stop_and_streamer_hold_back(tiny_tokenizer):
    assert cut_at_stop("abc###def", ["###"]) == ("abc", True)
    assert cut_at_stop("abc", ["###"]) == ("abc", False)
    shown: list[str] = []
    streamer = StopAwareStreamer(tiny_tokenizer, ["###"], shown.append)
    streamer.put(None)  # the prompt, skipped
    import torch

    for piece in ["red", " circle", "#", "#", "#", " more"]:
        streamer.put(torch.tensor(tiny_tokenizer.encode(piece, add_special_tokens=False)))
    streamer.end()
    assert "".join(shown) == "red circle"


@pytest.mark.parametrize(
    "kwargs", [{"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -2}]
)
def test_bad_generation_settings_are_user_errors(kwargs):
    with pytest.raises(VistuneError):
        GenerationConfig(**kwargs)
