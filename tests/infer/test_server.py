"""The OpenAI-compatible server, through a real HTTP server on loopback and the real `openai` client."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.infer.serving import running_server
from vistune.infer.chat import ChatSession
from vistune.infer.generate import GenerationConfig
from vistune.infer.server import create_app


@pytest.fixture(scope="module")
def base_url(loaded):
    with running_server(create_app(loaded, model_name="tiny")) as url:
        yield url


def _data_url(path) -> str:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _messages(image_path, question="What shape is it?"):
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _data_url(image_path)}},
                {"type": "text", "text": question},
            ],
        }
    ]


def _expected(loaded, image_path, question="What shape is it?", max_new_tokens=12) -> str:
    session = ChatSession(loaded, config=GenerationConfig(max_new_tokens=max_new_tokens))
    session.set_image(image_path)
    return session.ask(question)


def test_chat_completion_matches_local_generation(base_url, loaded, image_path):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    reply = client.chat.completions.create(model="tiny", messages=_messages(image_path), max_tokens=12)
    assert reply.choices[0].message.content == _expected(loaded, image_path)
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_streaming_chunks_add_up_to_the_answer(base_url, loaded, image_path):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="tiny", messages=_messages(image_path), max_tokens=12, stream=True
    )
    deltas = [chunk.choices[0].delta.content or "" for chunk in stream]
    assert len([d for d in deltas if d]) > 1
    assert "".join(deltas).strip() == _expected(loaded, image_path)


def test_multi_turn_history_is_used(base_url, loaded, image_path):
    session = ChatSession(loaded, config=GenerationConfig(max_new_tokens=8))
    session.set_image(image_path)
    first = session.ask("What shape is it?")
    second = session.ask("And the color?")
    messages = [
        *_messages(image_path),
        {"role": "assistant", "content": first},
        {"role": "user", "content": "And the color?"},
    ]
    reply = httpx.post(
        f"{base_url}/v1/chat/completions", json={"messages": messages, "max_tokens": 8}, timeout=60
    )
    assert reply.json()["choices"][0]["message"]["content"] == second


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, "data: URLs"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, "could not be decoded"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
        ({"messages": [{"role": "user", "content": "hi"}], "top_p": 3}, "top_p"),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "last message"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_400_with_the_reason(base_url, body, fragment):
    reply = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 400
    assert fragment in reply.json()["detail"]


def test_web_page_is_served(base_url):
    page = httpx.get(base_url, timeout=10)
    assert page.status_code == 200 and "/v1/chat/completions" in page.text


def test_image_part_after_the_text_is_placed_after_it_and_models_say_where_theirs_goes(loaded, image_path):
    import dataclasses

    from vistune.infer.server import to_conversation

    image = {"type": "image_url", "image_url": {"url": _data_url(image_path)}}
    text = {"type": "text", "text": "What shape is it?"}
    before, _ = to_conversation([{"role": "user", "content": [image, text]}])
    after, images = to_conversation([{"role": "user", "content": [text, image]}])
    assert before[0]["value"] == "<image>\nWhat shape is it?"
    assert after[0]["value"] == "What shape is it?\n<image>" and len(images) == 1

    trained_after = dataclasses.replace(loaded, image_placement="after")
    with running_server(create_app(trained_after, model_name="tiny")) as url:
        listed = httpx.get(f"{url}/v1/models").json()["data"][0]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": [text, image]}], max_tokens=12
        )
    assert listed["image_placement"] == "after"
    # the server's answer is the one a chat session gives when it places the image after the question itself
    assert reply.choices[0].message.content == _expected(trained_after, image_path)
