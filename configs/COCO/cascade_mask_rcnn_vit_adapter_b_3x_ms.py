"""Cascade Mask R-CNN, ViT-Adapter-B (DeiT-B init), 3x + MS.

Paper / official release (COCO val2017):  box AP 52.1, mask AP 44.8, 158M params.
Official config: detection/configs/cascade_rcnn/cascade_mask_rcnn_deit_adapter_base_fpn_3x_coco.py
Schedule, optimizer and data as configs/COCO/mask_rcnn_vit_adapter_s_3x_ms.py.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth
"""
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS

from .cascade_mask_rcnn_vit_adapter_s_3x_ms import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.update(_PRESETS["B"])  # dp 0.3
train.init_checkpoint = "checkpoints/deit_base_patch16_224-b5f2ef4d.pth"
train.output_dir = "output/cascade_mask_rcnn_vit_adapter_b_3x_ms"
