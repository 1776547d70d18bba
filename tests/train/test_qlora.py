"""QLoRA on CPU: the language model loaded 4-bit (NF4) or 8-bit (LLM.int8) by bitsandbytes, LoRA adapters on top.

Real bitsandbytes layers (its CPU backend), a tiny Llama saved to disk and loaded through `text_pretrained`.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from train_world import tiny_config

from vistune.errors import VistuneError
from vistune.train.config import train_config_from_dict
from vistune.train.trainer import train

bnb = pytest.importorskip(
    "bitsandbytes", reason="QLoRA needs bitsandbytes (the `real` extra; make venv installs it)"
)

pytestmark = pytest.mark.filterwarnings("ignore:MatMul8bitLt")  # LLM.int8 casts fp32 inputs to fp16, per call

QUANT_LAYER = {4: "Linear4bit", 8: "Linear8bitLt"}
QUANT_DTYPE = {4: torch.uint8, 8: torch.int8}


@pytest.fixture(scope="module")
def tiny_lm(tiny_world, tmp_path_factory):
    """The tiny world's Llama, saved as a pretrained causal LM (QLoRA quantizes it as it loads)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    text = dict(tiny_config(tiny_world, tmp_path_factory.mktemp("x"))["model"]["config"]["text_config"])
    model_type = text.pop("model_type")
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **text))
    out = tmp_path_factory.mktemp("tiny_lm")
    lm.save_pretrained(out)
    return out


def qlora_config(world, lm_dir, out, *, bits=4, steps=4, **train_kw):
    cfg = tiny_config(world, out, stage=2, train={"max_steps": steps, **train_kw})
    cfg["model"]["config"].update(text_config=None, text_pretrained=str(lm_dir))
    cfg["model"]["trainable"] = {"vision": False, "projector": True, "language_model": False}
    cfg["model"]["lora"] = {
        "enabled": True,
        "r": 4,
        "alpha": 8,
        "dropout": 0.0,
        "target_modules": ["q_proj", "v_proj", "down_proj"],
        "bits": bits,
    }
    cfg["optim"]["lr"] = 1e-2  # make the adapters move visibly in a few steps
    return cfg


def _quantized(module):
    return [m for m in module.modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))]


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_trains_adapters_and_projector_on_a_frozen_quantized_base(tiny_world, tiny_lm, tmp_path, bits):
    from vistune.train.distributed import DistEnv
    from vistune.train.trainer import Trainer

    trainer = Trainer(
        train_config_from_dict(qlora_config(tiny_world, tiny_lm, tmp_path, bits=bits)), DistEnv()
    )
    model = trainer.model
    lm = model.language_model
    # every linear layer of the LM's blocks is quantized (adapted or not); the head and embeddings are not
    quantized = _quantized(lm)
    assert len(quantized) == 2 * 7 and {type(m).__name__ for m in quantized} == {QUANT_LAYER[bits]}
    q_proj = lm.model.layers[0].self_attn.q_proj
    assert (
        type(q_proj).__module__ == "peft.tuners.lora.bnb"
        and q_proj.base_layer.weight.dtype == QUANT_DTYPE[bits]
    )
    if bits == 4:
        state = q_proj.base_layer.weight.quant_state
        assert state.quant_type == "nf4" and state.nested  # NF4 with double quantization
        assert q_proj.base_layer.compute_dtype == torch.float32  # compute_dtype auto -> fp32 on CPU
    assert not any(
        type(m).__module__.startswith("bitsandbytes")
        for m in (*model.vision.modules(), *model.projector.modules())
    )
    assert all(p.dtype == torch.float32 for p in model.projector.parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("projector.") for n in trainable)
    assert any(n.startswith("projector.") for n in trainable)
    base_before = {n: p.detach().clone() for n, p in lm.named_parameters() if not p.requires_grad}

    batch = trainer.collator([trainer.dataset[i] for i in range(4)])
    with torch.no_grad():  # a validation pass first: it must not change how the quantized layers train
        model.eval()(**batch.model_inputs("cpu"))
    model.train()
    model(**batch.model_inputs("cpu")).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n or n.startswith("projector."))
    assert all(p.grad is None for p in lm.parameters() if not p.requires_grad)
    model.zero_grad(set_to_none=True)

    result = trainer.run()
    assert result.losses[-1] < result.losses[0] - 0.05, result.losses
    for name, param in lm.named_parameters():
        if name in base_before:  # quantized weights (and embeddings, norms, head) stayed bit-identical
            assert torch.equal(param.detach(), base_before[name]), name
    saved = json.loads((tmp_path / "adapter" / "base.json").read_text())
    assert saved["model"]["lora"]["bits"] == bits


def test_qlora_resume_equals_uninterrupted(tiny_world, tiny_lm, tmp_path):
    def cfg(out, **train_kw):
        c = qlora_config(tiny_world, tiny_lm, out, micro_batch_size=8, **train_kw)
        c["model"]["gradient_checkpointing"] = True  # QLoRA with activation checkpointing, too
        return train_config_from_dict(c)

    full = train(cfg(tmp_path / "full"))
    first = train(cfg(tmp_path / "split", stop_after_steps=2))
    assert first.stopped_early and first.steps == 2
    second = train(cfg(tmp_path / "split"))  # resumes from the step-2 checkpoint
    assert first.losses + second.losses == full.losses  # bit-identical on CPU, the quantized forward included


@pytest.mark.parametrize(("bits", "quantized_atol"), [(4, 1e-5), (8, 2e-2)])
def test_qlora_merge_gives_a_plain_model_equal_to_the_dequantized_base_plus_adapter(
    tiny_world, tiny_lm, tmp_path, bits, quantized_atol
):
    """Merging dequantizes, so the merged model is compared with the dequantized base + adapter (unmerged): equal up
    to float rounding (measured max |diff| 1.8e-7, logits ~0.6). It is not the quantized model + adapter bit for bit:
    there the difference is the quantized matmul's own error. 4-bit with fp32 compute dequantizes and multiplies
    (measured 1.8e-7); LLM.int8 also quantizes the activations (measured 3.0e-3), hence its looser bound."""
    from vistune.model.io import load_pretrained
    from vistune.train.components import build_components
    from vistune.train.lora import dequantize_language_model, load_adapter
    from vistune.train.merge import merge_adapter

    cfg = qlora_config(tiny_world, tiny_lm, tmp_path / "run", bits=bits, steps=3)
    train(train_config_from_dict(cfg))
    adapter = tmp_path / "run" / "adapter"
    merged = load_pretrained(merge_adapter(adapter, tmp_path / "merged")).model

    assert not _quantized(merged) and not any("lora_" in n for n, _ in merged.named_parameters())
    assert not any(type(m).__module__.startswith(("bitsandbytes", "peft")) for m in merged.modules())
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    assert (
        "quantization_config"
        not in json.loads((tmp_path / "merged" / "config.json").read_text())["text_config"]
    )

    section = train_config_from_dict(cfg).model
    quantized = build_components(section, template="vicuna_v1", seed=0).model
    load_adapter(quantized, adapter)
    dequantized = copy.deepcopy(quantized)
    assert (
        dequantize_language_model(dequantized.language_model) == 2 * 7
    )  # adapter kept, unmerged, on plain bases
    original = build_components(dataclass_replace_lora(section), seed=0).model  # fp32 base, no adapter

    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    with torch.no_grad():
        logits = {
            name: m.eval()(ids, torch.ones_like(ids)).logits
            for name, m in [("merged", merged), ("dequantized", dequantized), ("quantized", quantized)]
        }
        logits["original"] = original.eval()(ids, torch.ones_like(ids)).logits
    assert torch.allclose(logits["merged"], logits["dequantized"], atol=1e-5)
    assert torch.allclose(logits["merged"], logits["quantized"], atol=quantized_atol)
    assert not torch.allclose(
        logits["merged"], logits["original"], atol=1e-3
    )  # quantization + adapter moved it


def dataclass_replace_lora(section):
    """The same model section without LoRA or quantization (the fp32 base)."""
    import dataclasses

    return dataclasses.replace(section, lora=dataclasses.replace(section.lora, enabled=False, bits=None))


def test_qlora_config_errors_name_the_key_and_the_fix(tiny_world, tiny_lm, tmp_path):
    with pytest.raises(VistuneError, match="model.lora.bits=3"):
        train_config_from_dict(qlora_config(tiny_world, tiny_lm, tmp_path, bits=3))
    bad = qlora_config(tiny_world, tiny_lm, tmp_path)
    bad["model"]["lora"]["compute_dtype"] = "int4"
    with pytest.raises(VistuneError, match="model.lora.compute_dtype"):
        train_config_from_dict(bad)
    random_lm = tiny_config(tiny_world, tmp_path, stage=2)  # text_config only: nothing pretrained to quantize
    random_lm["model"]["trainable"]["language_model"] = False
    random_lm["model"]["lora"] = {"enabled": True, "r": 4, "target_modules": ["q_proj"], "bits": 4}
    with pytest.raises(VistuneError, match="text_pretrained"):
        train(train_config_from_dict(random_lm))
    full_ft = qlora_config(tiny_world, tiny_lm, tmp_path)
    full_ft["model"]["lora"]["enabled"] = False
    full_ft["model"]["trainable"]["language_model"] = True
    with pytest.raises(VistuneError, match="model.trainable.language_model=false"):
        train(train_config_from_dict(full_ft))
