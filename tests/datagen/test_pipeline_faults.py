"""The pipeline against a deliberately misbehaving OpenAI-compatible server on 127.0.0.1 (a fault-injecting test
double: 429 + Retry-After, 500, hang, malformed JSON, truncated body, 401) through the real `openai` client.
Nothing may be lost or duplicated."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter

import pytest

from vistune.datagen.annotations import load_annotations
from vistune.datagen.grounding import WORLD_TOTAL_NOUNS, GroundingChecker
from vistune.datagen.journal import read_jsonl
from vistune.datagen.loopback import LoopbackChatServer, default_reply
from vistune.datagen.pipeline import DatagenConfig, OutputPaths, run_datagen
from vistune.datagen.prompt_sets import FLAVORS, load_instructions, load_prompts
from vistune.datagen.teachers.openai_teacher import OpenAITeacher
from vistune.errors import VistuneError
from vistune.world import SHAPES


def _run(world_files, out, base_url, *, flavors=FLAVORS, timeout=0.5, **overrides):
    annotations = load_annotations(world_files["captions"], world_files["instances"], world_files["images"])
    settings = {
        "concurrency": 4,
        "max_retries": 4,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "progress": False,
    }
    config = DatagenConfig(flavors=list(flavors), request_timeout=timeout, **{**settings, **overrides})
    teacher = OpenAITeacher("scripted", base_url=base_url, timeout=timeout)
    return run_datagen(
        annotations,
        teacher,
        {f: load_prompts(f, "world") for f in flavors},
        out,
        config,
        instructions={"detail": load_instructions("detail")},
        grounding=GroundingChecker(annotations.categories, annotations.attribute_values(), WORLD_TOTAL_NOUNS),
    )


def _keys(out):
    return [e["key"] for e in read_jsonl(OutputPaths(out).journal)]


def test_every_fault_is_survived_with_nothing_lost_or_duplicated(world_files, tmp_path):
    faults = ["429", "500", "hang", "malformed", "truncated"] * 2
    out = tmp_path / "data.json"
    with LoopbackChatServer(faults=faults, retry_after=0.05) as server:
        # Enough retries that no item can run out even if it draws every fault, and a timeout that a loaded CI
        # machine's ordinary reply never reaches (only the hang does): then the counts below are exact.
        stats = _run(world_files, out, server.base_url, max_retries=len(faults), timeout=2.0)
    assert all(server.served[f] == 2 for f in set(faults)), server.served
    assert stats.items_done == 18 and stats.items_failed == 0
    assert stats.retries == len(faults)
    assert server.served["ok"] == 18  # a finished key is never requested again
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == 18
    records = json.loads(out.read_text())
    assert len({r["id"] for r in records}) == 18
    assert stats.prompt_tokens > 0 and stats.completion_tokens > 0
    saved = json.loads(OutputPaths(out).stats.read_text())
    assert saved["requests"] == 28 and saved["items_done"] == 18


def test_only_a_failure_to_connect_counts_as_unreachable():
    """A reply cut off mid-body means the server was reached: retryable, never 'cannot reach'. Both errors come
    from the real openai client (which wraps its own httpx fork)."""
    import openai

    from vistune.datagen.teachers.openai_teacher import _failed_to_connect

    def error_from(base_url):
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=5)
        with pytest.raises(openai.APIConnectionError) as caught:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        return caught.value.__cause__

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    assert _failed_to_connect(error_from(closed))
    with LoopbackChatServer(faults=["truncated"]) as server:
        assert not _failed_to_connect(error_from(server.base_url))


def test_rejected_replies_are_logged_and_retried(world_files, tmp_path):
    seen: Counter[str] = Counter()

    def first_reply_is_garbage(messages):
        key = messages[0]["content"] + messages[-1]["content"]
        seen[key] += 1
        return "I cannot help with that." if seen[key] == 1 else default_reply(messages)

    out = tmp_path / "data.json"
    with LoopbackChatServer(reply=first_reply_is_garbage) as server:
        stats = _run(world_files, out, server.base_url, flavors=["conversation", "complex_reasoning"])
    rejects = read_jsonl(OutputPaths(out).rejects)
    assert stats.items_done == 12 and stats.rejected == 12 == len(rejects)
    assert all(r["reason"] == "no 'Question:' / 'Answer:' turns found" for r in rejects)
    assert "cannot help" not in out.read_text()
    assert server.served["ok"] == 24


def _absent_shape_reply(messages):
    context = messages[-1]["content"]
    absent = next(s for s in SHAPES if s not in context)
    return f"Question: What is in the middle?\nAnswer: A {absent} is there."


def test_grounding_drop_rejects_and_flag_keeps_with_counts(world_files, tmp_path):
    with LoopbackChatServer(reply=_absent_shape_reply) as server:
        dropped = _run(
            world_files, tmp_path / "drop.json", server.base_url, flavors=["conversation"], max_rejects=1
        )
        flagged = _run(
            world_files, tmp_path / "flag.json", server.base_url, flavors=["conversation"], grounding="flag"
        )
    assert dropped.items_done == 0 and dropped.items_failed == 6
    assert dropped.grounding_flagged["conversation"] == 12  # 6 items x 2 attempts
    assert all(
        r["reason"].startswith("grounding: mentions") for r in read_jsonl(tmp_path / "drop.rejects.jsonl")
    )
    assert flagged.items_done == 6 and flagged.grounding_flagged["conversation"] == 6
    assert all(e["grounding"] for e in read_jsonl(tmp_path / "flag.journal.jsonl"))


def test_bad_key_stops_the_run_and_keeps_what_was_done(world_files, tmp_path):
    out = tmp_path / "data.json"
    with LoopbackChatServer() as server:
        _run(world_files, out, server.base_url, limit=2)
    assert len(json.loads(out.read_text())) == 6
    with (
        LoopbackChatServer(faults=["401"] * 50) as server,
        pytest.raises(VistuneError, match=r"refused the API key \(401\).*--api-key-env"),
    ):
        _run(world_files, out, server.base_url)
    assert len(json.loads(out.read_text())) == 6  # nothing already generated is lost
    assert len(_keys(out)) == 6


def test_unreachable_endpoint_is_one_clear_error(world_files, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(VistuneError, match=f"cannot reach http://127.0.0.1:{port}/v1.*--base-url"):
        _run(world_files, tmp_path / "data.json", f"http://127.0.0.1:{port}/v1", max_retries=1)
    assert time.perf_counter() - started < 20


def test_token_budget_stops_cleanly_and_a_rerun_finishes(world_files, tmp_path):
    out = tmp_path / "data.json"
    with LoopbackChatServer() as server:
        first = _run(world_files, out, server.base_url, max_tokens_total=1, concurrency=1)
        assert first.budget_reached and first.items_done == 1 and first.items_not_started == 17
        assert len(json.loads(out.read_text())) == 1
        second = _run(world_files, out, server.base_url)
    assert second.items_already_done == 1 and second.items_done == 17
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == 18


def test_retry_after_is_honored(world_files, tmp_path):
    with LoopbackChatServer(faults=["429"], retry_after=0.6) as server:
        started = time.perf_counter()
        stats = _run(world_files, tmp_path / "d.json", server.base_url, flavors=["detail"], limit=1)
        elapsed = time.perf_counter() - started
    assert stats.items_done == 1 and stats.retries == 1
    assert elapsed >= 0.6  # the backoff alone (<= 0.05 s) would be far shorter
