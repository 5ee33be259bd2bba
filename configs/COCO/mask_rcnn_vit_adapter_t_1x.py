"""Mask R-CNN, ViT-Adapter-T (DeiT-T init), 1x, single scale.

Paper / official release (COCO val2017):  box AP 41.1, mask AP 37.5, 28.1M params.
Official config: detection/configs/mask_rcnn/mask_rcnn_deit_adapter_tiny_fpn_1x_coco.py
Schedule, optimizer and data as configs/COCO/mask_rcnn_vit_adapter_s_1x.py.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_tiny_patch16_224-a1311bcf.pth
"""
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS

from .mask_rcnn_vit_adapter_s_1x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.update(_PRESETS["T"])  # D 192, 12 blocks, 3 heads, 6 deform heads, dp 0.1
train.init_checkpoint = "checkpoints/deit_tiny_patch16_224-a1311bcf.pth"
train.output_dir = "output/mask_rcnn_vit_adapter_t_1x"
