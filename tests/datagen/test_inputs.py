"""Annotations, context and prompts: the issue's context format, and one clear error per bad input."""

from __future__ import annotations

import json

import pytest

from vistune.datagen.annotations import load_annotations
from vistune.datagen.context import build_context
from vistune.datagen.prompt_sets import FLAVORS, check_flavors, load_instructions, load_prompts
from vistune.errors import VistuneError


def _coco(tmp_path, *, bbox=(10, 20, 30, 40), width=200, height=100):
    images = [{"id": 5, "file_name": "5.jpg", "width": width, "height": height}]
    captions = {"images": images, "annotations": [{"id": 1, "image_id": 5, "caption": "A dog  on grass."}]}
    instances = {
        "images": images,
        "annotations": [{"id": 1, "image_id": 5, "category_id": 18, "bbox": list(bbox)}],
        "categories": [{"id": 18, "name": "dog"}],
    }
    (tmp_path / "cap.json").write_text(json.dumps(captions))
    (tmp_path / "ins.json").write_text(json.dumps(instances))
    return tmp_path / "cap.json", tmp_path / "ins.json"


def test_context_is_captions_then_normalized_boxes(tmp_path):
    cap, ins = _coco(tmp_path)
    image = load_annotations(cap, ins).images[0]
    assert build_context(image) == "A dog on grass.\ndog: [0.050, 0.200, 0.200, 0.600]"
    assert build_context(image, boxes=False) == "A dog on grass."
    assert build_context(image, captions=False) == "dog: [0.050, 0.200, 0.200, 0.600]"
    assert build_context(load_annotations(None, ins).images[0]) == "dog: [0.050, 0.200, 0.200, 0.600]"


def test_world_boxes_carry_size_and_color(world_files):
    image = load_annotations(world_files["captions"], world_files["instances"]).images[0]
    box_lines = [line for line in build_context(image).splitlines() if line.endswith("]")]
    assert len(box_lines) == len(image.boxes) >= 1
    assert (
        box_lines[0].split(":")[0]
        == f"{image.boxes[0].attributes['size']} {image.boxes[0].attributes['color']} {image.boxes[0].category}"
    )


@pytest.mark.parametrize("prompt_set", ["photo", "world"])
def test_builtin_prompts_have_system_and_examples_for_every_flavor(prompt_set):
    for flavor in FLAVORS:
        prompts = load_prompts(flavor, prompt_set)
        assert prompts.system and len(prompts.examples) >= 2
        chat = prompts.messages("CONTEXT")
        assert chat[0]["role"] == "system" and chat[-1] == {"role": "user", "content": "CONTEXT"}
        assert [m["role"] for m in chat[1:-1]] == ["user", "assistant"] * len(prompts.examples)
    assert not load_prompts(
        "conversation", "photo"
    ).use_boxes  # LLaVA's conversations came from captions only
    assert len(load_instructions("brief")) >= 5 and len(load_instructions("detail")) >= 5


def test_user_prompt_directory(tmp_path):
    folder = tmp_path / "conversation"
    folder.mkdir()
    (folder / "system.txt").write_text("Be brief.")
    (folder / "000_context.txt").write_text("ctx")
    (folder / "000_reply.txt").write_text("Question: a?\nAnswer: b.")
    (folder / "flavor.yaml").write_text("boxes: false\n")
    prompts = load_prompts("conversation", prompts_dir=tmp_path)
    assert prompts.system == "Be brief." and prompts.examples[0].context == "ctx" and not prompts.use_boxes
    (folder / "001_context.txt").write_text("orphan")
    with pytest.raises(VistuneError, match="001_reply.txt"):
        load_prompts("conversation", prompts_dir=tmp_path)
    with pytest.raises(VistuneError, match="system.txt"):
        load_prompts("detail", prompts_dir=tmp_path)
    (folder / "001_context.txt").unlink()
    (folder / "flavor.yaml").write_text("boxs: false\n")
    with pytest.raises(VistuneError, match="unknown key"):
        load_prompts("conversation", prompts_dir=tmp_path)


def test_unknown_flavor():
    with pytest.raises(VistuneError, match="unknown flavor.*summary.*choose from conversation"):
        check_flavors(["conversation", "summary"])


def test_bad_annotation_files(tmp_path):
    cap, ins = _coco(tmp_path)
    with pytest.raises(VistuneError, match="does not exist"):
        load_annotations(tmp_path / "nope.json", None)
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(VistuneError, match="bad.json is not valid JSON"):
        load_annotations(tmp_path / "bad.json", None)
    (tmp_path / "noimages.json").write_text("{}")
    with pytest.raises(VistuneError, match="no 'images' list"):
        load_annotations(tmp_path / "noimages.json", None)
    with pytest.raises(VistuneError, match="give --captions, --instances"):
        load_annotations(None, None)
    data = json.loads(ins.read_text())
    data["annotations"][0]["category_id"] = 99
    ins.write_text(json.dumps(data))
    with pytest.raises(VistuneError, match=r"annotations\[0\] has category_id 99"):
        load_annotations(cap, ins)


def test_image_ids_without_files(tmp_path):
    cap, ins = _coco(tmp_path)
    (tmp_path / "imgs").mkdir()
    with pytest.raises(VistuneError, match=r"1 of 1 image ids have no file.*id 5"):
        load_annotations(cap, ins, tmp_path / "imgs")
