"""`vistune data preview`: the real command on a small LLaVA JSON file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vistune.cli import app
from vistune.text.tokenize import IGNORE_INDEX, tokenize_conversation

RECORDS = [
    {
        "id": "r1",
        "image": "x.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the picture?"},
            {"from": "gpt", "value": "A red circle."},
            {"from": "human", "value": "What color is the square?"},
            {"from": "gpt", "value": "Blue."},
        ],
    },
    {
        "id": "r2",
        "conversations": [{"from": "human", "value": "How many?"}, {"from": "gpt", "value": "Two."}],
    },
]


@pytest.fixture()
def data_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(RECORDS))
    return path


def invoke(*args: str):
    result = CliRunner().invoke(app, ["data", "preview", *map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_json_output_is_exactly_what_training_sees(data_file, tiny_tokenizer_dir, tiny_tokenizer):
    out = invoke(data_file, "--tokenizer", tiny_tokenizer_dir, "--template", "vicuna_v1", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == ["r1", "r2"]
    for row, record in zip(rows, RECORDS, strict=True):
        expected = tokenize_conversation(
            record["conversations"], tiny_tokenizer, "vicuna_v1", num_image_tokens=1
        )
        assert row["input_ids"] == expected.input_ids and row["labels"] == expected.labels
    assert rows[0]["input_ids"].count(-200) == 1 and rows[0]["num_images"] == 1


def test_human_view_marks_supervised_text_and_images(data_file, tiny_tokenizer_dir):
    out = invoke(data_file, "--tokenizer", tiny_tokenizer_dir, "--template", "v0", "--num-image-tokens", "7")
    assert "── record r1:" in out and "1 image(s)" in out
    assert "Human: <image×7>\nWhat is in the picture?###Assistant:⟦ A red circle.###⟧Human:" in out
    assert "⟦ Blue.###⟧" in out and "⟦ Two.###⟧" in out
    assert "2 records" in out and "(template v0, 7 tokens per image)" in out


def test_limit(data_file, tiny_tokenizer_dir):
    out = invoke(
        data_file, "--tokenizer", tiny_tokenizer_dir, "--template", "plain", "--json", "--limit", "1"
    )
    assert len(out.splitlines()) == 1


def test_truncated_record_is_flagged_all_masked(data_file, tiny_tokenizer_dir):
    out = invoke(
        data_file, "--tokenizer", tiny_tokenizer_dir, "--template", "v0", "--max-length", "10", "--json"
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert all(r["truncated"] and len(r["input_ids"]) == 10 for r in rows)
    assert all(set(r["labels"]) == {IGNORE_INDEX} and "all labels are masked" in r["error"] for r in rows)


def test_model_dir_supplies_template_and_image_tokens(data_file, tmp_path, tiny_tokenizer):
    model = tmp_path / "model"
    tiny_tokenizer.save_pretrained(str(model))
    config = {"format": "vistune", "template": "chatml", "image_token_id": -7, "num_image_tokens": 3}
    (model / "config.json").write_text(json.dumps(config))
    rows = [json.loads(line) for line in invoke(data_file, "--model", model, "--json").splitlines()]
    assert rows[0]["input_ids"].count(-7) == 3
    assert tiny_tokenizer.convert_tokens_to_ids("<|im_end|>") in [
        t for t in rows[0]["labels"] if t != IGNORE_INDEX
    ]


def test_llava_hf_dir_counts_patches(data_file, tmp_path, tiny_tokenizer):
    model = tmp_path / "hf"
    tiny_tokenizer.save_pretrained(str(model))
    config = {
        "model_type": "llava",
        "image_token_index": 5,
        "vision_feature_select_strategy": "default",
        "vision_config": {"model_type": "clip_vision_model", "image_size": 32, "patch_size": 8},
    }
    (model / "config.json").write_text(json.dumps(config))
    out = invoke(data_file, "--model", model, "--template", "vicuna_v1", "--json", "--limit", "1")
    assert json.loads(out)["input_ids"].count(5) == 16  # (32 / 8)^2 patches, CLS dropped


def run_vistune(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    cmd = [sys.executable, "-c", "from vistune.cli import main; main()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.integration
def test_user_errors_exit_1_with_one_clear_message(data_file, tiny_tokenizer_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps([{"id": "z", "image": "a.jpg", "conversations": RECORDS[1]["conversations"][:1]}])
    )
    cases = [
        (
            (data_file, "--tokenizer", tiny_tokenizer_dir, "--template", "nope"),
            "unknown conversation template",
        ),
        ((bad, "--tokenizer", tiny_tokenizer_dir, "--template", "v0"), f"{bad}: record 0 (id z)"),
        ((data_file, "--template", "v0"), "exactly one of --model DIR or --tokenizer DIR"),
        ((data_file, "--model", tmp_path, "--template", "v0"), "not a model directory"),
    ]
    for args, message in cases:
        result = run_vistune("data", "preview", *args)
        assert result.returncode == 1, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
