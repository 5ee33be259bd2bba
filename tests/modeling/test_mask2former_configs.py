"""Mask2Former row configs: parameter counts against the release's README
(within 1.5%), and each docstring names its release row and mIoU."""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from conftest import REPO_ROOT

# config -> (release #param in millions, release ss mIoU as printed in the docstring)
ROWS = {
    "ADE20K/mask2former_beit_adapter_l_640_160k.py": (568, "58.3"),
    "ADE20K/mask2former_beit_adapter_l_896_80k.py": (571, "59.4"),
    "ADE20K/mask2former_beitv2_adapter_l_896_80k.py": (571, "61.2"),
    "COCOStuff164k/mask2former_beit_adapter_l_896_80k.py": (571, "51.7"),
    "COCOStuff10k/mask2former_beit_adapter_b_512_40k.py": (120, "50.0"),
    "COCOStuff10k/mask2former_beit_adapter_l_512_40k.py": (568, "53.2"),
    "PascalContext59/mask2former_beit_adapter_b_480_40k.py": (120, "64.0"),
    "PascalContext59/mask2former_beit_adapter_l_480_40k.py": (568, "67.8"),
    "Cityscapes/mask2former_beit_adapter_l_896_80k.py": (571, "84.9"),
}
# one L and one B config are instantiated (the other rows differ in sizes the
# docstring counts state; every config is loaded and its sizes checked)
COUNTED = ["ADE20K/mask2former_beit_adapter_l_896_80k.py", "COCOStuff10k/mask2former_beit_adapter_b_512_40k.py"]


def _load(name):
    return LazyConfig.load(os.path.join(REPO_ROOT, "configs", name))


def _num_params(cfg):
    cfg.model.backbone.norm = "BN"
    with torch.device("meta"):
        model = instantiate(cfg.model)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", COUNTED)
def test_parameter_count_within_1_5_percent_of_release(name):
    release, _ = ROWS[name]
    count = _num_params(_load(name)) / 1e6
    assert abs(count - release) / release < 0.015, f"{name}: {count:.2f}M vs release {release}M"


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_config_loads_and_names_its_release_row(name):
    cfg = _load(name)
    release, miou = ROWS[name]
    with open(os.path.join(REPO_ROOT, "configs", name)) as f:
        doc = f.read().split('"""')[1]
    assert "Release row" in doc and f"mIoU {miou}" in doc and f"{release}M params" in doc
    head = cfg.model.sem_seg_head
    assert head.num_classes == cfg.dataloader.train.mapper.num_classes
    width = 1024 if "_l_" in name else 256
    assert head.pixel_decoder.conv_dim == width and head.predictor.hidden_dim == width
    assert head.pixel_decoder.in_channels == [cfg.model.backbone.embed_dim] * 4
    assert cfg.model.backbone.img_size == cfg.model.crop_size[0]
    assert head.criterion.num_points == 12544 and head.criterion.matcher.num_points == 12544


def test_beit_adapter_mask2former_row_trains_and_infers_at_tiny_width():
    """The ADE20K 640 row's wiring (BEiT-Adapter with cls token -> Mask2Former
    -> SlidingWindowSegmentor) at tiny widths: one training step and a slide
    inference."""
    from detectron2.utils.events import EventStorage

    from vit_adapter.modeling.mask2former import Mask2FormerHead

    cfg = _load("ADE20K/mask2former_beit_adapter_l_640_160k.py")
    cfg.model.backbone.update(img_size=64, embed_dim=48, depth=4, num_heads=3, deform_num_heads=6, norm="BN",
                              interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], conv_inplane=16)
    head = cfg.model.sem_seg_head
    head.pixel_decoder.update(in_channels=[48] * 4, conv_dim=32, mask_dim=32, num_heads=4, ffn_dim=64,
                              num_groups=8, num_layers=1)
    head.predictor.update(in_channels=32, hidden_dim=32, mask_dim=32, num_heads=4, ffn_dim=64, num_layers=3,
                          num_queries=8)
    head.criterion.num_points = head.criterion.matcher.num_points = 64
    cfg.model.update(crop_size=(64, 64), stride=(32, 32))
    model = instantiate(cfg.model)
    assert isinstance(model.sem_seg_head, Mask2FormerHead)
    image = torch.rand(3, 64, 64) * 255
    label = torch.randint(0, 150, (64, 64))
    with EventStorage():
        losses = model([{"image": image, "sem_seg": label, "height": 64, "width": 64}])
    assert len(losses) == 3 * 4 and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 96, 128) * 255, "height": 48, "width": 64}])[0]["sem_seg"]
    assert out.shape == (150, 48, 64)
