"""The journal survives torn writes and refuses to write a key twice."""

from __future__ import annotations

import pytest

from vistune.datagen.journal import Journal, read_jsonl
from vistune.errors import VistuneError


def test_torn_last_line_is_cut_and_appending_continues(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append({"key": "1:detail", "record": {}})
    journal.close()
    with open(path, "ab") as f:
        f.write(b'{"key": "2:detail", "rec')  # what kill -9 mid-write leaves
    journal = Journal(path)
    assert set(journal.done) == {"1:detail"}
    journal.append({"key": "2:detail", "record": {}})
    journal.close()
    assert [e["key"] for e in read_jsonl(path)] == ["1:detail", "2:detail"]


def test_a_key_is_never_written_twice(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"key": "1:detail"})
    with pytest.raises(RuntimeError, match="written twice"):
        journal.append({"key": "1:detail"})
    journal.close()
    assert len(read_jsonl(tmp_path / "j.jsonl")) == 1


def test_corrupt_middle_line_names_the_line(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(VistuneError, match="line 2"):
        Journal(path)
