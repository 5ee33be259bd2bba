"""Mask R-CNN, ViT-Adapter-B (DINOv2-B/14 init), 3x + MS.

Official release (its `dinov2` branch, COCO val2017): box AP 54.1, mask AP 47.8, "120M" params.
Official config: detection/configs/mask_rcnn/dinov2/mask_rcnn_dinov2_adapter_base_fpn_3x_coco.py

As configs/COCO/mask_rcnn_vit_adapter_b_3x_ms.py (DeiT-B row) except
pretrain_size 592 (37 x 37 grid) and layer-wise lr decay 0.60 over the 12 ViT
blocks: the released config's value (0.70 in its first version, 0.60 since
the commit "Update mask_rcnn_dinov2_adapter_base_fpn_3x_coco.py" of 2023-07-18).
DINOv2 loading as configs/COCO/mask_rcnn_dinov2_adapter_s_3x_ms.py.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth
"""
from .mask_rcnn_vit_adapter_b_3x_ms import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.pretrain_size = 592
optimizer.params.layer_decay_rate = 0.60
optimizer.params.num_layers = 12
train.init_checkpoint = "checkpoints/dinov2_vitb14_pretrain.pth"
train.output_dir = "output/mask_rcnn_dinov2_adapter_b_3x_ms"
