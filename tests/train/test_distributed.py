"""torchrun with 2 CPU processes (gloo) gives the loss curve of 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.train.conftest import tiny_config
from vistune.train.config import train_config_from_dict
from vistune.train.trainer import train


@pytest.mark.slow
@pytest.mark.integration
def test_torchrun_two_processes_match_one(tiny_world, tmp_path):
    sections = {"train": {"max_steps": 4, "micro_batch_size": 2}}
    single = train(train_config_from_dict(tiny_config(tiny_world, tmp_path / "one", stage=2, **sections)))

    cfg = tiny_config(tiny_world, tmp_path / "two", stage=2, **sections)
    config_file = tmp_path / "two.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    vistune = shutil.which("vistune", path=os.path.dirname(sys.executable))
    assert torchrun and vistune
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "--no-python",
            vistune,
            "train",
            "--config",
            str(config_file),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    two = [json.loads(x)["loss"] for x in lines if '"loss"' in x]
    assert two == pytest.approx(single.losses, abs=2e-5)
