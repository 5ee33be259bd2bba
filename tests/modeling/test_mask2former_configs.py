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
