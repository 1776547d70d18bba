"""`vistune eval world`: a saved model on a built world -> per-type exact match, baselines, JSON; bad paths -> one
clear message, exit 1."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vistune.cli import app
from vistune.eval.world import QUESTION_TYPES
from vistune.world.build import build_world


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from vistune.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"), template="chatml", seed=3)


def test_eval_world_scores_every_type_and_writes_json(tiny_model_dir, tmp_path):
    world = build_world(tmp_path / "world", {"val": 6}, seed=1, size=32)
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "world",
            "--model",
            str(tiny_model_dir),
            "--world",
            str(world.root),
            "--descriptions",
            "2",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    closed = scores["closed"]
    # Six images, one question of each type where it is well-posed (color/shape need a unique shape/color).
    assert set(closed["accuracy"]) <= set(QUESTION_TYPES) and {"count", "position", "existence"} <= set(
        closed["accuracy"]
    )
    assert closed["counts"]["count"] == closed["counts"]["position"] == 6
    assert closed["n"] == sum(closed["counts"].values())
    assert 0.0 <= closed["overall"] <= 1.0
    assert "descriptions" in scores and "precision" in scores["descriptions"]
    # The same questions again in the sentence style, scored by the attribute the reply names.
    sentence = scores["closed_sentence"]
    assert sentence["counts"] == closed["counts"] and 0.0 <= sentence["overall"] <= 1.0
    assert "closed questions, short answers" in result.output and "sentence answers" in result.output
    for qtype in closed["accuracy"]:
        assert qtype in result.output and "majority baseline" in result.output


def test_eval_world_missing_ground_truth_is_one_clear_error(tiny_model_dir, tmp_path):
    result = CliRunner().invoke(
        app, ["eval", "world", "--model", str(tiny_model_dir), "--world", str(tmp_path / "nowhere")]
    )
    assert result.exit_code == 1
    assert "ground truth file" in result.output and "vistune world build" in result.output
    assert "Traceback" not in result.output
