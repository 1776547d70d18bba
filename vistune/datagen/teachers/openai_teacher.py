"""Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama, ...), via the `openai` client.

The client's own retries are switched off: the pipeline retries with its own backoff, jitter and Retry-After
handling, and counts every attempt.
"""

from __future__ import annotations

import os

import openai

from vistune.datagen.teachers.base import FatalTeacherError, TeacherReply, TeacherRequest, TeacherRequestError
from vistune.errors import VistuneError


def _retry_after(err: openai.APIStatusError) -> float | None:
    value = err.response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date; rare for APIs, fall back to backoff
        return None


class OpenAITeacher:
    """Chat completions with a fixed model, temperature and max tokens."""

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.7,
        max_tokens: int = 1024,
        timeout: float = 60.0,
    ) -> None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if base_url is None:
                raise VistuneError(
                    f"no API key: set the {api_key_env} environment variable (or name another with --api-key-env)"
                )
            api_key = "none"  # local servers (llama.cpp, vLLM) usually accept any key
        self.model = model
        self.base_url = base_url or "https://api.openai.com/v1"
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        try:
            response = await self._client.chat.completions.create(
                model=self.model,
                messages=request.messages,  # type: ignore[arg-type]
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )
        except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
            raise FatalTeacherError(
                f"{self.base_url} refused the API key ({err.status_code}); set a valid key in ${self.api_key_env} "
                "or name the right variable with --api-key-env"
            ) from None
        except openai.NotFoundError:
            raise FatalTeacherError(
                f"{self.base_url}: model {self.model!r} or the chat-completions route was not found (404); "
                "check --model and --base-url"
            ) from None
        except (openai.RateLimitError, openai.InternalServerError, openai.ConflictError) as err:
            raise TeacherRequestError(f"HTTP {err.status_code}", retry_after=_retry_after(err)) from None
        except openai.APIStatusError as err:
            if err.status_code >= 500 or err.status_code == 408:
                raise TeacherRequestError(f"HTTP {err.status_code}", retry_after=_retry_after(err)) from None
            raise TeacherRequestError(f"HTTP {err.status_code}: {str(err)[:200]}", retryable=False) from None
        except openai.APITimeoutError:
            raise TeacherRequestError("request timed out") from None
        except openai.APIConnectionError as err:
            cause = err.__cause__ or err
            # Only a failure to connect says the endpoint is unreachable; a reply cut off mid-body (the server was
            # reached) is an ordinary retryable fault.
            raise TeacherRequestError(
                f"connection error: {type(cause).__name__}: {cause}",
                connection=_failed_to_connect(cause),
            ) from None
        except (openai.APIResponseValidationError, ValueError) as err:  # malformed JSON and friends
            raise TeacherRequestError(f"malformed response: {type(err).__name__}: {str(err)[:200]}") from None
        return _reply(response)

    async def aclose(self) -> None:
        await self._client.close()


def _failed_to_connect(exc: BaseException | None) -> bool:
    """True if the chain of causes holds a failure to connect. Matched by name: the openai client ships its own
    httpx fork (`httpx2`), so `httpx.ConnectError` is not the class it raises."""
    seen = 0
    while exc is not None and seen < 10:
        if type(exc).__name__ == "ConnectError" or isinstance(exc, ConnectionRefusedError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _reply(response: object) -> TeacherReply:
    try:
        choice = response.choices[0]  # type: ignore[attr-defined]
        text = choice.message.content or ""
    except (AttributeError, IndexError, TypeError) as err:
        raise TeacherRequestError(f"malformed response: no choices[0].message.content ({err})") from None
    usage = getattr(response, "usage", None)
    return TeacherReply(
        text=text,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
    )
