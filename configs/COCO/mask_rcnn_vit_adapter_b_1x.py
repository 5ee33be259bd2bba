"""Mask R-CNN, ViT-Adapter-B (DeiT-B init), 1x, single scale.

Paper / official release (COCO val2017):  box AP 47.0, mask AP 41.8, 120.2M params.
Official config: detection/configs/mask_rcnn/mask_rcnn_deit_adapter_base_fpn_1x_coco.py
Schedule, optimizer and data as configs/COCO/mask_rcnn_vit_adapter_s_1x.py.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth
"""
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS

from .mask_rcnn_vit_adapter_s_1x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.update(_PRESETS["B"])  # D 768, 12 blocks, 12 heads, deform ratio 0.5, dp 0.3
train.init_checkpoint = "checkpoints/deit_base_patch16_224-b5f2ef4d.pth"
train.output_dir = "output/mask_rcnn_vit_adapter_b_1x"
