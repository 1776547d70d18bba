"""`vistune datagen` end to end in-process: the rule-based world teacher, stage-1 data, and bad input exits."""

from __future__ import annotations

import json
import sys

import pytest

from vistune.cli import main
from vistune.data.records import read_records


def _vistune(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["vistune", *map(str, args)])
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _inputs(world_files):
    return [
        "--captions",
        world_files["captions"],
        "--instances",
        world_files["instances"],
        "--images",
        world_files["images"],
    ]


def test_world_teacher_writes_valid_llava_data(monkeypatch, capsys, world_files, tmp_path):
    out = tmp_path / "data.json"
    assert (
        _vistune(
            monkeypatch, "datagen", *_inputs(world_files), "--teacher", "world", "--out", out, "--no-progress"
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "18 generated" in printed and "grounding flagged per flavor: none" in printed
    records = read_records(out)  # the training side's validator
    assert len(records) == 18 and {r.id.split("_", 1)[1] for r in records} == {
        "conversation",
        "detail",
        "complex_reasoning",
    }
    assert all("<image>" in r.conversations[0]["value"] for r in records)
    stats = json.loads((tmp_path / "data.stats.json").read_text())
    assert stats["items_done"] == 18 and stats["completion_tokens"] > 0
    assert (
        _vistune(
            monkeypatch, "datagen", *_inputs(world_files), "--teacher", "world", "--out", out, "--no-progress"
        )
        == 0
    )
    assert "0 generated, 18 already done" in capsys.readouterr().out


def test_stage1_from_captions(monkeypatch, world_files, tmp_path):
    out = tmp_path / "stage1.json"
    assert (
        _vistune(monkeypatch, "datagen", "--captions", world_files["captions"], "--stage1", "--out", out) == 0
    )
    records = read_records(out)
    assert len(records) == 6
    captions = {c["caption"] for c in json.loads(world_files["captions"].read_text())["annotations"]}
    assert all(r.conversations[1]["value"] in captions for r in records)
    assert (
        _vistune(
            monkeypatch,
            "datagen",
            "--captions",
            world_files["captions"],
            "--stage1",
            "--all-captions",
            "--out",
            out,
        )
        == 0
    )
    assert len(read_records(out)) == len(captions)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--flavors", "conversation,summary"], "unknown flavor(s) summary"),
        (["--teacher", "oracle"], "unknown --teacher 'oracle'"),
        (["--teacher", "openai"], "--teacher openai needs --model"),
        (["--teacher", "world", "--grounding", "maybe"], "--grounding must be drop, flag or off"),
    ],
)
def test_bad_options_exit_nonzero_with_one_clear_message(
    monkeypatch, capsys, world_files, tmp_path, extra, message
):
    code = _vistune(monkeypatch, "datagen", *_inputs(world_files), "--out", tmp_path / "d.json", *extra)
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err


def test_missing_files_exit_nonzero(monkeypatch, capsys, world_files, tmp_path):
    code = _vistune(
        monkeypatch,
        "datagen",
        "--captions",
        tmp_path / "nope.json",
        "--teacher",
        "world",
        "--out",
        tmp_path / "d.json",
    )
    assert code == 1 and "nope.json does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    code = _vistune(
        monkeypatch,
        "datagen",
        "--captions",
        world_files["captions"],
        "--images",
        empty,
        "--teacher",
        "world",
        "--out",
        tmp_path / "d.json",
    )
    assert code == 1 and "6 of 6 image ids have no file" in capsys.readouterr().err
