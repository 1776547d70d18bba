"""What every teacher implements, and the two kinds of failure the pipeline distinguishes.

A teacher turns chat messages (system + few-shot + the image's context) into reply text. Failures that may pass
(rate limits, 5xx, timeouts, dropped connections, garbled responses) raise `TeacherRequestError` and are retried
with backoff; a request the server rejects for good (400) raises it with `retryable=False` and only that item
fails; failures no retry can fix for any item (bad key, unknown model) raise `FatalTeacherError` and stop the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from vistune.datagen.annotations import ImageAnnotations
from vistune.errors import VistuneError


@dataclass(frozen=True)
class TeacherRequest:
    """One generation: `key` is "image_id:flavor"; `attempt` counts rejected replies before this one."""

    key: str
    flavor: str
    messages: list[dict[str, str]]
    image: ImageAnnotations
    attempt: int = 0


@dataclass(frozen=True)
class TeacherReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class TeacherRequestError(Exception):
    """One request failed. `retry_after` (seconds) comes from a Retry-After header; `connection` marks network
    errors; `retryable=False` means retrying the same request cannot help (the item fails, the run goes on)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        connection: bool = False,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.connection = connection
        self.retryable = retryable


class FatalTeacherError(VistuneError):
    """No retry can fix this (bad key, unknown model, unreachable endpoint): the run stops, keeping what is done."""


class Teacher(Protocol):
    """A source of replies. Implementations: OpenAITeacher, HFTeacher, WorldTeacher (rule-based)."""

    name: str

    async def complete(self, request: TeacherRequest) -> TeacherReply: ...

    async def aclose(self) -> None: ...
