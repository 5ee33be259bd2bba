"""Parameter counts of the BEiT-Adapter-L detectors (ours: the release has no Mask R-CNN /
Cascade BEiT-Adapter row), derived from the ViT-Adapter-L detectors.

BEiT-Adapter-L differs from ViT-Adapter-L (AugReg-L, 384 px) only in the ViT:
no absolute position embedding (1 x (24^2 + 1) x 1024), no key bias
(q_bias / v_bias instead of a 3 x 1024 qkv bias, per block), and one relative
position table per block ((2w-1)^2 x 16 for window w). Models are built on the
meta device. The counts are printed (``pytest -s``) and listed in docs/beit.md.
"""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from conftest import REPO_ROOT
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS
from vit_adapter.modeling.beit_adapter import BEIT_ADAPTER_L_WINDOW_SIZES


def _count(path, vit_adapter_size=None):
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, path))
    if vit_adapter_size:
        cfg.model.backbone.bottom_up.update(VIT_ADAPTER_PRESETS[vit_adapter_size])
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert model.roi_heads.num_classes == 80
    return sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.backbone.bottom_up.parameters())


@pytest.mark.parametrize("detector", ["mask_rcnn", "cascade_mask_rcnn"])
def test_beit_adapter_l_count_is_vit_adapter_l_with_beit_positions(detector):
    beit, beit_backbone = _count(f"configs/COCO/{detector}_beit_adapter_l_3x_ms.py")
    vit, vit_backbone = _count(f"configs/common/models/{detector}_vit_adapter.py", "L")
    tables = sum((2 * w - 1) ** 2 * 16 for w in BEIT_ADAPTER_L_WINDOW_SIZES)
    pos_embed, key_bias = (24 * 24 + 1) * 1024, 24 * 1024
    assert beit_backbone == vit_backbone - pos_embed - key_bias + tables
    assert beit - beit_backbone == vit - vit_backbone  # same neck and heads
    print(f"\n{detector} BEiT-Adapter-L: {beit / 1e6:.2f}M parameters (backbone {beit_backbone / 1e6:.2f}M)")
