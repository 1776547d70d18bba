"""torchrun with 2 CPU processes (gloo) gives the loss curve of 1 process with the same global batch: DDP, and
FSDP2 (sharded decoder layers), the latter also stopped and resumed from its sharded-then-gathered checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from train_world import tiny_config

from vistune.train.config import train_config_from_dict
from vistune.train.trainer import train


def _descendants(pid: int) -> list[int]:
    """Process ids below `pid` (from /proc), deepest first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return _descendants_from(children, pid)


def _descendants_from(children: dict[int, list[int]], pid: int) -> list[int]:
    out: list[int] = []
    for child in children.get(pid, []):
        out += [*_descendants_from(children, child), child]
    return out


def _torchrun(config_file, *overrides: str) -> None:
    bin_dir = os.path.dirname(sys.executable)
    torchrun, vistune = shutil.which("torchrun", path=bin_dir), shutil.which("vistune", path=bin_dir)
    assert torchrun and vistune
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "--no-python", vistune, "train"]
    # A session of its own, so that on a timeout torchrun's workers are killed with it, never left orphaned.
    proc = subprocess.Popen(
        [*cmd, "--config", str(config_file), *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        for pid in [*_descendants(proc.pid), proc.pid]:  # workers may sit in sessions of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun did not finish within 300 s")
    assert proc.returncode == 0, stderr[-3000:]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed_zero2", "ddp+shared_prefix"])
def test_torchrun_two_processes_match_one(strategy, tiny_world, tmp_path):
    sections = {"train": {"max_steps": 4, "micro_batch_size": 2}}
    single = train(train_config_from_dict(tiny_config(tiny_world, tmp_path / "one", stage=2, **sections)))

    cfg = tiny_config(tiny_world, tmp_path / "two", stage=2, **sections)
    # +shared_prefix: each micro-batch runs its samples' common prompt prefix once (vicuna_v1's system turn), so
    # the decoder layers run twice per forward: DDP's gradient hooks must still see all of it (FSDP refuses it)
    strategy, _, shared = strategy.partition("+")
    cfg["model"]["share_prompt_prefix"] = bool(shared)
    cfg["train"]["dist"] = {"strategy": strategy}
    if (
        strategy == "deepspeed_zero2"
    ):  # a DeepSpeed ZeRO-2 config, run as FSDP2 without resharding after forward
        cfg["train"]["dist"] = {
            "deepspeed": str(Path(__file__).parents[2] / "configs" / "deepspeed_zero2.json")
        }
    config_file = tmp_path / "two.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    if strategy == "fsdp":  # stop after 2 steps, then the same command resumes
        _torchrun(config_file, "train.stop_after_steps=2")
        assert not (tmp_path / "two" / "projector.safetensors").exists()
    _torchrun(config_file)
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    two = [json.loads(x)["loss"] for x in lines if '"loss"' in x]
    assert two == pytest.approx(single.losses, abs=2e-5)
    assert (tmp_path / "two" / "projector.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.integration
def test_shared_prompt_prefix_under_fsdp_is_refused_with_a_clear_error(tiny_world, tmp_path):
    cfg = tiny_config(tiny_world, tmp_path / "two", stage=2, train={"max_steps": 1, "micro_batch_size": 2})
    cfg["model"]["share_prompt_prefix"] = True
    cfg["train"]["dist"] = {"strategy": "fsdp"}
    config_file = tmp_path / "two.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    with pytest.raises(AssertionError, match="share_prompt_prefix does not work with FSDP"):
        _torchrun(config_file)
