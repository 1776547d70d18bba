"""The frozen-vision feature cache: compute the vision tower's selected-layer features once, train from them.

In both LLaVA stages the vision tower is frozen and preprocessing is deterministic, so every epoch recomputes the
same features. The cache stores them in safetensors shards under a directory named by a fingerprint of everything
that determines them — the tower (its config, select layer/feature and every weight and buffer), the
preprocessing (size, mean/std, aspect handling) and the storage dtype — and indexes rows by a hash of each image
file's bytes. Change any of those and the features are recomputed: a new tower or preprocessing gets a new
directory, an edited image gets a new content hash. Nothing is ever looked up by file name alone.

    <cache_dir>/<fingerprint>/meta.json           what the fingerprint covers (for humans)
    <cache_dir>/<fingerprint>/index.json          {image sha256: [shard file, row]}
    <cache_dir>/<fingerprint>/shard_00000.safetensors   "features": [n, T, Dv]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vistune.config import to_dict
from vistune.errors import VistuneError

SHARD_BYTES = 1 << 30  # ~1 GiB per shard: few open files, and each write is bounded
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe_preprocessing(image_processor: Any) -> dict[str, Any]:
    """A JSON-able description of an image processor's settings (everything that changes its output)."""
    if hasattr(image_processor, "to_dict"):
        return image_processor.to_dict()
    if dataclasses.is_dataclass(image_processor):
        return dataclasses.asdict(image_processor)
    return {
        "class": type(image_processor).__qualname__,
        **{k: v for k, v in sorted(vars(image_processor).items()) if not k.startswith("_")},
    }


def tower_fingerprint(model: Any, image_processor: Any, dtype: str) -> tuple[str, dict[str, Any]]:
    """sha256 over the tower's config, weights and buffers, the preprocessing and the storage dtype."""
    meta = {
        "vision": to_dict(dataclasses.replace(model.config.vision, pretrained=None)),
        "image_aspect": model.config.image_aspect,
        "preprocessing": describe_preprocessing(image_processor),
        "dtype": dtype,
        "format": 1,
    }
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, default=repr).encode())
    # state_dict() leaves out non-persistent buffers, which shape the features all the same (the world encoder's
    # position codes are one): hash every parameter and buffer by name.
    tensors = dict(model.vision.named_parameters()) | dict(model.vision.named_buffers())
    for name, tensor in sorted(tensors.items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        # 1-D before the byte view: a 0-dim buffer (BatchNorm's num_batches_tracked) has none of its own.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:24], meta


class FeatureCache:
    """Read side: `get(path) -> [T, Dv]` for an image whose features the cache holds."""

    def __init__(self, root: Path, index: dict[str, list], path_keys: dict[str, str]) -> None:
        self.root = root
        self.index = index
        self.path_keys = path_keys  # image path -> content hash (computed when the cache was opened)
        self._handles: dict[str, Any] = {}

    def __contains__(self, path: str) -> bool:
        key = self.path_keys.get(str(path))
        return key is not None and key in self.index

    def get(self, path: str | Path) -> torch.Tensor:
        key = self.path_keys.get(str(path))
        if key is None or key not in self.index:
            raise KeyError(f"{path} is not in the feature cache {self.root}")
        shard, row = self.index[key]
        return self._slice(shard)[row : row + 1][0]

    def _slice(self, shard: str) -> Any:
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.root / shard), framework="pt").get_slice("features")
        return self._handles[shard]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the (memory-mapped) shards
        return {**self.__dict__, "_handles": {}}


def open_feature_cache(
    image_paths: Sequence[str],
    *,
    model: Any,
    image_processor: Callable[[list[Any]], torch.Tensor],
    load_image: Callable[[str], Any],
    cache_dir: str | Path,
    dtype: str = "float32",
    batch_size: int = 32,
    on_bad_image: Callable[[str, Exception], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FeatureCache:
    """Open the cache for these images, computing the features it lacks.

    on_bad_image(path, error): called for an image that cannot be read (the caller decides: skip-and-count, or
    raise). Without it, the error propagates.
    """
    if dtype not in _DTYPES:
        raise VistuneError(f"data.feature_cache_dtype={dtype!r}: use one of {', '.join(_DTYPES)}")
    fingerprint, meta = tower_fingerprint(model, image_processor, dtype)
    root = Path(cache_dir) / fingerprint
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=repr))
    index_file = root / "index.json"
    index: dict[str, list] = json.loads(index_file.read_text()) if index_file.is_file() else {}
    path_keys = {p: file_sha256(p) for p in dict.fromkeys(map(str, image_paths)) if os.path.isfile(p)}
    todo, seen = [], set()
    for path, key in path_keys.items():
        if key not in index and key not in seen:  # identical files (same bytes) are computed once
            todo.append(path)
            seen.add(key)
    if todo:
        _compute_missing(
            todo,
            path_keys,
            index,
            root,
            model,
            image_processor,
            load_image,
            _DTYPES[dtype],
            batch_size,
            on_bad_image,
            progress,
        )
        _atomic_write_text(index_file, json.dumps(index))
    return FeatureCache(root, index, path_keys)


def _compute_missing(
    todo: list[str],
    path_keys: dict[str, str],
    index: dict[str, list],
    root: Path,
    model: Any,
    image_processor: Callable[[list[Any]], torch.Tensor],
    load_image: Callable[[str], Any],
    dtype: torch.dtype,
    batch_size: int,
    on_bad_image: Callable[[str, Exception], None] | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    shard_no = len({shard for shard, _ in index.values()})
    pending: list[tuple[str, torch.Tensor]] = []  # (content hash, [T, Dv]) not yet written
    rows_per_shard: int | None = None
    device = next(model.vision.parameters()).device
    for start in range(0, len(todo), batch_size):
        images, keys = [], []
        for path in todo[start : start + batch_size]:
            try:
                images.append(load_image(path))
                keys.append(path_keys[path])
            except VistuneError as err:
                if on_bad_image is None:
                    raise
                on_bad_image(path, err)
        if images:
            with torch.no_grad():
                pixels = image_processor(images).to(device)
                feats = model.vision_features(pixels).to("cpu", dtype)  # [n, T, Dv]
            pending += zip(keys, feats, strict=True)
            rows_per_shard = rows_per_shard or max(1, SHARD_BYTES // feats[0].nbytes)
        while rows_per_shard and len(pending) >= rows_per_shard:
            _write_shard(root, shard_no, pending[:rows_per_shard], index)
            pending, shard_no = pending[rows_per_shard:], shard_no + 1
        if progress:
            progress(min(start + batch_size, len(todo)), len(todo))
    if pending:
        _write_shard(root, shard_no, pending, index)


def _write_shard(
    root: Path, shard_no: int, rows: list[tuple[str, torch.Tensor]], index: dict[str, list]
) -> None:
    name = f"shard_{shard_no:05d}.safetensors"
    tmp = root / (name + ".tmp")
    save_file({"features": torch.stack([f for _, f in rows]).contiguous()}, str(tmp))  # [n, T, Dv]
    os.replace(tmp, root / name)
    for row, (key, _) in enumerate(rows):
        index[key] = [name, row]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
