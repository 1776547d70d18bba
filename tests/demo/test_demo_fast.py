"""`vistune demo --fast` end to end: it must run, write its report, and learn through the image path."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vistune.cli import app


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(app, ["demo", "--fast", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output, json.loads((out / "results.json").read_text())


def _baseline(closed: dict) -> float:
    return sum(closed["majority_baseline"][t] * closed["counts"][t] for t in closed["counts"]) / closed["n"]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 1 min 55 s measured on the idle 2-core machine; 7.3 min beside other jobs
def test_fast_demo_runs_reports_and_learns_counting(fast_run):
    out, output, results = fast_run
    assert "vistune chat --model" in output
    report = (out / "report.md").read_text()
    assert (
        "Held-out exact match" in report
        and (out / "loss_curves.png").is_file()
        and (out / "examples.png").is_file()
    )
    assert f"## Chat with the model\n\n```\nvistune chat --model {results['model_dir']} --image " in report
    closed = results["scores"]["closed"]
    # Counting needs the image (no text says how many shapes an image has) and is what the fast budget learns:
    # measured 67% (short answers) and 62% (sentence answers) against a 45% majority baseline, 100 held-out images
    # (`vistune demo --fast --threads 1`, the global token from the cell tokens).
    assert closed["accuracy"]["count"] > closed["majority_baseline"]["count"] + 0.1, closed
    sentence = results["scores"]["closed_sentence"]
    assert sentence["accuracy"]["count"] > sentence["majority_baseline"]["count"] + 0.1, sentence


@pytest.mark.slow
def test_stages_read_the_features_the_encoders_process_precomputed(fast_run):
    """`precompute_features` fills the cache under the fingerprint stage 1 and 2 look up: one tower, one directory
    (a fingerprint that differed would make the stages compute and store a second copy)."""
    towers = [p for p in (fast_run[0] / "feature_cache").iterdir() if p.is_dir()]
    assert len(towers) == 1, towers
    from vistune.data.features import file_sha256

    train_images = {file_sha256(p) for p in (fast_run[0] / "world" / "train").glob("*.png")}
    assert set(json.loads((towers[0] / "index.json").read_text())) == train_images  # keyed by content


@pytest.mark.slow
def test_one_word_lookup_data_holds_the_lookup_types_short_answers(fast_run):
    """data/lookup_short.json (stage 2's phase 1b in the full preset): the lookup questions, one-word answers."""
    from vistune.eval.world import SHORT_ANSWER_PROMPT

    data = fast_run[0] / "data"
    short = json.loads((data / "lookup_short.json").read_text())
    lookup = json.loads((data / "lookup.json").read_text())
    assert len(short) == len(lookup) > 0  # the same questions, in the other answer style
    prompts = [r["conversations"][0]["value"] for r in short]
    # the image after the question and its instruction (DemoSettings.image_placement, seventeenth round)
    assert all(p.endswith(f"{SHORT_ANSWER_PROMPT}\n<image>") and "How many" not in p for p in prompts)
    assert all(len(r["conversations"][1]["value"].split()) <= 2 for r in short)  # "red", "top left", "no"


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.xfail(
    reason="issue 5 target not reached by the fast preset: its 150 lookup steps are too few for the lookup (color "
    "9-13% in both answer styles); the full demo reads every type (96.1% short / 96.4% sentence in pre20; 94.3-97.0% "
    "in four harness runs, sample orders 0-3) but not per-shape counts above one (docs/demo.md, seventeenth round)",
    strict=False,
)
def test_fast_demo_learns_well_above_chance_overall(fast_run):
    closed = fast_run[2]["scores"]["closed"]
    assert closed["overall"] > _baseline(closed) + 0.25, closed
