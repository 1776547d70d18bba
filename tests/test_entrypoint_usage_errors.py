"""The `vistune` entry point: usage mistakes print click's usage message, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--no-such-flag"], "No such option: --no-such-flag"),
        (["eval", "world", "--model", "m"], "Missing option '--world'"),
        (["world", "build", "--out", "x", "--train", "many"], "Invalid value for '--train'"),
    ],
)
def test_usage_errors_are_one_message_and_exit_2(argv, message):
    run = subprocess.run(
        [sys.executable, "-c", "from vistune.cli import main; main()", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr
