"""LLaVA JSON / JSONL reading and validation: every error names the file, the record index and id, and the fix."""

from __future__ import annotations

import json

import pytest

from vistune.data.records import parse_record, read_records
from vistune.errors import VistuneError


def human(value: str) -> dict[str, str]:
    return {"from": "human", "value": value}


def gpt(value: str) -> dict[str, str]:
    return {"from": "gpt", "value": value}


GOOD = {"id": "a", "image": "x.jpg", "conversations": [human("<image>\nWhat?"), gpt("A cat.")]}


def test_reads_a_json_list(tmp_path):
    path = tmp_path / "d.json"
    text_only = {"id": 7, "conversations": [human("Hi?"), gpt("Hello.")]}
    path.write_text(json.dumps([GOOD, text_only]))
    a, b = read_records(path)
    assert (a.id, a.images, a.index, a.source) == ("a", ["x.jpg"], 0, str(path))
    assert a.conversations == GOOD["conversations"] and not a.inserted_placeholders
    assert (b.id, b.images) == ("7", [])


def test_reads_jsonl_and_limit(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({**GOOD, "id": str(i)}) for i in range(5)) + "\n\n")
    assert [r.id for r in read_records(path)] == ["0", "1", "2", "3", "4"]
    assert [r.id for r in read_records(path, limit=2)] == ["0", "1"]


def test_roles_are_normalized_and_extra_keys_kept():
    raw = {
        "id": "s",
        "conversations": [{"from": "user", "value": "Q"}, {"from": "assistant", "value": "A"}],
        "k": 1,
    }
    record = parse_record(raw)
    assert [t["from"] for t in record.conversations] == ["human", "gpt"]
    assert record.extra == {"k": 1}


def test_multi_image_record():
    raw = {
        "id": "m",
        "image": ["a.jpg", "b.jpg"],
        "conversations": [human("<image> vs <image>?"), gpt("Same.")],
    }
    assert parse_record(raw).images == ["a.jpg", "b.jpg"]


def test_missing_placeholder_is_inserted_like_llava():
    raw = {"id": "n", "image": "x.jpg", "conversations": [human("What is it?"), gpt("A cat.")]}
    record = parse_record(raw)
    assert record.conversations[0]["value"] == "<image>\nWhat is it?" and record.inserted_placeholders
    assert raw["conversations"][0]["value"] == "What is it?", "the caller's dict is not modified"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (
            {"id": "b", "image": "x.jpg", "conversations": [human("<image><image>?"), gpt("A.")]},
            "2 <image>.*1 image",
        ),
        ({"id": "b", "conversations": [human("<image>?"), gpt("A.")]}, "1 <image>.*0 image"),
        (
            {"id": "b", "image": "x.jpg", "conversations": [human("<image>?"), gpt("<image>")]},
            "only.*human turns",
        ),
        ({"id": "b", "conversations": [gpt("A."), human("Q")]}, "turn 0: expected a human turn, got gpt"),
        ({"id": "b", "conversations": [human("Q"), human("Q")]}, "turn 1: expected a gpt turn"),
        ({"id": "b", "conversations": [human("Q"), gpt("A"), human("Q")]}, "last turn must be a gpt reply"),
        ({"id": "b", "conversations": [human("Q"), gpt("  ")]}, "turn 1: 'value' must be a non-empty string"),
        ({"id": "b", "conversations": [human("Q"), {"from": "bot", "value": "A"}]}, "turn 1: 'from' must be"),
        ({"id": "b", "conversations": []}, "'conversations' must be a non-empty list"),
        ({"id": "b", "image": 3, "conversations": [human("Q"), gpt("A")]}, "'image' must be a path string"),
        (
            {"id": "b", "conversations": [human("Q"), {"from": "system", "value": "S"}]},
            "system turn may only",
        ),
    ],
)
def test_bad_records_name_file_index_id_and_fix(raw, match, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([GOOD, raw]))
    with pytest.raises(VistuneError, match=match) as err:
        read_records(path)
    assert f"{path}: record 1 (id b)" in str(err.value)


def test_record_without_id_is_named_by_index():
    with pytest.raises(VistuneError, match=r"record 4 \(id #4\)"):
        parse_record({"conversations": []}, index=4)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("d.json", "[{", "not valid JSON"),
        ("d.json", '{"id": 1}', "top level is a dict, expected a list"),
        ("d.jsonl", '{"id": 1}\n{oops', r"d.jsonl:2: not valid JSON"),
        ("d.json", "[1]", "record 0: expected an object"),
    ],
)
def test_bad_files(name, content, match, tmp_path):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(VistuneError, match=match):
        read_records(path)


def test_missing_file(tmp_path):
    with pytest.raises(VistuneError, match="does not exist"):
        read_records(tmp_path / "nope.json")
