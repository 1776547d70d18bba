"""LoRA through peft + merge-lora, and every kind of bad input: a clear message, nothing silently lost."""

from __future__ import annotations

import json

import pytest
import torch
from train_world import tiny_config

from vistune.errors import VistuneError
from vistune.train.config import load_train_config, train_config_from_dict
from vistune.train.trainer import train


def test_lora_trains_adapters_and_merge_gives_the_same_logits(tiny_world, tmp_path):
    from vistune.model.io import load_pretrained
    from vistune.train.components import build_components
    from vistune.train.lora import load_adapter
    from vistune.train.merge import merge_adapter

    model = {
        "trainable": {"vision": False, "projector": True, "language_model": False},
        "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    }
    cfg = tiny_config(tiny_world, tmp_path / "run", stage=2, train={"max_steps": 2})
    cfg["model"].update(model)
    cfg["train"]["seed"] = 3
    cfg["optim"]["lr"] = 1e-2  # make the adapters move visibly
    train(train_config_from_dict(cfg))
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()

    section = train_config_from_dict(cfg).model
    unmerged = build_components(section, template="vicuna_v1", seed=3).model
    load_adapter(unmerged, adapter)
    merged_dir = merge_adapter(adapter, tmp_path / "merged")
    merged = load_pretrained(merged_dir).model
    base = build_components(section, seed=3).model
    assert not any("lora_" in n for n, _ in merged.named_parameters())

    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    with torch.no_grad():
        a = unmerged.eval()(ids, torch.ones_like(ids)).logits
        b = merged.eval()(ids, torch.ones_like(ids)).logits
        c = base.eval()(ids, torch.ones_like(ids)).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)  # the adapter did change the model


def _write(path, records):
    path.write_text(json.dumps(records))
    return path


def _rec(i, image=None, answer="A red circle."):
    turns = [
        {"from": "human", "value": ("<image>\n" if image else "") + "Describe the image briefly."},
        {"from": "gpt", "value": answer},
    ]
    return {"id": f"r{i}", **({"image": image} if image else {}), "conversations": turns}


def test_missing_image_errors_or_is_skipped_and_named(tiny_world, tmp_path):
    records = [_rec(i, f"img_{i:03d}.png") for i in range(8)] + [_rec(99, "nope.png")]
    data = _write(tmp_path / "d.json", records)
    with pytest.raises(VistuneError, match="nope.png"):
        train(train_config_from_dict(tiny_config(tiny_world, tmp_path / "a", data={"train": str(data)})))
    result = train(
        train_config_from_dict(
            tiny_config(tiny_world, tmp_path / "b", data={"train": str(data), "on_bad_record": "skip"})
        )
    )
    assert result.summary["data"]["train"]["kept"] == 8
    bad = [json.loads(x) for x in (tmp_path / "b" / "bad_records.jsonl").read_text().splitlines()]
    assert [b["id"] for b in bad] == ["r99"] and "nope.png" in bad[0]["reason"]


def test_corrupt_image_found_while_training_is_skipped_and_counted(tiny_world, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(8):
        (folder / f"img_{i:03d}.png").write_bytes((tiny_world["images"] / f"img_{i:03d}.png").read_bytes())
    (folder / "broken.png").write_bytes(b"not a png at all")
    records = [_rec(i, f"img_{i:03d}.png") for i in range(7)] + [_rec(7, "broken.png")]
    data = _write(tmp_path / "d.json", records)
    base = {"train": str(data), "image_folder": str(folder)}
    with pytest.raises(VistuneError, match="broken.png"):
        train(train_config_from_dict(tiny_config(tiny_world, tmp_path / "a", data=base)))
    for cache in (False, True):  # found lazily in training, or up front while building the feature cache
        out = tmp_path / f"skip{cache}"
        data_cfg = {**base, "on_bad_record": "skip", "cache_vision_features": cache}
        result = train(train_config_from_dict(tiny_config(tiny_world, out, data=data_cfg)))
        assert result.summary["bad_records"] == 1
        bad = [json.loads(x) for x in (out / "bad_records.jsonl").read_text().splitlines()]
        assert bad[0]["id"] == "r7" and "broken.png" in bad[0]["reason"]


def test_all_masked_records_are_skipped_and_counted(tiny_world, tmp_path):
    long_question = "What color is the square? " * 40  # truncation at 128 tokens removes the whole answer
    records = [_rec(i, f"img_{i:03d}.png") for i in range(8)]
    records.append(
        {
            "id": "long",
            "conversations": [{"from": "human", "value": long_question}, {"from": "gpt", "value": "Red."}],
        }
    )
    data = _write(tmp_path / "d.json", records)
    # stage 2's template keeps the question (`plain`, stage 1's, drops it)
    cfg = tiny_config(tiny_world, tmp_path / "a", stage=2, data={"train": str(data), "model_max_length": 128})
    result = train(train_config_from_dict(cfg))
    report = result.summary["data"]["train"]
    assert report["all_masked"] == ["long"] and report["kept"] == 8


def test_unknown_config_key_is_an_error(tiny_world, tmp_path):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_world, tmp_path / "o")))
    with pytest.raises(VistuneError, match="learning_rate"):
        load_train_config(path, ["optim.learning_rate=1e-3"])
    with pytest.raises(VistuneError, match="global_batch_size"):
        train(load_train_config(path, ["train.global_batch_size=6"]))


def test_supervised_tokens_are_the_assistant_replies_only(tiny_world, tmp_path):
    from vistune.train.distributed import DistEnv
    from vistune.train.trainer import Trainer

    trainer = Trainer(train_config_from_dict(tiny_config(tiny_world, tmp_path, stage=2)), DistEnv())
    sample = trainer.dataset[0]
    tok = trainer.parts.tokenizer
    supervised = tok.decode(
        [t for t, lab in zip(sample.input_ids, sample.labels, strict=True) if lab != -100]
    )
    record = trainer.dataset.entries[0].record
    replies = [t["value"] for t in record.conversations if t["from"] == "gpt"]
    assert all(r in supervised for r in replies)
    assert "What color" not in supervised and "USER" not in supervised
    assert (sample.labels[sample.input_ids == -200] == -100).all()
