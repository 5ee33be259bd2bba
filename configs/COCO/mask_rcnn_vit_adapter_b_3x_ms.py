"""Mask R-CNN, ViT-Adapter-B (DeiT-B init), 3x + MS.

Paper / official release (COCO val2017):  box AP 49.6, mask AP 43.6, 120.2M params.
Official config: detection/configs/mask_rcnn/mask_rcnn_deit_adapter_base_fpn_3x_coco.py
Schedule and data as configs/COCO/mask_rcnn_vit_adapter_s_3x_ms.py.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth
"""
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS

from .mask_rcnn_vit_adapter_s_3x_ms import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.update(_PRESETS["B"])
train.init_checkpoint = "checkpoints/deit_base_patch16_224-b5f2ef4d.pth"
train.output_dir = "output/mask_rcnn_vit_adapter_b_3x_ms"
