"""The miniature world: determinism, COCO validity, and that ground truth matches the pixels drawn."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vistune.errors import VistuneError
from vistune.world import (
    COLORS,
    REGIONS,
    SHAPES,
    WorldConfig,
    build_world,
    load_ground_truth,
    render_scene,
    sample_scene,
    scene_for,
)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return build_world(root, {"train": 12, "val": 4}, seed=3, size=64)


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path, world):
    again = build_world(tmp_path / "again", {"train": 12, "val": 4}, seed=3, size=64)
    assert _digest(again.root) == _digest(world.root)
    other = build_world(tmp_path / "other", {"train": 12, "val": 4}, seed=4, size=64)
    assert _digest(other.root) != _digest(world.root)


def test_rendering_in_several_processes_gives_the_same_bytes(tmp_path, world):
    parallel = build_world(tmp_path / "par", {"train": 12, "val": 4}, seed=3, size=64, workers=3)
    assert _digest(parallel.root) == _digest(world.root)
    empty = build_world(tmp_path / "empty", {"train": 0, "val": 2}, seed=3, size=64, workers=2)
    assert json.loads(empty.captions("train").read_text())["images"] == []
    with pytest.raises(VistuneError, match="workers"):
        build_world(tmp_path / "none", {"train": 1}, workers=0)


def test_image_i_does_not_depend_on_how_many_are_built(tmp_path, world):
    small = build_world(tmp_path / "small", {"train": 3}, seed=3, size=64)
    for name in ("000000000001.png", "000000000003.png"):
        assert (small.images("train") / name).read_bytes() == (world.images("train") / name).read_bytes()


def test_coco_files_are_consistent(world):
    captions = json.loads(world.captions("train").read_text())
    instances = json.loads(world.instances("train").read_text())
    assert [c["name"] for c in instances["categories"]] == list(SHAPES)
    image_ids = {im["id"] for im in captions["images"]}
    assert image_ids == {im["id"] for im in instances["images"]} and len(image_ids) == 12
    for im in captions["images"]:
        assert (world.images("train") / im["file_name"]).is_file()
    per_image = {i: [c for c in captions["annotations"] if c["image_id"] == i] for i in image_ids}
    assert all(4 <= len(v) <= 5 for v in per_image.values())
    assert len({a["id"] for a in instances["annotations"]}) == len(instances["annotations"])
    for ann in instances["annotations"]:
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 64 + 1e-6 and y + h <= 64 + 1e-6 and w > 0 and h > 0
        assert ann["area"] > 0 and ann["attributes"]["color"] in COLORS
    val_ids = {im["id"] for im in json.loads(world.captions("val").read_text())["images"]}
    assert not image_ids & val_ids, "image ids must be unique across splits"


def test_ground_truth_matches_pixels(world):
    truth = load_ground_truth(world.ground_truth("train"))
    checked = 0
    for t in truth.values():
        pixels = np.asarray(Image.open(world.images("train") / t.file_name).convert("RGB"), dtype=np.int32)
        names = [o.name for o in t.objects]
        assert len(set(names)) == len(names), "a (color, shape) pair must name one object"
        assert 1 <= len(t.objects) <= 6
        for o in t.objects:
            x, y, w, h = o.box
            cx, cy = x + w / 2, y + h / 2
            assert REGIONS[(int(cx * 3 // 64), int(cy * 3 // 64))[::-1]] == o.region
            if (
                o.visible_fraction == 1.0 and o.shape != "cross"
            ):  # crosses are thin; any shape's center is filled
                px = pixels[int(round(o.center[1])), int(round(o.center[0]))]
                assert np.abs(px - np.array(COLORS[o.color])).max() <= 12, (t.file_name, o.name, px)
                checked += 1
        for a, b in t.related("left_of"):
            assert a.center[0] < b.center[0] and a.col < b.col
        for a, b in t.related("above"):
            assert a.center[1] < b.center[1]
    assert checked > 10


@pytest.mark.parametrize("size", [16, 32, 64, 224])
def test_every_size_renders_the_same_scene(size):
    scene = scene_for(seed=0, split="train", index=5)
    image = render_scene(scene, size)
    assert image.size == (size, size) and image.mode == "RGB"
    assert render_scene(scene, size).tobytes() == image.tobytes()


def test_overlap_keeps_objects_mostly_visible():
    config = WorldConfig(min_objects=6, max_objects=6, overlap_prob=1.0)
    rng = np.random.default_rng(0)
    from vistune.world import visible_fractions

    scenes = [sample_scene(rng, config) for _ in range(10)]
    assert any(s.overlap for s in scenes)
    for s in scenes:
        assert min(visible_fractions(s, 96)) >= 0.6


def test_bad_config_and_files_raise_clear_errors(tmp_path):
    with pytest.raises(VistuneError, match="max_objects"):
        WorldConfig(min_objects=3, max_objects=2)
    with pytest.raises(VistuneError, match="shapes"):
        WorldConfig(shapes=["blob"])
    with pytest.raises(VistuneError, match="size"):
        build_world(tmp_path, {"train": 1}, size=8)
    with pytest.raises(VistuneError, match="does not exist"):
        load_ground_truth(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(VistuneError, match="malformed"):
        load_ground_truth(bad)


def test_cli_builds_a_world(tmp_path):
    out = tmp_path / "w"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vistune.cli",
            "world",
            "build",
            "--out",
            str(out),
            "--train",
            "3",
            "--val",
            "2",
            "--size",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "built 5 images" in proc.stdout
    assert len(list((out / "val").glob("*.png"))) == 2
