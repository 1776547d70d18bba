"""A scripted OpenAI-compatible chat server on 127.0.0.1, for tests and benchmarks — a deliberate test double.

It speaks real HTTP (so the real `openai` client, connection pool and timeouts are exercised) and misbehaves on
request: the first requests can be answered with faults a real server will not produce on demand:

    "429"        429 Too Many Requests with a Retry-After header
    "500"        500 Internal Server Error
    "hang"       no answer until the server stops (the client must time out)
    "malformed"  200 with a body that is not JSON
    "truncated"  200 whose body stops half-way and the connection closes
    "401"        401 Unauthorized (a bad key)

Normal replies are deterministic functions of the request (see `default_reply`), after an optional delay.

    with LoopbackChatServer(faults=["429", "hang"], delay=0.2) as server:
        teacher = OpenAITeacher("scripted", base_url=server.base_url)
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS: tuple[str, ...] = ("429", "500", "hang", "malformed", "truncated", "401")
Messages = list[dict[str, str]]


def default_reply(messages: Messages) -> str:
    """A valid, grounded reply for any flavor, built from the first line of the context (a caption)."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    context = messages[-1]["content"] if messages else ""
    first = context.splitlines()[0].strip() if context.strip() else "Nothing is known about it"
    if "one paragraph" in system or "detailed paragraph" in system:
        return f"Description: The picture can be summed up like this. {first}"
    return f"Sure, here it is.\nQuestion: What does the image show?\nAnswer: {first}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: a burst of 64+ connects must not be refused


class LoopbackChatServer:
    """`POST /v1/chat/completions` on 127.0.0.1:<free port>, served from threads; use as a context manager."""

    def __init__(
        self,
        *,
        faults: Sequence[str] = (),
        delay: float = 0.0,
        retry_after: float = 0.1,
        reply: Callable[[Messages], str] = default_reply,
    ) -> None:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {FAULTS}")
        self._faults = list(faults)
        self.delay = delay
        self.retry_after = retry_after
        self.reply = reply
        self.served: Counter[str] = Counter()  # fault name or "ok" -> count
        self.contexts: Counter[str] = Counter()  # last user message -> times answered "ok"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> LoopbackChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()  # releases hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_fault(self) -> str | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real servers
            disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fault = server._next_fault()
                with contextlib.suppress(
                    BrokenPipeError, ConnectionResetError
                ):  # the client gave up (timeout)
                    server._answer(self, json.loads(body or b"{}"), fault)

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler, request: dict[str, Any], fault: str | None) -> None:
        with self._lock:
            self.served[fault or "ok"] += 1
        if fault == "hang":
            self._stop.wait()
            handler.close_connection = True
            return
        if fault in ("429", "500", "401"):
            error = {"error": {"message": f"scripted fault {fault}", "type": "scripted", "code": fault}}
            headers = {"Retry-After": f"{self.retry_after:g}"} if fault == "429" else {}
            _send(handler, int(fault), json.dumps(error).encode(), headers)
            return
        if fault == "malformed":
            _send(handler, 200, b'{"id": "x", "choices": [ this is not json')
            return
        messages = request.get("messages", [])
        if self.delay:
            time.sleep(self.delay)
        text = self.reply(messages)
        payload = json.dumps(_completion(request, messages, text)).encode()
        if fault == "truncated":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload[: len(payload) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        with self._lock:
            self.contexts[messages[-1]["content"] if messages else ""] += 1
        _send(handler, 200, payload)


def _completion(request: dict[str, Any], messages: Messages, text: str) -> dict[str, Any]:
    prompt_tokens = sum(len(m.get("content", "").split()) for m in messages)
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": 0,
        "model": request.get("model", "loopback"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        },
    }


def _send(
    handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
