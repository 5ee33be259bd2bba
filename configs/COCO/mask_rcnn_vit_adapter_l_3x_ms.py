"""Mask R-CNN, ViT-Adapter-L (AugReg-L init), 3x + MS.

Paper / official release (COCO val2017):  box AP 52.1, mask AP 46.0, 347.9M params.
Official config: detection/configs/mask_rcnn/mask_rcnn_augreg_adapter_large_fpn_3x_coco.py
Model, layer-wise lr decay 0.8 and pixel normalisation as
configs/COCO/mask_rcnn_vit_adapter_l_1x.py; schedule and data as
configs/COCO/mask_rcnn_vit_adapter_s_3x_ms.py.
"""
from ..common.data_coco_ms import dataloader
from ..common.schedules import lr_multiplier_3x as lr_multiplier, max_iter_3x
from .mask_rcnn_vit_adapter_l_1x import model, optimizer, train

train.max_iter = max_iter_3x  # 266148
train.output_dir = "output/mask_rcnn_vit_adapter_l_3x_ms"
