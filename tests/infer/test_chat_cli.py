"""`vistune chat` as a user runs it: a real subprocess on a real saved model directory."""

from __future__ import annotations

import subprocess
import sys

from PIL import Image

from vistune.infer.chat import ChatSession
from vistune.infer.generate import GenerationConfig


def _vistune(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vistune.cli", *args], input=stdin, capture_output=True, text=True, timeout=180
    )


def test_one_shot_prints_the_answer_alone(tiny_model_dir, image_path, loaded):
    question = "What color is the circle?"
    run = _vistune(
        "chat", "--model", str(tiny_model_dir), "--image", str(image_path), "--max-new-tokens", "12", question
    )
    assert run.returncode == 0, run.stderr
    session = ChatSession(loaded, config=GenerationConfig(max_new_tokens=12))
    session.set_image(image_path)
    assert run.stdout == session.ask(question) + "\n"


def test_interactive_chat_keeps_image_and_history(tiny_model_dir, image_path, loaded):
    run = _vistune(
        "chat", "--model", str(tiny_model_dir), "--image", str(image_path), "--max-new-tokens", "8",
        stdin="How many shapes?\nAnd their colors?\n/exit\n",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    session = ChatSession(loaded, config=GenerationConfig(max_new_tokens=8))
    session.set_image(image_path)
    expected = [session.ask("How many shapes?"), session.ask("And their colors?")]
    assert run.stdout.splitlines() == expected
    assert [t["from"] for t in session.history] == ["human", "gpt", "human", "gpt"]
    assert (
        session.history[0]["value"].startswith("<image>\n") and "<image>" not in session.history[2]["value"]
    )


def test_session_places_the_image_where_the_model_was_trained_to_see_it(image_path, loaded):
    import dataclasses

    session = ChatSession(
        dataclasses.replace(loaded, image_placement="after"), config=GenerationConfig(max_new_tokens=4)
    )
    session.set_image(image_path)
    session.ask("How many shapes?")
    assert session.history[0]["value"] == "How many shapes?\n<image>"


def test_chat_without_image_is_text_only(loaded):
    session = ChatSession(loaded, config=GenerationConfig(max_new_tokens=6))
    session.ask("hello")
    assert "<image>" not in session.history[0]["value"]


def test_missing_image_is_one_clear_error(tiny_model_dir, tmp_path):
    run = _vistune("chat", "--model", str(tiny_model_dir), "--image", str(tmp_path / "nope.png"), "hi")
    assert run.returncode == 1
    assert "nope.png" in run.stderr and "Traceback" not in run.stderr


def test_corrupt_image_is_one_clear_error(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    run = _vistune("chat", "--model", str(tiny_model_dir), "--image", str(bad), "hi")
    assert run.returncode == 1
    assert "bad.png" in run.stderr and "Traceback" not in run.stderr


def test_model_dir_of_neither_format_is_one_clear_error(tmp_path, image_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    run = _vistune("chat", "--model", str(tmp_path), "hi")
    assert run.returncode == 1
    assert str(tmp_path) in run.stderr and "Traceback" not in run.stderr


def test_interactive_bad_image_command_does_not_end_the_chat(tiny_model_dir, image_path):
    run = _vistune(
        "chat", "--model", str(tiny_model_dir), "--max-new-tokens", "4",
        stdin="/image /does/not/exist.png\nhello\n",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "exist.png" in run.stderr and len(run.stdout.splitlines()) == 1


def test_image_is_opened_as_rgb(image_path, loaded):
    session = ChatSession(loaded)
    session.set_image(image_path)
    assert isinstance(session.image, Image.Image) and session.image.mode == "RGB"


def test_over_long_prompt_is_one_clear_error(tiny_model_dir, image_path, loaded):
    context = loaded.model.language_model.config.max_position_embeddings
    question = "red circle " * context
    run = _vistune("chat", "--model", str(tiny_model_dir), "--image", str(image_path), question)
    assert run.returncode == 1
    assert f"context holds {context}" in run.stderr and "Traceback" not in run.stderr
