"""Fixtures for datagen tests: a tiny miniature world on disk (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vistune.world import build_world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """A 6-image world at 32 px: annotations/{captions,instances,ground_truth}_train.json and train/*.png."""
    root = tmp_path_factory.mktemp("datagen_world")
    build_world(root, {"train": 6}, seed=11, size=32)
    return root


@pytest.fixture()
def world_files(tiny_world):
    ann = tiny_world / "annotations"
    return {
        "captions": ann / "captions_train.json",
        "instances": ann / "instances_train.json",
        "ground_truth": ann / "ground_truth_train.json",
        "images": tiny_world / "train",
    }
