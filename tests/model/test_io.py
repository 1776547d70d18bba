"""Save / load: identical logits after a round trip, strict key checks that name the keys, projector-only files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vistune.errors import VistuneError
from vistune.model.io import (
    default_image_processor,
    detect_format,
    load_pretrained,
    load_projector,
    save_pretrained,
    save_projector,
)
from vistune.testing import build_tiny_model, image_row, pad_rows


def _inputs():
    ids, mask = pad_rows([image_row([1, 5], "img", [7, 8, 9]), image_row([1, 6, 7])], pad_id=3)
    return ids, mask, torch.randn(1, 3, 32, 32)


@pytest.mark.parametrize("tied", [False, True])
def test_save_load_round_trip_gives_identical_logits(tmp_path, tiny_tokenizer, tied):
    model = build_tiny_model(tiny_tokenizer, tie_word_embeddings=tied, template="vicuna_v1")
    save_pretrained(tmp_path, model, tiny_tokenizer, default_image_processor(model))
    loaded = load_pretrained(tmp_path)
    ids, mask, pixels = _inputs()
    assert torch.equal(
        model(ids, mask, pixel_values=pixels).logits, loaded.model(ids, mask, pixel_values=pixels).logits
    )
    assert loaded.template == "vicuna_v1" and loaded.source_format == "vistune"
    assert loaded.image_processor == default_image_processor(model)
    assert loaded.tokenizer.get_vocab() == tiny_tokenizer.get_vocab()
    lm = loaded.model.language_model
    assert (lm.lm_head.weight is lm.model.embed_tokens.weight) == tied


def test_config_json_carries_what_other_tools_read(tmp_path, tiny_model, tiny_tokenizer):
    save_pretrained(tmp_path, tiny_model, tiny_tokenizer, default_image_processor(tiny_model))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["format"] == "vistune"
    assert config["template"] == "plain"
    assert config["image_token_id"] == -200
    assert config["num_image_tokens"] == 16
    assert (
        config["vision"]["pretrained"] is None
        and config["vision"]["hf_config"]["model_type"] == "clip_vision_model"
    )
    assert {"model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }


def test_image_placement_is_saved_loaded_and_checked(tmp_path, tiny_model, tiny_tokenizer):
    save_pretrained(tmp_path, tiny_model, tiny_tokenizer, default_image_processor(tiny_model))
    assert load_pretrained(tmp_path).image_placement == "before"  # LLaVA's default, and older configs'
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "image_placement": "after"}))
    assert load_pretrained(tmp_path).image_placement == "after"
    (tmp_path / "config.json").write_text(json.dumps({**config, "image_placement": "middle"}))
    with pytest.raises(VistuneError, match="image_placement='middle'"):
        load_pretrained(tmp_path)


def _tamper(path, change):
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))


def test_strict_load_names_missing_unexpected_and_mismatched_keys(tmp_path, tiny_model, tiny_tokenizer):
    save_pretrained(tmp_path, tiny_model, tiny_tokenizer, default_image_processor(tiny_model))
    weights = tmp_path / "model.safetensors"

    def change(t):
        del t["projector.2.bias"]
        t["projector.9.weight"] = torch.zeros(2)
        t["language_model.model.norm.weight"] = torch.zeros(65)

    _tamper(weights, change)
    with pytest.raises(VistuneError) as info:
        load_pretrained(tmp_path)
    message = str(info.value)
    assert "missing keys (1): projector.2.bias" in message
    assert "unexpected keys (1): projector.9.weight" in message
    assert "language_model.model.norm.weight: file (65,) vs model (64,)" in message


def test_config_that_does_not_match_the_weights_is_an_error(tmp_path, tiny_model, tiny_tokenizer):
    save_pretrained(tmp_path, tiny_model, tiny_tokenizer, default_image_processor(tiny_model))
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["projector"] = "mlp3x_gelu"
    path.write_text(json.dumps(config))
    with pytest.raises(VistuneError, match=r"missing keys \(2\): projector.4.weight, projector.4.bias"):
        load_pretrained(tmp_path)


def test_unknown_config_key_is_an_error(tmp_path, tiny_model, tiny_tokenizer):
    save_pretrained(tmp_path, tiny_model, tiny_tokenizer, default_image_processor(tiny_model))
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["projektor"] = "linear"
    path.write_text(json.dumps(config))
    with pytest.raises(VistuneError, match="unknown key.*projektor"):
        load_pretrained(tmp_path)


def test_directory_that_is_neither_format_is_a_clear_error(tmp_path):
    with pytest.raises(VistuneError, match="does not exist"):
        detect_format(tmp_path / "nope")
    with pytest.raises(VistuneError, match="has no config.json"):
        detect_format(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(VistuneError, match="neither a vistune config.*found 'llama'"):
        load_pretrained(tmp_path)


def test_projector_only_round_trip_and_mismatch(tmp_path, tiny_tokenizer):
    trained = build_tiny_model(tiny_tokenizer, seed=1)
    save_projector(tmp_path, trained)
    assert json.loads((tmp_path / "projector.json").read_text())["projector"] == "mlp2x_gelu"
    fresh = build_tiny_model(tiny_tokenizer, seed=2)
    load_projector(tmp_path, fresh)
    for a, b in zip(trained.projector.parameters(), fresh.projector.parameters(), strict=True):
        assert torch.equal(a, b)
    linear = build_tiny_model(tiny_tokenizer, projector="linear")
    with pytest.raises(VistuneError, match="projector 'mlp2x_gelu' does not match the model's 'linear'"):
        load_projector(tmp_path, linear)
    with pytest.raises(VistuneError, match="projector.json does not exist"):
        load_projector(tmp_path / "empty", fresh)
