"""Cascade Mask R-CNN, ViT-Adapter-S (DeiT-S init), 3x + MS.

Paper / official release (COCO val2017):  box AP 51.5, mask AP 44.3, 86M params.
Official config: detection/configs/cascade_rcnn/cascade_mask_rcnn_deit_adapter_small_fpn_3x_coco.py
(see configs/common/models/cascade_mask_rcnn_vit_adapter.py for the parts
detectron2's CascadeROIHeads expresses differently). Schedule, optimizer and
data as configs/COCO/mask_rcnn_vit_adapter_s_3x_ms.py.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth
"""
from ..common.models.cascade_mask_rcnn_vit_adapter import model
from .mask_rcnn_vit_adapter_s_3x_ms import dataloader, lr_multiplier, optimizer, train

model.backbone.bottom_up.drop_path_rate = 0.2
train.output_dir = "output/cascade_mask_rcnn_vit_adapter_s_3x_ms"
