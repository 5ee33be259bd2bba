"""Mask R-CNN, ViT-Adapter-T (DeiT-T init), 3x + MS.

Paper / official release (COCO val2017):  box AP 46.0, mask AP 41.0, 28.1M params.
Official config: detection/configs/mask_rcnn/mask_rcnn_deit_adapter_tiny_fpn_3x_coco.py
Schedule and data as configs/COCO/mask_rcnn_vit_adapter_s_3x_ms.py.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_tiny_patch16_224-a1311bcf.pth
"""
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS

from .mask_rcnn_vit_adapter_s_3x_ms import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.update(_PRESETS["T"])
train.init_checkpoint = "checkpoints/deit_tiny_patch16_224-a1311bcf.pth"
train.output_dir = "output/mask_rcnn_vit_adapter_t_3x_ms"
