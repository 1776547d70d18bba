"""The exactness guarantees: resume == uninterrupted, feature cache == no cache, accumulation == one big batch."""

from __future__ import annotations

import json

import pytest
import torch
from train_world import tiny_config

from vistune.train.config import train_config_from_dict
from vistune.train.trainer import train


def _losses(out):
    return [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines() if "loss" in x]


def test_resume_after_stop_equals_uninterrupted_run(tiny_world, tmp_path):
    def cfg(out, **train_kw):
        c = tiny_config(tiny_world, out, stage=2, train={"max_steps": 4, "micro_batch_size": 8, **train_kw})
        c["model"]["config"]["text_config"]["attention_dropout"] = 0.1  # RNG must be restored too
        return train_config_from_dict(c)

    full = train(cfg(tmp_path / "full"))
    assert len(full.losses) == 4

    first = train(cfg(tmp_path / "split", stop_after_steps=2))
    assert first.stopped_early and first.steps == 2
    assert not (tmp_path / "split" / "projector.safetensors").exists()  # not finished yet
    second = train(cfg(tmp_path / "split"))  # same command again: resumes from the step-2 checkpoint
    assert second.steps == 4 and len(second.losses) == 2
    assert first.losses + second.losses == full.losses  # bit-identical on CPU
    assert _losses(tmp_path / "split") == full.losses  # metrics.jsonl tells one continuous story


def test_resume_refuses_a_changed_data_order(tiny_world, tmp_path):
    from vistune.errors import VistuneError

    train(train_config_from_dict(tiny_config(tiny_world, tmp_path, train={"stop_after_steps": 1})))
    changed = tiny_config(tiny_world, tmp_path, train={"seed": 1})
    with pytest.raises(VistuneError, match="train.seed"):
        train(train_config_from_dict(changed))


def test_feature_cache_gives_the_same_losses_and_is_reused(tiny_world, tmp_path):
    plain = train(train_config_from_dict(tiny_config(tiny_world, tmp_path / "plain")))
    cache_dir = tmp_path / "cache"
    data = {"cache_vision_features": True, "feature_cache_dir": str(cache_dir)}
    cached = train(train_config_from_dict(tiny_config(tiny_world, tmp_path / "cached", data=data)))
    assert cached.losses == pytest.approx(plain.losses, abs=1e-6)
    (root,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    shards = sorted(root.glob("shard_*.safetensors"))
    assert shards and len(json.loads((root / "index.json").read_text())) == 24
    mtimes = [s.stat().st_mtime_ns for s in shards]
    again = train(train_config_from_dict(tiny_config(tiny_world, tmp_path / "again", data=data)))
    assert again.losses == cached.losses
    assert [
        s.stat().st_mtime_ns for s in sorted(root.glob("shard_*.safetensors"))
    ] == mtimes  # nothing recomputed


def test_feature_cache_is_invalidated_by_tower_preprocessing_or_image_change(tiny_world, tmp_path):
    from transformers import AutoTokenizer

    from vistune.data.features import open_feature_cache
    from vistune.data.images import load_image
    from vistune.model.io import default_image_processor
    from vistune.testing import build_tiny_model

    tok = AutoTokenizer.from_pretrained(str(tiny_world["tokenizer"]))
    model = build_tiny_model(tok, seed=0)
    proc = default_image_processor(model)
    img = tmp_path / "a.png"
    img.write_bytes((tiny_world["images"] / "img_000.png").read_bytes())

    def open_(m, p):
        return open_feature_cache(
            [str(img)], model=m, image_processor=p, load_image=load_image, cache_dir=tmp_path / "c"
        )

    first = open_(model, proc)
    feats = first.get(str(img))
    with torch.no_grad():
        direct = model.vision_features(proc([load_image(img)]))[0]
    assert torch.allclose(feats, direct, atol=1e-6)
    assert open_(model, proc).root == first.root
    assert open_(build_tiny_model(tok, seed=1), proc).root != first.root  # other tower weights
    assert open_(model, proc.with_aspect("resize")).root != first.root  # other preprocessing
    img.write_bytes((tiny_world["images"] / "img_001.png").read_bytes())  # same name, new content
    edited = open_(model, proc)
    assert edited.root == first.root and len(edited.index) == 2
    assert not torch.equal(edited.get(str(img)), feats)


def test_gradient_accumulation_equals_one_big_batch(tiny_world, tmp_path):
    def run(out, micro):
        train_cfg = {"micro_batch_size": micro, "max_steps": 2}
        return train(train_config_from_dict(tiny_config(tiny_world, out, stage=2, train=train_cfg)))

    big, small = run(tmp_path / "a", 8), run(tmp_path / "b", 2)
    assert small.losses == pytest.approx(big.losses, abs=1e-5)
