"""Parameter counts of the full detectors vs the paper (Chen et al., ICLR 2023, Table 1 / README).

Models are built on the meta device: no memory, no weight init, well under a
second each, even for ViT-Adapter-L.

The paper's counts are this file's table; the measured counts are in
docs/dinov2_and_cascade.md with the command that prints them.
"""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS
from conftest import REPO_ROOT

CONFIGS = os.path.join(REPO_ROOT, "configs", "common", "models")

PAPER_MASK_RCNN = {"T": 28.1e6, "S": 47.8e6, "B": 120.2e6, "L": 347.9e6}
PAPER_CASCADE = {"S": 86e6, "B": 158e6}  # README: "86M", "158M"


def count_params(config: str, size: str) -> int:
    cfg = LazyConfig.load(os.path.join(CONFIGS, config))
    cfg.model.backbone.bottom_up.update(VIT_ADAPTER_PRESETS[size])
    assert cfg.model.roi_heads.num_classes == 80
    with torch.device("meta"):
        model = instantiate(cfg.model)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", ["T", "S", "B", "L"])
def test_mask_rcnn_matches_paper(size):
    n = count_params("mask_rcnn_vit_adapter.py", size)
    paper = PAPER_MASK_RCNN[size]
    assert abs(n - paper) / paper < 0.01, f"ViT-Adapter-{size} Mask R-CNN: {n / 1e6:.2f}M vs paper {paper / 1e6}M"


@pytest.mark.parametrize("size", ["S", "B"])
def test_cascade_matches_paper(size):
    """As released: class-specific 4conv-1fc box heads and one mask head per stage."""
    n = count_params("cascade_mask_rcnn_vit_adapter.py", size)
    paper = PAPER_CASCADE[size]
    assert abs(n - paper) / paper < 0.01, f"ViT-Adapter-{size} Cascade: {n / 1e6:.2f}M vs paper {paper / 1e6}M"
