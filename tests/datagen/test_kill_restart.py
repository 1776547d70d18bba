"""Exactly once under SIGKILL: kill `vistune datagen` at several points, restart it each time, and compare with an
uninterrupted run. The teacher is the loopback chat server (replies are deterministic), reached through the real
CLI, `openai` client and HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vistune.datagen.journal import read_jsonl
from vistune.datagen.loopback import LoopbackChatServer
from vistune.world import build_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~25 s: six CLI starts


def _command(paths, base_url, out):
    ann = paths.root / "annotations"
    return [
        sys.executable, "-m", "vistune.cli", "datagen",
        "--captions", str(ann / "captions_train.json"), "--instances", str(ann / "instances_train.json"),
        "--images", str(paths.images("train")), "--teacher", "openai", "--base-url", base_url,
        "--model", "scripted", "--out", str(out), "--concurrency", "3", "--no-progress", "--timeout", "10",
    ]  # fmt: skip


def _journal_lines(out) -> int:
    journal = out.with_name(out.stem + ".journal.jsonl")
    return journal.read_bytes().count(b"\n") if journal.exists() else 0


def _run_and_kill(cmd, out, at_lines: int) -> int:
    """Start the CLI; SIGKILL it once the journal has >= `at_lines` lines. Returns the lines at kill time."""
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _journal_lines(out) < at_lines and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return _journal_lines(out)


def test_sigkill_at_several_points_then_resume_equals_uninterrupted_run(tmp_path):
    paths = build_world(tmp_path / "world", {"train": 10}, seed=2, size=32)
    total = 10 * 3
    out = tmp_path / "killed" / "data.json"
    reference = tmp_path / "reference" / "data.json"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with LoopbackChatServer(delay=0.05) as server:
        seen = [_run_and_kill(_command(paths, server.base_url, out), out, k) for k in (1, 10, 22)]
        assert 1 <= seen[0] < seen[1] < seen[2] < total, f"the kills did not land mid-run: {seen}"
        final = subprocess.run(
            _command(paths, server.base_url, out), env=env, capture_output=True, text=True, timeout=120
        )
        assert final.returncode == 0, final.stderr
        uninterrupted = subprocess.run(
            _command(paths, server.base_url, reference), env=env, capture_output=True, text=True, timeout=120
        )
        assert uninterrupted.returncode == 0, uninterrupted.stderr
    keys = [e["key"] for e in read_jsonl(out.with_name("data.journal.jsonl"))]
    assert len(keys) == len(set(keys)) == total, "a key was written twice or lost"
    assert json.loads(out.read_text()) == json.loads(reference.read_text())
    assert "already done" in final.stdout
