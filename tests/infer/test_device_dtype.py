"""Choosing where and in what precision a saved model runs (`--device`, `--dtype` of chat, serve and eval).

These run on the CPU; tests/infer/test_cuda_inference.py runs the same paths on a CUDA device when there is one.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from vistune.errors import VistuneError
from vistune.infer.generate import GenerationConfig, generate_reply
from vistune.model.io import load_pretrained, resolve_device, resolve_dtype
from vistune.model.vision import ConvFeatureMapTower
from vistune.text.templates import get_template
from vistune.text.tokenize import encode_prompt


def test_auto_is_the_cpu_in_float32_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto picks it (test_cuda_inference.py covers that)")
    device = resolve_device("auto")
    assert device == torch.device("cpu")
    assert resolve_dtype("auto", device) == torch.float32


def test_names_are_checked_with_a_clear_error():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16
    with pytest.raises(VistuneError, match="not a device name"):
        resolve_device("gpu0")
    with pytest.raises(VistuneError, match="auto or one of"):
        resolve_dtype("int8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(VistuneError, match="--device cpu"):
            resolve_device("cuda")


class _UncastConvTower(ConvFeatureMapTower):
    """A tower that, unlike the built-in ones, does not cast its input to its own dtype (as a user's might not)."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.features(pixel_values).flatten(2).transpose(1, 2)


def test_a_bfloat16_model_takes_float32_pixels_whatever_its_tower(tiny_model_dir):
    model = load_pretrained(tiny_model_dir).model  # its own copy: the tower is swapped below
    # 32 px -> 4x4 = 16 tokens, as the tiny CLIP
    conv = nn.Conv2d(3, model.vision.hidden_size, kernel_size=8, stride=8)
    tower = _UncastConvTower(conv, image_size=32, image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
    assert tower.num_tokens == model.vision.num_tokens
    model.vision = tower
    model.to(torch.bfloat16)
    tokens = model.encode_images(pixel_values=torch.rand(2, 3, 32, 32))  # float32, as the processor gives
    assert tokens.dtype == torch.bfloat16 and tokens.shape[:2] == (2, tower.num_tokens)


def test_bfloat16_load_answers_close_to_float32(tiny_model_dir, image_path):
    """dtype="bfloat16" casts every weight; its next-token logits stay close to float32's and it generates."""
    full = load_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    half = load_pretrained(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    image = Image.open(image_path).convert("RGB")
    pixels = full.image_processor([image])
    prompt = encode_prompt(
        "<image>\nWhat is in the picture?",
        full.tokenizer,
        num_image_tokens=full.model.num_image_tokens,
        image_token_id=full.model.config.image_token_id,
    )
    ids = torch.tensor([prompt])
    with torch.no_grad():
        ref = full.model(input_ids=ids, pixel_values=pixels).logits[0, -1]
        low = half.model(input_ids=ids, pixel_values=pixels).logits[0, -1].float()
    assert (low - ref).abs().max() < 0.05 * ref.abs().max()
    reply = generate_reply(
        half.model,
        half.tokenizer,
        half.image_processor,
        get_template(half.template),
        [{"from": "human", "value": "<image>\nWhat is in the picture?"}],
        [image],
        GenerationConfig(max_new_tokens=8),
    )
    assert isinstance(reply, str) and reply


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_chat_cli_names_a_missing_gpu_in_one_line(tiny_model_dir):
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", "from vistune.cli import main; main()", "chat", "--model", str(tiny_model_dir)]
        + ["--device", "cuda", "Hello?"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "device 'cuda': this torch sees no CUDA device; use --device cpu" in run.stderr
