"""llava-hf interop: parity with transformers' LlavaForConditionalGeneration, conversions both ways, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from vistune.errors import VistuneError
from vistune.model.io import default_image_processor, load_pretrained, save_pretrained
from vistune.testing import (
    build_tiny_model,
    image_row,
    make_tiny_tokenizer,
    pad_rows,
    tiny_text_config,
    tiny_vision_hf_config,
)

T = 16


def _hf_llava_dir(path, *, vision: dict, strategy: str = "default", tied: bool = False):
    """A tiny random checkpoint written by transformers itself (tokenizer with `<image>`, CLIP preprocessor)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from vistune.data.images import ImageProcessor

    tokenizer = make_tiny_tokenizer()
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    text = tiny_text_config(vocab_size=len(tokenizer), tie_word_embeddings=tied)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token,
        vision_feature_select_strategy=strategy,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    ImageProcessor(size=32, crop_size=32, aspect="crop").save(path)
    return model, image_token


def _batch(image_token: int, tokens_per_image: int = T):
    rows = [
        image_row(
            [1, 5], "img", [7, 8, 9, 10], image_token_id=image_token, tokens_per_image=tokens_per_image
        ),
        image_row(
            [1, 30], "img", [31], "img", [32], image_token_id=image_token, tokens_per_image=tokens_per_image
        ),
    ]
    ids, mask = pad_rows(rows, pad_id=3)
    torch.manual_seed(5)
    return ids, mask, torch.randn(3, 3, 32, 32)


@pytest.mark.parametrize("tied", [False, True])
def test_logits_and_greedy_tokens_match_transformers_llava(tmp_path, tied):
    hf_model, image_token = _hf_llava_dir(tmp_path, vision=tiny_vision_hf_config(), tied=tied)
    loaded = load_pretrained(tmp_path)
    assert loaded.source_format == "llava-hf" and loaded.model.image_token_id == image_token
    assert loaded.template == "hf"  # a plain llava-hf checkpoint uses its tokenizer's own chat template
    ids, mask, pixels = _batch(image_token)
    with torch.no_grad():
        theirs = hf_model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    ours = loaded.model(ids, mask, pixel_values=pixels).logits
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
    one_ids, one_mask = ids[:1, : int(mask[0].sum())], mask[:1, : int(mask[0].sum())]
    kwargs = {"max_new_tokens": 10, "do_sample": False, "eos_token_id": None}
    theirs_gen = hf_model.generate(
        input_ids=one_ids, attention_mask=one_mask, pixel_values=pixels[:1], **kwargs
    )
    ours_gen = loaded.model.generate(one_ids, one_mask, pixel_values=pixels[:1], **kwargs)
    assert torch.equal(ours_gen, theirs_gen[:, one_ids.shape[1] :])


def test_siglip_tower_without_cls_matches_transformers(tmp_path):
    vision = {
        "model_type": "siglip_vision_model",
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    hf_model, image_token = _hf_llava_dir(tmp_path, vision=vision, strategy="full")
    loaded = load_pretrained(tmp_path)
    assert loaded.model.num_image_tokens == 16 and not loaded.model.vision.has_cls
    ids, mask, pixels = _batch(image_token)
    with torch.no_grad():
        theirs = hf_model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert torch.allclose(loaded.model(ids, mask, pixel_values=pixels).logits, theirs, atol=1e-5, rtol=0)


def test_default_strategy_on_a_tower_without_cls_is_an_error(tmp_path):
    vision = {"model_type": "siglip_vision_model", "image_size": 32, "patch_size": 8, "hidden_size": 32}
    vision |= {"intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}
    _hf_llava_dir(tmp_path, vision=vision, strategy="default")
    with pytest.raises(VistuneError, match="no CLS token"):
        load_pretrained(tmp_path)


def test_round_trip_ours_to_hf_to_ours(tmp_path, tiny_tokenizer):
    from transformers import LlavaForConditionalGeneration

    from vistune.model.convert import convert_from_hf, convert_to_hf

    model = build_tiny_model(tiny_tokenizer, template="vicuna_v1")
    save_pretrained(
        tmp_path / "ours", model, tiny_tokenizer, default_image_processor(model).with_aspect("pad")
    )
    convert_to_hf(tmp_path / "ours", tmp_path / "hf")
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    image_token = hf_config["image_token_index"]
    assert image_token == len(tiny_tokenizer)  # `<image>` was added after the original vocabulary
    convert_from_hf(tmp_path / "hf", tmp_path / "back")
    back = load_pretrained(tmp_path / "back")
    assert back.template == "vicuna_v1" and back.image_processor.aspect == "pad"
    assert back.tokenizer.convert_tokens_to_ids("<image>") == image_token

    ids, mask, pixels = _batch(image_token)
    original = model(ids.masked_fill(ids == image_token, -200), mask, pixel_values=pixels).logits
    returned = back.model(ids, mask, pixel_values=pixels).logits
    vocab = original.shape[-1]
    assert torch.equal(returned[..., :vocab], original)  # the original vocabulary is untouched
    # transformers reads the exported directory and agrees.
    hf_model = LlavaForConditionalGeneration.from_pretrained(str(tmp_path / "hf")).eval()
    with torch.no_grad():
        theirs = hf_model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert torch.allclose(theirs, returned, atol=1e-5, rtol=0)


def test_to_hf_refuses_what_llava_hf_cannot_hold(tmp_path, tiny_tokenizer):
    from vistune.model.convert import convert_to_hf

    linear = build_tiny_model(tiny_tokenizer, projector="linear")
    save_pretrained(tmp_path / "linear", linear, tiny_tokenizer, default_image_processor(linear))
    with pytest.raises(VistuneError, match="projector 'linear' has no llava-hf equivalent"):
        convert_to_hf(tmp_path / "linear", tmp_path / "out")


def test_convert_cli_both_ways(tmp_path, tiny_model, tiny_tokenizer):
    from vistune.cli import app

    save_pretrained(tmp_path / "ours", tiny_model, tiny_tokenizer, default_image_processor(tiny_model))
    runner = CliRunner()
    result = runner.invoke(app, ["convert", "to-hf", str(tmp_path / "ours"), str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "llava"
    result = runner.invoke(app, ["convert", "from-hf", str(tmp_path / "hf"), str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "back" / "config.json").read_text())["format"] == "vistune"


def test_convert_cli_user_error_is_one_line_and_nonzero(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "vistune.cli", "convert", "from-hf", str(tmp_path), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "has no config.json" in proc.stderr and "Traceback" not in proc.stderr
