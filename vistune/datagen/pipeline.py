"""The data-generation pipeline: images x flavors -> teacher -> parse, validate, ground -> journal -> LLaVA JSON.

Exactly once: every (image id, flavor) is one key. A finished key is appended to a JSONL journal and fsynced
before anything else happens; a rerun (after Ctrl-C, a crash or `kill -9`) loads the journal and skips those keys,
so no key is requested twice after it was journaled and none is ever written twice. The final LLaVA-Instruct JSON
is compiled from the journal (in annotation order, so it does not depend on completion order) after every run,
including interrupted and failed ones: nothing generated is lost.

Concurrency: K workers share a queue; each request has a timeout and is retried with exponential backoff and full
jitter on rate limits, 5xx, timeouts and connection errors, waiting at least as long as `Retry-After` says.
A rejected reply (unparsable, or ungrounded with `grounding="drop"`) goes to the rejects file with its reason and
the key is asked again, up to `max_rejects` times. Randomness (where `<image>` goes, which detail instruction is
used) is seeded per key, so a resumed run writes the same records as an uninterrupted one.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from vistune.datagen.annotations import AnnotationSet, ImageAnnotations
from vistune.datagen.context import build_context
from vistune.datagen.grounding import GroundingChecker
from vistune.datagen.journal import Journal, JsonlAppender, read_jsonl
from vistune.datagen.parse import RejectedReply, make_record, parse_reply
from vistune.datagen.prompt_sets import FLAVORS, PromptSet
from vistune.datagen.teachers.base import (
    FatalTeacherError,
    Teacher,
    TeacherReply,
    TeacherRequest,
    TeacherRequestError,
)
from vistune.errors import VistuneError


@dataclass
class DatagenConfig:
    """How the pipeline runs. Defaults suit a hosted API; tests shrink the timeouts and backoff."""

    flavors: list[str] = field(default_factory=lambda: list(FLAVORS))
    concurrency: int = 8
    request_timeout: float = 120.0  # seconds per request, enforced here whatever the teacher does
    max_retries: int = 6  # retries of one request after transient failures
    backoff_base: float = 0.5  # seconds; attempt k waits uniform(0, min(backoff_max, base * 2**k))
    backoff_max: float = 30.0
    retry_after_max: float = 300.0  # a longer Retry-After counts as a failure of that request
    max_rejects: int = 3  # rejected replies per key before the key counts as failed (rerun to try again)
    grounding: str = "drop"  # drop | flag | off
    max_tokens_total: int | None = None  # prompt + completion tokens of this run; stops cleanly when reached
    limit: int | None = None  # first N images only
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.grounding not in ("drop", "flag", "off"):
            raise VistuneError(f"--grounding must be drop, flag or off, got {self.grounding!r}")
        if self.concurrency < 1:
            raise VistuneError(f"--concurrency must be >= 1, got {self.concurrency}")


@dataclass
class RunStats:
    """Accounting of one run (saved next to the output as `*.stats.json` and printed)."""

    items_total: int = 0
    items_already_done: int = 0
    items_done: int = 0
    items_failed: int = 0
    items_not_started: int = 0
    items_no_context: int = 0
    requests: int = 0
    retries: int = 0
    rejected: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    grounding_flagged: Counter[str] = field(default_factory=Counter)
    done_per_flavor: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    budget_reached: bool = False
    stopped_by: str | None = None
    seconds: float = 0.0
    dataset_records: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["grounding_flagged"] = dict(self.grounding_flagged)
        data["done_per_flavor"] = dict(self.done_per_flavor)
        data["failures"] = self.failures[:50]
        return data

    def summary(self) -> str:
        flagged = ", ".join(f"{k} {v}" for k, v in sorted(self.grounding_flagged.items())) or "none"
        lines = [
            f"items: {self.items_done} generated, {self.items_already_done} already done, {self.items_failed} failed, "
            f"{self.items_not_started} not started, {self.items_no_context} without context (of {self.items_total})",
            f"requests: {self.requests} ({self.retries} retries), {self.rejected} replies rejected",
            f"tokens: {self.prompt_tokens} prompt + {self.completion_tokens} completion = {self.tokens}",
            f"grounding flagged per flavor: {flagged}",
            f"dataset: {self.dataset_records} records; {self.seconds:.1f} s",
        ]
        if self.budget_reached:
            lines.append(
                "token budget reached: stopped cleanly; rerun with a larger --max-tokens-total to continue"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class OutputPaths:
    """The files of one dataset: `data.json` -> data.journal.jsonl, data.rejects.jsonl, data.stats.json."""

    out: Path

    @property
    def journal(self) -> Path:
        return self.out.with_name(self.out.stem + ".journal.jsonl")

    @property
    def rejects(self) -> Path:
        return self.out.with_name(self.out.stem + ".rejects.jsonl")

    @property
    def stats(self) -> Path:
        return self.out.with_name(self.out.stem + ".stats.json")


@dataclass(frozen=True)
class _Item:
    key: str
    image: ImageAnnotations
    flavor: str
    order: int


class _Stop(Exception):
    """Raised inside a worker to end the whole run (a fatal teacher error)."""


class Pipeline:
    """One run over an annotation set with one teacher. Use `run_datagen` unless you need the pieces."""

    def __init__(
        self,
        annotations: AnnotationSet,
        teacher: Teacher,
        prompts: dict[str, PromptSet],
        out: str | Path,
        config: DatagenConfig,
        *,
        instructions: dict[str, list[str]],
        grounding: GroundingChecker | None = None,
    ) -> None:
        self.annotations = annotations
        self.teacher = teacher
        self.prompts = prompts
        self.paths = OutputPaths(Path(out))
        self.config = config
        self.instructions = instructions
        self.grounding = grounding
        self.stats = RunStats()
        self._any_success = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")

    # ------------------------------------------------------------------------------------------------ planning
    def items(self) -> list[_Item]:
        images = (
            self.annotations.images[: self.config.limit] if self.config.limit else self.annotations.images
        )
        return [
            _Item(f"{im.image_id}:{flavor}", im, flavor, order)
            for order, (im, flavor) in enumerate((im, f) for im in images for f in self.config.flavors)
        ]

    def _rng(self, item: _Item, purpose: int) -> np.random.Generator:
        return np.random.default_rng(
            [self.config.seed, item.image.image_id, FLAVORS.index(item.flavor), purpose]
        )

    # ------------------------------------------------------------------------------------------------- running
    async def run(self) -> RunStats:
        started = time.perf_counter()
        self.paths.out.parent.mkdir(parents=True, exist_ok=True)
        journal = Journal(self.paths.journal)
        rejects = JsonlAppender(self.paths.rejects, fsync=False)
        items = self.items()
        self.stats.items_total = len(items)
        todo = []
        for item in items:
            if item.key in journal.done:
                self.stats.items_already_done += 1
            elif not self._context(item):
                self.stats.items_no_context += 1
            else:
                todo.append(item)
        try:
            await self._run_workers(todo, journal, rejects)
        finally:
            self._writer.shutdown(wait=True)
            journal.close()
            rejects.close()
            await self.teacher.aclose()
            self.stats.dataset_records = compile_dataset(self.paths, items)
            self.stats.seconds = time.perf_counter() - started
            self.paths.stats.write_text(json.dumps(self.stats.to_dict(), indent=1))
        return self.stats

    def _context(self, item: _Item) -> str:
        prompt = self.prompts[item.flavor]
        return build_context(item.image, captions=prompt.use_captions, boxes=prompt.use_boxes)

    async def _run_workers(self, todo: list[_Item], journal: Journal, rejects: JsonlAppender) -> None:
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        for item in todo:
            queue.put_nowait(item)
        progress = _progress(len(todo), self.config.progress)
        workers = [
            asyncio.create_task(self._worker(queue, journal, rejects, progress))
            for _ in range(min(self.config.concurrency, max(1, len(todo))))
        ]
        try:
            results = await asyncio.gather(*workers, return_exceptions=True)
        finally:
            for w in workers:
                w.cancel()
            progress.close()
        self.stats.items_not_started = queue.qsize()
        fatal = next((r for r in results if isinstance(r, (FatalTeacherError, VistuneError))), None)
        if fatal is not None:
            self.stats.stopped_by = str(fatal)
            raise fatal
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _worker(
        self, queue: asyncio.Queue[_Item], journal: Journal, rejects: JsonlAppender, progress: tqdm
    ) -> None:
        while not queue.empty():
            if self.config.max_tokens_total is not None and self.stats.tokens >= self.config.max_tokens_total:
                self.stats.budget_reached = True
                return
            if self.stats.stopped_by is not None:
                return
            item = queue.get_nowait()
            try:
                await self._process(item, journal, rejects)
            except FatalTeacherError as err:
                self.stats.stopped_by = str(err)  # tells the other workers to stop taking items
                queue.put_nowait(item)  # not done: counts as not started
                raise
            progress.update(1)
            progress.set_postfix(retries=self.stats.retries, rejected=self.stats.rejected, refresh=False)

    async def _process(self, item: _Item, journal: Journal, rejects: JsonlAppender) -> None:
        context = self._context(item)
        messages = self.prompts[item.flavor].messages(context)
        detail_rng = self._rng(item, 1)
        instruction = self._pick_instruction(item, detail_rng)
        for attempt in range(self.config.max_rejects + 1):
            request = TeacherRequest(item.key, item.flavor, messages, item.image, attempt)
            try:
                reply = await self._request(request)
            except TeacherRequestError as err:
                self._fail(item, f"request failed: {err}")
                return
            try:
                pairs = parse_reply(item.flavor, reply.text, instruction=instruction)
                flags = self._ground(item, pairs)
            except RejectedReply as rejected:
                self.stats.rejected += 1
                rejects.append(
                    {"key": item.key, "attempt": attempt, "reason": rejected.reason, "reply": reply.text}
                )
                continue
            record = make_record(item.image, item.flavor, pairs, self._rng(item, 0))
            entry = {"key": item.key, "record": record, "attempt": attempt, "grounding": flags}
            entry["usage"] = {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
            }
            # fsync takes milliseconds: done in one writer thread (serial, in completion order), so the event
            # loop keeps other requests moving meanwhile. The key counts as done only once the write returned.
            await asyncio.get_running_loop().run_in_executor(self._writer, journal.append, entry)
            self.stats.items_done += 1
            self.stats.done_per_flavor[item.flavor] += 1
            return
        self._fail(item, f"{self.config.max_rejects + 1} replies rejected (see {self.paths.rejects.name})")

    def _pick_instruction(self, item: _Item, rng: np.random.Generator) -> str | None:
        if item.flavor != "detail":
            return None
        options = self.instructions["detail"]
        return options[int(rng.integers(len(options)))]

    def _ground(self, item: _Item, pairs: list[tuple[str, str]]) -> list[str]:
        """Grounding issues of the answers (questions may ask about absent things: "Is there a dog?" "No.")."""
        if self.grounding is None or self.config.grounding == "off":
            return []
        issues = self.grounding.check("\n".join(a for _, a in pairs), item.image)
        if issues:
            self.stats.grounding_flagged[item.flavor] += 1
            if self.config.grounding == "drop":
                raise RejectedReply("grounding: " + "; ".join(issues))
        return issues

    def _fail(self, item: _Item, reason: str) -> None:
        self.stats.items_failed += 1
        self.stats.failures.append(f"{item.key}: {reason}")

    async def _request(self, request: TeacherRequest) -> TeacherReply:
        """One reply, retrying transient failures with backoff + jitter and honoring Retry-After."""
        config = self.config
        for retry in range(config.max_retries + 1):
            self.stats.requests += 1
            try:
                reply = await asyncio.wait_for(self.teacher.complete(request), config.request_timeout)
            except (TeacherRequestError, asyncio.TimeoutError) as err:
                if isinstance(err, asyncio.TimeoutError):
                    err = TeacherRequestError(f"no reply within {config.request_timeout:g} s")
                if not err.retryable or retry == config.max_retries:
                    self._maybe_unreachable(err)
                    raise err from None
                self.stats.retries += 1
                await asyncio.sleep(self._delay(retry, err.retry_after))
                continue
            self._any_success = True
            self.stats.prompt_tokens += reply.prompt_tokens
            self.stats.completion_tokens += reply.completion_tokens
            return reply
        raise AssertionError("unreachable")

    def _delay(self, retry: int, retry_after: float | None) -> float:
        backoff = random.uniform(0, min(self.config.backoff_max, self.config.backoff_base * 2**retry))
        if retry_after is None:
            return backoff
        if retry_after > self.config.retry_after_max:
            raise TeacherRequestError(
                f"Retry-After {retry_after:g} s exceeds {self.config.retry_after_max:g} s"
            )
        return max(retry_after, backoff)

    def _maybe_unreachable(self, err: TeacherRequestError) -> None:
        """Connection errors before any success mean a wrong URL or a server that is down: stop, don't grind."""
        if err.connection and not self._any_success:
            endpoint = getattr(self.teacher, "base_url", "the teacher endpoint")
            raise FatalTeacherError(
                f"cannot reach {endpoint} ({err}); check --base-url and that the server is running"
            )


def _progress(total: int, enabled: bool) -> tqdm:
    return tqdm(total=total, desc="datagen", unit="item", disable=not enabled, dynamic_ncols=True)


def compile_dataset(paths: OutputPaths, items: list[_Item]) -> int:
    """Write the LLaVA-Instruct JSON from the journal, in annotation order; returns the number of records."""
    done = {entry["key"]: entry["record"] for entry in read_jsonl(paths.journal)}
    order = {item.key: item.order for item in items}
    keys = sorted(done, key=lambda k: (order.get(k, len(order)), k))  # keys from a wider earlier run go last
    records = [done[k] for k in keys]
    tmp = paths.out.with_name(paths.out.name + ".tmp")
    tmp.write_text(json.dumps(records, indent=1, ensure_ascii=False))
    os.replace(tmp, paths.out)
    return len(records)


def run_datagen(
    annotations: AnnotationSet,
    teacher: Teacher,
    prompts: dict[str, PromptSet],
    out: str | Path,
    config: DatagenConfig,
    *,
    instructions: dict[str, list[str]],
    grounding: GroundingChecker | None = None,
) -> RunStats:
    """Run the pipeline to completion (or to the token budget); see the module docstring."""
    pipeline = Pipeline(
        annotations, teacher, prompts, out, config, instructions=instructions, grounding=grounding
    )
    return asyncio.run(pipeline.run())
