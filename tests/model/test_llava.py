"""VistuneModel invariants: splicing, supervised-only loss, generation (KV cache, batching), trainability."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vistune.errors import VistuneError
from vistune.testing import image_row, pad_rows

T = 16  # tokens per image of the tiny model


def _mixed_batch(pad_id: int):
    """Text-only, image-first, image-after-text and two-image rows in one right-padded batch (4 images)."""
    rows = [
        image_row([1, 10, 11, 12, 13]),  # text only
        image_row([1], "img", [20, 21, 22, 23, 24, 25]),  # image before the question
        image_row([1, 30, 31, 32], "img", [33, 34]),  # image after the question
        image_row([1, 40], "img", [41], "img", [42, 43, 44]),  # two images
    ]
    ids, mask = pad_rows(rows, pad_id=pad_id)
    labels = ids.clone()
    labels[(ids == -200) | (mask == 0)] = -100
    labels[:, :2] = -100  # a prompt prefix is never supervised
    torch.manual_seed(1)
    pixels = torch.randn(4, 3, 32, 32)
    return ids, mask, labels, pixels


def test_splice_places_images_in_order_of_appearance(tiny_model, tiny_tokenizer):
    ids, _, _, pixels = _mixed_batch(tiny_tokenizer.pad_token_id)
    embeds = tiny_model.embed(ids, pixel_values=pixels)
    visual = tiny_model.encode_images(pixel_values=pixels)  # [4, T, D]
    # Row-major over the batch: row 1 holds image 0, row 2 image 1, row 3 images 2 and 3.
    assert torch.equal(embeds[1, 1 : 1 + T], visual[0])
    assert torch.equal(embeds[2, 4 : 4 + T], visual[1])
    assert torch.equal(embeds[3, 2 : 2 + T], visual[2])
    assert torch.equal(embeds[3, 3 + T : 3 + 2 * T], visual[3])
    # Text positions are plain token embeddings.
    table = tiny_model.language_model.get_input_embeddings().weight
    assert torch.equal(embeds[0, :5], table[ids[0, :5]])


def test_supervised_only_loss_equals_full_logits_loss(tiny_model, tiny_tokenizer):
    ids, mask, labels, pixels = _mixed_batch(tiny_tokenizer.pad_token_id)
    out = tiny_model(ids, mask, labels, pixel_values=pixels, return_logits=True)
    logits = out.logits[:, :-1].float()
    reference = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert torch.allclose(out.loss, reference, atol=1e-6)
    assert int(out.num_supervised_tokens) == int((labels[:, 1:] != -100).sum())
    # Training calls never materialize [B, L, V] logits.
    assert tiny_model(ids, mask, labels, pixel_values=pixels).logits is None


def test_supervised_loss_gradients_match_full_logits_path(tiny_model, tiny_tokenizer):
    ids, mask, labels, pixels = _mixed_batch(tiny_tokenizer.pad_token_id)
    tiny_model.set_trainable(vision=False, projector=True, language_model=True)
    tiny_model(ids, mask, labels, pixel_values=pixels).loss.backward()
    fast = [p.grad.clone() for p in tiny_model.projector.parameters()]
    tiny_model.zero_grad()
    logits = tiny_model(ids, mask, pixel_values=pixels).logits[:, :-1]
    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)).backward()
    for a, p in zip(fast, tiny_model.projector.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_vision_features_path_equals_pixel_path(tiny_model, tiny_tokenizer):
    ids, mask, labels, pixels = _mixed_batch(tiny_tokenizer.pad_token_id)
    features = tiny_model.vision_features(pixels)
    assert features.shape == (4, T, tiny_model.vision.hidden_size)
    a = tiny_model(ids, mask, labels, pixel_values=pixels).loss
    b = tiny_model(ids, mask, labels, vision_features=features).loss
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("rows", "num_images", "expected"),
    [
        ([["img", [5, 6]]], 2, "2 image(s) were given but the text has 1 <image> placeholder(s)"),
        ([["img", [5], "img"]], 1, "1 image(s) were given but the text has 2 <image> placeholder(s)"),
        ([[[5, 6, 7]]], 1, "1 image(s) were given but the text has 0 <image> placeholder(s)"),
        ([["img", [5]]], 0, "0 image(s) were given but the text has 1 <image> placeholder(s)"),
    ],
)
def test_image_placeholder_mismatch_says_how_many_of_each(tiny_model, rows, num_images, expected):
    ids, mask = pad_rows([image_row(*r) for r in rows], pad_id=3)
    pixels = torch.randn(num_images, 3, 32, 32) if num_images else None
    with pytest.raises(VistuneError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        tiny_model(ids, mask, pixel_values=pixels)


def test_partial_image_span_is_reported(tiny_model):
    ids = torch.tensor([[1] + [-200] * (T - 3) + [5]])
    with pytest.raises(VistuneError, match=r"0\.8125 <image> placeholder"):
        tiny_model(ids, pixel_values=torch.randn(1, 3, 32, 32))


def _prompt_rows():
    return [
        image_row([1, 50], "img", [51, 52, 53]),
        image_row([1, 60, 61, 62, 63, 64, 65], "img", [66]),
        image_row([1, 70, 71]),
    ]


def test_generation_with_kv_cache_equals_without(tiny_model, tiny_tokenizer):
    ids, mask = pad_rows(_prompt_rows()[:1], pad_id=tiny_tokenizer.pad_token_id)
    pixels = torch.randn(1, 3, 32, 32)
    kwargs = {"max_new_tokens": 12, "do_sample": False, "eos_token_id": None}
    cached = tiny_model.generate(ids, mask, pixel_values=pixels, use_cache=True, **kwargs)
    uncached = tiny_model.generate(ids, mask, pixel_values=pixels, use_cache=False, **kwargs)
    assert cached.shape == (1, 12)
    assert torch.equal(cached, uncached)


def test_batched_left_padded_generation_equals_one_by_one(tiny_model, tiny_tokenizer):
    rows = _prompt_rows()
    pixels = torch.randn(2, 3, 32, 32)
    kwargs = {"max_new_tokens": 10, "do_sample": False, "eos_token_id": None}
    ids, mask = pad_rows(rows, pad_id=tiny_tokenizer.pad_token_id, left=True)
    batched = tiny_model.generate(ids, mask, pixel_values=pixels, **kwargs)
    singles = []
    for i, row in enumerate(rows):
        one_ids, one_mask = pad_rows([row], pad_id=tiny_tokenizer.pad_token_id)
        one_pixels = pixels[i : i + 1] if i < 2 else None
        singles.append(tiny_model.generate(one_ids, one_mask, pixel_values=one_pixels, **kwargs))
    assert torch.equal(batched, torch.cat(singles))


def test_generation_stops_at_eos_and_samples_reproducibly(tiny_model, tiny_tokenizer):
    ids, mask = pad_rows(_prompt_rows()[:1], pad_id=tiny_tokenizer.pad_token_id)
    pixels = torch.randn(1, 3, 32, 32)
    greedy = tiny_model.generate(ids, mask, pixel_values=pixels, max_new_tokens=6, do_sample=False)
    stop_at = int(greedy[0, 2])  # pretend the third greedy token is EOS
    stopped = tiny_model.generate(ids, mask, pixel_values=pixels, max_new_tokens=6, eos_token_id=stop_at)
    assert stopped[0].tolist() == greedy[0, :3].tolist()
    sample = {"do_sample": True, "temperature": 0.8, "top_p": 0.9, "top_k": 20, "max_new_tokens": 8}
    torch.manual_seed(3)
    first = tiny_model.generate(ids, mask, pixel_values=pixels, **sample)
    torch.manual_seed(3)
    assert torch.equal(first, tiny_model.generate(ids, mask, pixel_values=pixels, **sample))


def test_set_trainable_is_the_one_switch(tiny_model, tiny_tokenizer):
    model = tiny_model
    model.set_trainable(vision=False, projector=True, language_model=False)  # stage 1
    model.train()
    assert not any(p.requires_grad for p in model.vision.parameters())
    assert all(p.requires_grad for p in model.projector.parameters())
    assert not any(p.requires_grad for p in model.language_model.parameters())
    # Frozen parts stay in eval mode even after model.train().
    assert model.projector.training and not model.vision.training and not model.language_model.training
    ids, mask, labels, pixels = _mixed_batch(tiny_tokenizer.pad_token_id)
    model(ids, mask, labels, pixel_values=pixels).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())
    assert all(p.grad is None for p in model.language_model.parameters())
    model.set_trainable(vision=False, projector=True, language_model=True)  # stage 2
    assert model.language_model.training
    assert all(p.requires_grad for p in model.language_model.parameters())


def test_gradient_checkpointing_keeps_loss_and_grads(tiny_model, tiny_tokenizer):
    ids, mask, labels, pixels = _mixed_batch(tiny_tokenizer.pad_token_id)
    tiny_model.train()
    loss = tiny_model(ids, mask, labels, pixel_values=pixels).loss
    loss.backward()
    grads = [p.grad.clone() for p in tiny_model.projector.parameters()]
    tiny_model.zero_grad()
    tiny_model.gradient_checkpointing_enable()
    loss_ckpt = tiny_model(ids, mask, labels, pixel_values=pixels).loss
    loss_ckpt.backward()
    assert torch.allclose(loss, loss_ckpt, atol=1e-6)
    for g, p in zip(grads, tiny_model.projector.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-6)


def test_gradient_checkpointing_with_a_frozen_lm_trains_the_projector(tiny_model, tiny_tokenizer):
    """Stage 1 with checkpointing: the LM is frozen, so the embedding output is a leaf the splice writes into."""
    ids, mask, labels, pixels = _mixed_batch(tiny_tokenizer.pad_token_id)
    tiny_model.set_trainable(vision=False, projector=True, language_model=False)
    tiny_model.train()
    tiny_model(ids, mask, labels, pixel_values=pixels).loss.backward()
    grads = [p.grad.clone() for p in tiny_model.projector.parameters()]
    tiny_model.zero_grad()
    tiny_model.gradient_checkpointing_enable()
    tiny_model.language_model.train()  # HF checkpoints only in train mode
    tiny_model(ids, mask, labels, pixel_values=pixels).loss.backward()
    for g, p in zip(grads, tiny_model.projector.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-6)


def test_lm_with_logit_softcapping_uses_its_own_loss(tiny_tokenizer):
    """Gemma-2 caps logits in its head: the supervised-only shortcut must not bypass that."""
    from vistune.testing import build_tiny_model

    text = {
        "model_type": "gemma2",
        "head_dim": 16,
        "final_logit_softcapping": 5.0,
        "attn_logit_softcapping": None,
        "sliding_window": 64,
        "query_pre_attn_scalar": 16,
    }
    model = build_tiny_model(tiny_tokenizer, text_overrides=text)
    assert not model._head_is_plain_linear()
    ids, mask, labels, pixels = _mixed_batch(tiny_tokenizer.pad_token_id)
    out = model(ids, mask, labels, pixel_values=pixels, return_logits=True)
    logits = out.logits[:, :-1].float()
    assert logits.abs().max() <= 5.0 + 1e-4  # capped
    reference = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
    assert torch.allclose(out.loss, reference, atol=1e-5)


def test_frozen_lm_with_lora_adapters_still_trains_them(tiny_model, tiny_tokenizer):
    """A part counts as frozen only if none of its parameters train: injected LoRA keeps the LM in train mode."""
    from peft import LoraConfig, inject_adapter_in_model

    tiny_model.set_trainable(vision=False, projector=True, language_model=False)
    inject_adapter_in_model(
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.1), tiny_model.language_model
    )
    tiny_model.train()
    assert tiny_model.language_model.training and not tiny_model.vision.training
    ids, mask, labels, pixels = _mixed_batch(tiny_tokenizer.pad_token_id)
    tiny_model(ids, mask, labels, pixel_values=pixels).loss.backward()
    lora = [p for n, p in tiny_model.language_model.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None for p in lora)
    assert tiny_model.language_model.model.embed_tokens.weight.grad is None


def test_build_from_pretrained_parts_gives_a_self_contained_config(tmp_path, tiny_tokenizer):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from vistune.model.config import ModelConfig, VisionConfig
    from vistune.model.llava import build_model
    from vistune.testing import tiny_text_config, tiny_vision_hf_config

    vision = dict(tiny_vision_hf_config())
    AutoModel.from_config(AutoConfig.for_model(vision.pop("model_type"), **vision)).save_pretrained(
        tmp_path / "v"
    )
    text = dict(tiny_text_config(vocab_size=len(tiny_tokenizer)))
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(text.pop("model_type"), **text))
    lm.save_pretrained(tmp_path / "lm")
    config = ModelConfig(
        vision=VisionConfig(pretrained=str(tmp_path / "v")), text_pretrained=str(tmp_path / "lm")
    )
    model = build_model(config)
    assert config.text_config is None and config.vision.pretrained is not None  # the input is not modified
    assert model.config.text_pretrained is None and model.config.vision.pretrained is None
    assert model.config.text_config["model_type"] == "llama"
    assert torch.equal(model.language_model.lm_head.weight, lm.lm_head.weight)


@pytest.mark.filterwarnings("ignore:MatMul8bitLt")  # LLM.int8 casts fp32 inputs to fp16
@pytest.mark.parametrize("bits", [4, 8])
def test_set_trainable_never_makes_quantized_weights_trainable(tiny_tokenizer, bits):
    """build_model around an already-loaded LM holding a real bitsandbytes layer (QLoRA's case): integer weights
    stay frozen whatever the flag, every floating-point part follows it, and the config forgets quantization."""
    bnb = pytest.importorskip("bitsandbytes", reason="needs bitsandbytes (the `real` extra)")
    from transformers import AutoConfig, AutoModelForCausalLM

    from vistune.model.llava import build_model
    from vistune.testing import tiny_model_config

    config = tiny_model_config(vocab_size=len(tiny_tokenizer))
    text = dict(config.text_config)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(AutoConfig.for_model(text.pop("model_type"), **text))
    attn = lm.model.layers[0].self_attn
    if bits == 4:
        layer = bnb.nn.Linear4bit(
            attn.q_proj.in_features, attn.q_proj.out_features, bias=False, compute_dtype=torch.float32
        )
    else:
        layer = bnb.nn.Linear8bitLt(
            attn.q_proj.in_features, attn.q_proj.out_features, bias=False, has_fp16_weights=False
        )
    layer.weight.data = attn.q_proj.weight.data.clone()
    attn.q_proj = layer.to("cpu")  # quantizes the weight
    quantized = attn.q_proj.weight
    assert quantized.dtype == (torch.uint8 if bits == 4 else torch.int8)
    lm.config.quantization_config = {"load_in_4bit": bits == 4, "load_in_8bit": bits == 8}

    model = build_model(config, language_model=lm)  # the constructor makes the LM trainable
    assert model.language_model is lm and model.config.text_pretrained is None
    assert "quantization_config" not in model.config.text_config
    assert model.config.text_config["model_type"] == "llama"
    floats = [p for p in lm.parameters() if p is not quantized]
    assert not quantized.requires_grad and all(p.requires_grad for p in floats)
    model.set_trainable(vision=False, projector=True, language_model=False)
    assert not any(p.requires_grad for p in lm.parameters())
    model.set_trainable(vision=False, projector=True, language_model=True)
    assert not quantized.requires_grad and all(p.requires_grad for p in floats)

    ids, mask, labels, pixels = _mixed_batch(tiny_tokenizer.pad_token_id)
    model.train()
    model(ids, mask, labels, pixel_values=pixels).loss.backward()
    assert quantized.grad is None and lm.get_input_embeddings().weight.grad is not None
    assert all(p.grad is not None for p in model.projector.parameters())


def test_stop_strings_end_generation(tiny_model, tiny_tokenizer):
    ids, mask = pad_rows(_prompt_rows()[:1], pad_id=tiny_tokenizer.pad_token_id)
    pixels = torch.randn(1, 3, 32, 32)
    kwargs = {"max_new_tokens": 8, "do_sample": False, "eos_token_id": None}
    greedy = tiny_model.generate(ids, mask, pixel_values=pixels, **kwargs)[0].tolist()
    stop = tiny_tokenizer.decode(greedy[:4])[-2:]
    stopped = tiny_model.generate(
        ids, mask, pixel_values=pixels, stop_strings=[stop], tokenizer=tiny_tokenizer, **kwargs
    )[0].tolist()
    assert len(stopped) <= 4 and stopped == greedy[: len(stopped)]
    assert tiny_tokenizer.decode(stopped).endswith(stop)


def _prefix_batch(pad_id: int):
    """Rows that share a 6-token prompt prefix, then an image, a question and an answer of different lengths."""
    rows = [
        image_row([1, 50, 51, 52, 53, 54], "img", [60, 61, 62], [70, 71]),
        image_row([1, 50, 51, 52, 53, 54], "img", [63, 64], [72, 73, 74]),
        image_row([1, 50, 51, 52, 53, 54], "img", [60, 65, 66, 67], [75]),
    ]
    ids, mask = pad_rows(rows, pad_id=pad_id)
    labels = torch.full_like(ids, -100)
    for i, answer in enumerate(([70, 71], [72, 73, 74], [75])):
        end = int(mask[i].sum())
        labels[i, end - len(answer) : end] = torch.tensor(answer)
    torch.manual_seed(2)
    return ids, mask, labels, torch.randn(3, 3, 32, 32)


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_shared_prompt_prefix_gives_the_same_loss_and_gradients(tiny_tokenizer, model_type):
    from vistune.testing import build_tiny_model

    model = build_tiny_model(tiny_tokenizer, text_overrides={"model_type": model_type})
    model.set_trainable(vision=False, projector=True, language_model=True)
    ids, mask, labels, pixels = _prefix_batch(tiny_tokenizer.pad_token_id)
    assert model._shared_prefix_length(ids, mask, labels) == 6
    results = []
    for share in (False, True):
        model.share_prompt_prefix = share
        model.zero_grad()
        out = model(ids, mask, labels, pixel_values=pixels)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.loss.detach(), int(out.num_supervised_tokens), grads))
    (plain, n_plain, g_plain), (shared, n_shared, g_shared) = results
    assert n_plain == n_shared == 6
    assert torch.allclose(plain, shared, atol=1e-5)
    assert g_plain.keys() == g_shared.keys()
    assert any("embed_tokens" in n for n in g_shared)  # the prefix's token embeddings got their gradient
    for name, grad in g_plain.items():
        assert torch.allclose(grad, g_shared[name], atol=1e-5), name


def test_shared_prefix_stops_before_a_supervised_or_padded_or_differing_position(tiny_model, tiny_tokenizer):
    ids, mask, labels, _ = _prefix_batch(tiny_tokenizer.pad_token_id)
    labels[1, 4] = ids[1, 4]  # position 3 now predicts a supervised token
    assert tiny_model._shared_prefix_length(ids, mask, labels) == 3
    ids, mask, labels, _ = _prefix_batch(tiny_tokenizer.pad_token_id)
    ids[2, 2] = 99  # the third row differs at position 2
    assert tiny_model._shared_prefix_length(ids, mask, labels) == 2
    left_ids, left_mask = pad_rows([[1, 50, 51], [1, 50]], pad_id=tiny_tokenizer.pad_token_id, left=True)
    assert tiny_model._shared_prefix_length(left_ids, left_mask, torch.full_like(left_ids, -100)) == 0
    ids, mask, labels, _ = _mixed_batch(tiny_tokenizer.pad_token_id)  # only <s> in common: not worth it
    assert tiny_model._shared_prefix_length(ids, mask, labels) == 0
    # one sample: nothing to share
    ids, mask, labels, _ = _prefix_batch(tiny_tokenizer.pad_token_id)
    assert tiny_model._shared_prefix_length(ids[:1], mask[:1], labels[:1]) == 0
