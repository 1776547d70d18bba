"""Shared fixtures: tiny local tokenizers and models. Nothing here touches the network."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    from vistune.testing import make_tiny_tokenizer

    out = tmp_path_factory.mktemp("tiny_tokenizer")
    make_tiny_tokenizer(out)
    return out


@pytest.fixture()
def tiny_tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
