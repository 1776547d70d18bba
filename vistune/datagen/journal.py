"""Append-only JSONL files that survive `kill -9`: the exactly-once journal and the rejects log.

Each line is written whole, flushed and fsynced before the call returns, so once `append` returns the line is on
disk. A crash can at worst leave one partial last line; opening the file again cuts it off (its request is simply
redone), so a rerun never sees half a record and never appends after a torn line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vistune.errors import VistuneError


class JsonlAppender:
    """An append-only JSONL file; every `append` is durable when it returns."""

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_torn_tail(self.path)
        self._file = open(self.path, "ab")  # noqa: SIM115 (kept open for the run; closed in close())
        self._fsync = fsync

    def append(self, entry: dict[str, Any]) -> None:
        self._file.write((json.dumps(entry, ensure_ascii=False) + "\n").encode())
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class Journal(JsonlAppender):
    """Finished results keyed by `entry["key"]`; a key is written at most once, ever."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.done: dict[str, dict[str, Any]] = {entry["key"]: entry for entry in read_jsonl(self.path)}

    def append(self, entry: dict[str, Any]) -> None:
        key = entry["key"]
        if key in self.done:  # a logic error, not a user error: two tasks must never own one key
            raise RuntimeError(f"journal {self.path}: key {key!r} written twice")
        super().append(entry)
        self.done[key] = entry


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete lines of a JSONL file (a torn last line is ignored). Missing file -> []."""
    path = Path(path)
    if not path.is_file():
        return []
    entries = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):  # the piece after the last newline is torn or empty
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            raise VistuneError(
                f"{path}, line {number}, is not valid JSON; the file was edited or corrupted. Fix or delete "
                "that line (its item will be generated again)"
            ) from None
    return entries


def _drop_torn_tail(path: Path) -> None:
    """Cut a partial last line (a write interrupted by a crash) so the next append starts on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # 0 when there is no complete line at all
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
