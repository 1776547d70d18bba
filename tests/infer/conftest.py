"""Fixtures for inference tests: a tiny random model saved as a real vistune model directory."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from vistune.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"), template="vicuna_v1", seed=3)


@pytest.fixture(scope="session")
def loaded(tiny_model_dir):
    from vistune.model.io import load_pretrained

    return load_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def image_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("images") / "noise.png"
    Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(path)
    return path
