"""An OpenAI-compatible chat-completions server and a small web page, for a loaded vistune model.

`POST /v1/chat/completions` takes OpenAI-style messages whose user content may hold `image_url` parts with
`data:` URLs (base64 PNG/JPEG); each image part becomes an `<image>` placeholder where it stands. `stream: true`
answers with server-sent events, as the OpenAI API does. Remote image URLs are refused (the server never fetches).
One model serves one request at a time (a lock); requests queue rather than fail.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
import uuid
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from vistune.errors import VistuneError
from vistune.infer.generate import Conversation, GenerationConfig, generate_reply
from vistune.text.templates import get_template

_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[dict[str, Any]]
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False


def decode_data_url(url: str) -> Image.Image:
    """`data:image/png;base64,...` -> RGB image; anything else is a 400 with the reason."""
    if not url.startswith("data:"):
        raise HTTPException(
            400, "only data: URLs are accepted for images (this server never fetches remote URLs)"
        )
    try:
        header, payload = url.split(",", 1)
        raw = base64.b64decode(payload, validate=True) if header.endswith(";base64") else payload.encode()
        return Image.open(io.BytesIO(raw)).convert("RGB")
    except (ValueError, UnidentifiedImageError, OSError) as err:
        raise HTTPException(400, f"image_url could not be decoded as an image: {err}") from None


def to_conversation(messages: list[dict[str, Any]]) -> tuple[Conversation, list[Image.Image]]:
    """OpenAI messages -> (LLaVA conversation, images in order). Image parts become `<image>` in the text."""
    conversation: Conversation = []
    images: list[Image.Image] = []
    for i, message in enumerate(messages):
        role = _ROLES.get(message.get("role", ""))
        if role is None:
            raise HTTPException(400, f"messages[{i}].role must be one of {', '.join(_ROLES)}")
        content = message.get("content", "")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            pieces = []
            for part in content:
                if part.get("type") == "text":
                    pieces.append(part.get("text", ""))
                elif part.get("type") == "image_url":
                    image_url = part.get("image_url") or {}
                    url = image_url.get("url", "") if isinstance(image_url, dict) else str(image_url)
                    images.append(decode_data_url(url))
                    # an image after text goes on its own line after it ("What is this?\n<image>"), as a
                    # model trained with `image_placement: after` saw it; before text, on the line above
                    after_text = bool(pieces) and not pieces[-1].endswith("\n")
                    pieces.append("\n<image>" if after_text else "<image>\n")
                else:
                    raise HTTPException(
                        400, f"messages[{i}]: unsupported content part type {part.get('type')!r}"
                    )
            text = "".join(pieces)
        else:
            raise HTTPException(400, f"messages[{i}].content must be a string or a list of parts")
        conversation.append({"from": role, "value": text})
    if not conversation or conversation[-1]["from"] != "human":
        raise HTTPException(400, "the last message must come from the user")
    return conversation, images


def _config(req: ChatRequest, default: GenerationConfig) -> GenerationConfig:
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    try:
        return GenerationConfig(
            max_new_tokens=req.max_completion_tokens or req.max_tokens or default.max_new_tokens,
            temperature=default.temperature if req.temperature is None else req.temperature,
            top_p=default.top_p if req.top_p is None else req.top_p,
            top_k=default.top_k if req.top_k is None else req.top_k,
            seed=req.seed,
            stop=stop,
        )
    except VistuneError as err:  # invalid sampling settings
        raise HTTPException(400, str(err)) from None


def create_app(loaded, *, model_name: str = "vistune", template: str | None = None) -> FastAPI:
    """Build the FastAPI app serving `loaded` (a `load_pretrained` bundle)."""
    app = FastAPI(title="vistune", description="OpenAI-compatible chat completions for a vistune model")
    tmpl = get_template(template or loaded.template)
    lock = threading.Lock()
    default = GenerationConfig()

    def run(conversation, images, config, on_text=None) -> str:
        with lock:
            return generate_reply(
                loaded.model,
                loaded.tokenizer,
                loaded.image_processor,
                tmpl,
                conversation,
                images,
                config,
                on_text=on_text,
            )

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return resources.files("vistune.infer").joinpath("web/index.html").read_text()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    def models() -> dict:
        # image_placement (an extra field): where the model expects the image in the first user message, before
        # or after its text; clients that care (the web page) order their content parts by it
        model = {"id": model_name, "object": "model", "owned_by": "vistune"}
        return {"object": "list", "data": [{**model, "image_placement": loaded.image_placement}]}

    @app.post("/v1/chat/completions")
    async def completions(req: ChatRequest):
        conversation, images = to_conversation(req.messages)
        config = _config(req, default)
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if not req.stream:
            text = await asyncio.to_thread(run, conversation, images, config)
            return JSONResponse(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model_name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )
        return StreamingResponse(
            _sse(run, conversation, images, config, rid, created, model_name), media_type="text/event-stream"
        )

    return app


async def _sse(run, conversation, images, config, rid: str, created: int, model_name: str):
    """Run generation in a worker thread and relay its text deltas as OpenAI `chat.completion.chunk` events."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    def worker() -> None:
        try:
            run(
                conversation, images, config, on_text=lambda t: loop.call_soon_threadsafe(queue.put_nowait, t)
            )
        except Exception as err:  # surfaced to the client as an error event
            loop.call_soon_threadsafe(queue.put_nowait, err)
        loop.call_soon_threadsafe(queue.put_nowait, done)

    def chunk(delta: dict, finish: str | None = None) -> str:
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(body)}\n\n"

    threading.Thread(target=worker, daemon=True).start()
    yield chunk({"role": "assistant", "content": ""})
    while (item := await queue.get()) is not done:
        if isinstance(item, Exception):
            yield f"data: {json.dumps({'error': {'message': str(item)}})}\n\n"
            break
        yield chunk({"content": item})
    yield chunk({}, finish="stop")
    yield "data: [DONE]\n\n"
