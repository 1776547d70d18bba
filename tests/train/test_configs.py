"""Every shipped config loads strictly, and trains a step with tiny stand-ins for the weights we can't download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vistune.testing import tiny_text_config, tiny_vision_hf_config
from vistune.train.config import load_train_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    names = {p.stem for p in CONFIGS}
    for prefix in ("world", "llava_v1", "llava_v15", "smollm2"):
        assert {f"{prefix}_stage1", f"{prefix}_stage2"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_opens_with_its_command_and_loads(path):
    first = path.read_text().splitlines()[0]
    assert first == f"# vistune train --config configs/{path.name}"
    cfg = load_train_config(path)
    stage2 = "stage2" in path.stem
    # stage 2 trains the LM, fully or through LoRA adapters (then the base stays frozen)
    assert (
        cfg.model.trainable.language_model or cfg.model.lora.enabled
    ) == stage2 and cfg.model.trainable.projector
    assert not (cfg.model.trainable.language_model and cfg.model.lora.enabled)
    assert not cfg.model.trainable.vision
    assert (cfg.model.init_projector is not None) == stage2


PAPER = {  # (epochs, lr, global batch) of each paper's two stages
    "llava_v1_stage1": (1, 2e-3, 128),
    "llava_v1_stage2": (3, 2e-5, 32),
    "llava_v15_stage1": (1, 1e-3, 256),
    "llava_v15_stage2": (1, 2e-5, 128),
    "llava_v15_stage2_qlora": (1, 2e-4, 128),  # LLaVA-1.5's finetune_lora.sh
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_hyperparameters(name):
    cfg = load_train_config(Path(__file__).parents[2] / "configs" / f"{name}.yaml")
    assert (cfg.train.epochs, cfg.optim.lr, cfg.train.global_batch_size) == PAPER[name]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_trains_one_step_with_tiny_stand_ins(path, tiny_world, tmp_path):
    from transformers import AutoTokenizer

    from vistune.train.trainer import train

    tok = AutoTokenizer.from_pretrained(str(tiny_world["tokenizer"]))
    vision = {"kind": "hf", "hf_config": tiny_vision_hf_config(), "pretrained": None}
    text = tiny_text_config(vocab_size=len(tok))
    stage2 = "stage2" in path.stem
    if load_train_config(path).model.lora.bits is None:
        language_model = ["model.config.text_pretrained=null", f"model.config.text_config={json.dumps(text)}"]
    else:  # QLoRA quantizes a pretrained LM as it loads: a tiny one saved to disk stands in
        language_model = [
            f"model.config.text_pretrained={_saved_lm(text, tmp_path)}",
            "model.config.text_config=null",
        ]
    overrides = [
        "model.imports=[]",
        f"model.config.vision={json.dumps(vision)}",
        *language_model,
        f"model.tokenizer={tiny_world['tokenizer']}",
        "model.init_projector=null",
        "model.gradient_checkpointing=true",
        f"data.train={tiny_world['stage2' if stage2 else 'stage1']}",
        f"data.image_folder={tiny_world['images']}",
        "data.num_workers=0",
        f"data.feature_cache_dir={tmp_path / 'cache'}",
        f"train.output_dir={tmp_path / 'out'}",
        "train.max_steps=1",
        "train.global_batch_size=4",
        "train.micro_batch_size=2",
        "train.progress=false",
        "train.save_model=false",
    ]
    result = train(load_train_config(path, overrides))
    assert result.steps == 1 and result.losses[0] > 0


def test_qlora_config_is_llava_15s_lora_recipe_on_a_4bit_base():
    cfg = load_train_config(Path(__file__).parents[2] / "configs" / "llava_v15_stage2_qlora.yaml")
    lora = cfg.model.lora
    assert (lora.enabled, lora.bits, lora.quant_type, lora.r, lora.alpha) == (True, 4, "nf4", 128, 256)
    assert cfg.optim.projector_lr == 2e-5 and not cfg.model.trainable.language_model


def _saved_lm(text_config: dict, tmp_path: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    text = dict(text_config)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(text.pop("model_type"), **text))
    lm.save_pretrained(tmp_path / "lm")
    return tmp_path / "lm"
