"""Fixtures for model tests: a tiny random model on the tiny local tokenizer (see vistune.testing)."""

from __future__ import annotations

import pytest


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    from vistune.testing import build_tiny_model

    return build_tiny_model(tiny_tokenizer, seed=0)
