"""Inference on a CUDA device in bfloat16: generation, the CLI's --device/--dtype, the server. Skipped without a GPU
(CI has none); run on a GPU machine with `pytest -q tests -k cuda`."""

from __future__ import annotations

import httpx
import pytest
import torch
from PIL import Image
from serving import running_server
from typer.testing import CliRunner

from vistune.infer.generate import GenerationConfig, generate_batch, generate_reply
from vistune.model.io import load_pretrained
from vistune.text.templates import get_template
from vistune.text.tokenize import encode_prompt

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

QUESTION = [{"from": "human", "value": "<image>\nWhat is in the picture?"}]


def test_auto_loads_on_the_gpu_in_bfloat16(tiny_model_dir):
    loaded = load_pretrained(tiny_model_dir, device="auto", dtype="auto")
    params = list(loaded.model.parameters())
    assert {p.device.type for p in params} == {"cuda"}
    assert {p.dtype for p in params} == {torch.bfloat16}


def test_gpu_bfloat16_logits_are_close_to_cpu_float32(tiny_model_dir, image_path):
    cpu = load_pretrained(tiny_model_dir)
    gpu = load_pretrained(tiny_model_dir, device="cuda", dtype="bfloat16")
    image = Image.open(image_path).convert("RGB")
    prompt = encode_prompt(
        "<image>\nWhat is in the picture?",
        cpu.tokenizer,
        num_image_tokens=cpu.model.num_image_tokens,
        image_token_id=cpu.model.config.image_token_id,
    )
    ids, pixels = torch.tensor([prompt]), cpu.image_processor([image])
    with torch.no_grad():
        ref = cpu.model(input_ids=ids, pixel_values=pixels).logits[0, -1]
        low = gpu.model(input_ids=ids.cuda(), pixel_values=pixels.cuda()).logits[0, -1].float().cpu()
    assert (low - ref).abs().max() < 0.05 * ref.abs().max()


def test_gpu_batch_generation_matches_one_by_one(tiny_model_dir, image_path):
    # float32: a bf16 rounding difference between padded and unpadded rows could flip a near-tie argmax
    gpu = load_pretrained(tiny_model_dir, device="cuda", dtype="float32")
    image = Image.open(image_path).convert("RGB")
    small = image.resize((20, 20))
    template, config = get_template(gpu.template), GenerationConfig(max_new_tokens=12)
    args = (gpu.model, gpu.tokenizer, gpu.image_processor, template)
    questions = [
        QUESTION,
        [{"from": "human", "value": "<image>\nDescribe the colors in this image, please."}],
    ]
    batch = generate_batch(*args, questions, [[image], [small]], config)
    single = [generate_reply(*args, q, [im], config) for q, im in zip(questions, [image, small], strict=True)]
    assert batch == single and all(batch)


def test_eval_world_cli_runs_on_the_gpu(tiny_model_dir, tmp_path):
    """`vistune eval world --device cuda --dtype bfloat16` on a small world (a random model: it runs, it scores)."""
    import json

    from vistune.cli import app
    from vistune.world.build import build_world

    build_world(tmp_path / "world", {"val": 6}, seed=0, size=32)
    argv = ["eval", "world", "--model", str(tiny_model_dir), "--world", str(tmp_path / "world")]
    argv += f"--descriptions 2 --device cuda --dtype bfloat16 --out {tmp_path / 's.json'}".split()
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["descriptions"]["n"] == 2


def test_server_answers_from_the_gpu(tiny_model_dir, image_path):
    import base64
    import io

    from vistune.infer.server import create_app

    gpu = load_pretrained(tiny_model_dir, device="cuda", dtype="bfloat16")
    buf = io.BytesIO()
    Image.open(image_path).convert("RGB").save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    body = {
        "model": "tiny",
        "max_tokens": 8,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "What?"},
                ],
            }
        ],
    }
    with running_server(create_app(gpu, model_name="tiny")) as base:
        reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]
