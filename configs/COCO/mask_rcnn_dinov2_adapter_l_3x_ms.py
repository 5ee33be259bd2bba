"""Mask R-CNN, ViT-Adapter-L (DINOv2-L/14 init), 3x + MS.

Official release (its `dinov2` branch, COCO val2017): box AP 55.3, mask AP 49.0, "348M" params.
Official config: detection/configs/mask_rcnn/dinov2/mask_rcnn_dinov2_adapter_large_fpn_3x_coco.py

As configs/COCO/mask_rcnn_vit_adapter_l_3x_ms.py (AugReg-L row, including its
pixel normalisation mean = std = 127.5, which the released DINOv2-L config
keeps) except pretrain_size 592 (37 x 37 grid) and layer-wise lr decay 0.65
over the 24 ViT blocks: the released config's value (0.80 in its first
version, 0.65 since the commit "Update mask_rcnn_dinov2_adapter_large_fpn_3x_coco.py"
of 2023-07-20). DINOv2 loading as configs/COCO/mask_rcnn_dinov2_adapter_s_3x_ms.py.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth
"""
from .mask_rcnn_vit_adapter_l_3x_ms import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.pretrain_size = 592
optimizer.params.layer_decay_rate = 0.65
optimizer.params.num_layers = 24
train.init_checkpoint = "checkpoints/dinov2_vitl14_pretrain.pth"
train.output_dir = "output/mask_rcnn_dinov2_adapter_l_3x_ms"
