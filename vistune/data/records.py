"""LLaVA-format records: reading JSON (a list) or JSONL files and validating each record.

A record looks like
    {"id": "000123", "image": "coco/000123.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"}, {"from": "gpt", "value": "A cat."}]}
`image` may also be a list of paths (several images) or absent (a text-only record). Every error names the file,
the record index and id, and what to fix.

Validation rules:
- `conversations`: a non-empty list of {"from", "value"} turns; "human"/"gpt" (or "user"/"assistant") alternate,
  starting with human and ending with gpt; an optional leading "system" turn; every value a non-empty string.
- `<image>` appears only in human turns, as many times as there are images.
- LLaVA data sometimes has an image but no `<image>` in the text. As LLaVA's `preprocess_multimodal` does, one
  `<image>\\n` per image is then inserted at the start of the first human turn (and the record says so in
  `inserted_placeholders`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vistune.errors import VistuneError
from vistune.text.templates import IMAGE_PLACEHOLDER

_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "system": "system"}


@dataclass
class Record:
    """A validated LLaVA record. `conversations` keeps LLaVA's form, roles normalized to human / gpt / system."""

    id: str
    images: list[str]
    conversations: list[dict[str, str]]
    index: int = 0
    source: str = ""
    inserted_placeholders: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # other keys of the record, kept as they are


def read_records(path: str | Path, *, limit: int | None = None) -> list[Record]:
    """Read and validate the records of a LLaVA JSON (a list of records) or JSONL (one record a line) file."""
    path = Path(path)
    if not path.is_file():
        raise VistuneError(f"{path}: data file does not exist")
    raws = _read_jsonl(path) if path.suffix == ".jsonl" else _read_json(path)
    if limit is not None:
        raws = raws[:limit]
    return [parse_record(raw, index=i, source=str(path)) for i, raw in enumerate(raws)]


def parse_record(raw: Any, *, index: int = 0, source: str = "<records>") -> Record:
    """Validate one raw record (a dict from JSON); raises VistuneError naming source, index, id and the fix."""
    if not isinstance(raw, dict):
        raise VistuneError(f"{source}: record {index}: expected an object, got {type(raw).__name__}")
    record_id = str(raw["id"]) if raw.get("id") is not None else f"#{index}"
    where = f"{source}: record {index} (id {record_id})"
    images = _images(raw.get("image"), where)
    turns = _turns(raw.get("conversations"), where)
    inserted = _check_placeholders(turns, len(images), where)
    extra = {k: v for k, v in raw.items() if k not in ("id", "image", "conversations")}
    return Record(record_id, images, turns, index, source, inserted, extra)


def _read_json(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise VistuneError(
            f"{path}: not valid JSON ({err}); a LLaVA data file is a JSON list of records"
        ) from None
    except UnicodeDecodeError:
        raise VistuneError(f"{path}: not UTF-8 text; a LLaVA data file is a JSON list of records") from None
    if not isinstance(data, list):
        raise VistuneError(
            f"{path}: the top level is a {type(data).__name__}, expected a list of records "
            "(use a .jsonl file for one record per line)"
        )
    return data


def _read_jsonl(path: Path) -> list[Any]:
    raws = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raws.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise VistuneError(
                f"{path}:{lineno}: not valid JSON ({err}); a .jsonl file has one record per line"
            ) from None
    return raws


def _images(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    images = [value] if isinstance(value, str) else value
    if not isinstance(images, list) or not all(isinstance(x, str) and x.strip() for x in images):
        raise VistuneError(f"{where}: 'image' must be a path string or a list of path strings, got {value!r}")
    return list(images)


def _turns(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise VistuneError(f"{where}: 'conversations' must be a non-empty list of {{'from', 'value'}} turns")
    turns: list[dict[str, str]] = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict) or turn.get("from") not in _ROLES:
            got = turn.get("from") if isinstance(turn, dict) else turn
            raise VistuneError(
                f"{where}, turn {i}: 'from' must be 'human' or 'gpt' (or a leading 'system'), got {got!r}"
            )
        text = turn.get("value")
        if not isinstance(text, str) or not text.strip():
            raise VistuneError(f"{where}, turn {i}: 'value' must be a non-empty string, got {text!r}")
        turns.append({"from": _ROLES[turn["from"]], "value": text})
    _check_roles(turns, where)
    return turns


def _check_roles(turns: list[dict[str, str]], where: str) -> None:
    offset = 1 if turns[0]["from"] == "system" else 0
    body = turns[offset:]
    for i, turn in enumerate(body):
        expected = "human" if i % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise VistuneError(
                f"{where}, turn {i + offset}: expected a {expected} turn, got {turn['from']}; turns must alternate "
                "human, gpt, human, gpt, ... (a system turn may only come first)"
            )
    if not body or body[-1]["from"] != "gpt":
        raise VistuneError(
            f"{where}: the last turn must be a gpt reply (there is nothing to train on after it)"
        )


def _check_placeholders(turns: list[dict[str, str]], num_images: int, where: str) -> bool:
    """Check `<image>` counts; insert LLaVA's leading `<image>\\n` when a record has images but no placeholder."""
    for i, turn in enumerate(turns):
        if turn["from"] != "human" and IMAGE_PLACEHOLDER in turn["value"]:
            raise VistuneError(f"{where}, turn {i}: {IMAGE_PLACEHOLDER} may only appear in human turns")
    count = sum(t["value"].count(IMAGE_PLACEHOLDER) for t in turns)
    if count == num_images:
        return False
    if count == 0:
        first = next(t for t in turns if t["from"] == "human")
        first["value"] = f"{IMAGE_PLACEHOLDER}\n" * num_images + first["value"]
        return True
    raise VistuneError(
        f"{where}: the text has {count} {IMAGE_PLACEHOLDER} placeholder(s) but the record has {num_images} image(s); "
        f"put one {IMAGE_PLACEHOLDER} in a human turn for each image"
    )
