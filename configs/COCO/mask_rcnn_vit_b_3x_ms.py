"""Mask R-CNN, plain ViT-B (DeiT-B init) + SimpleFeaturePyramid, 3x + MS: the baseline.

Paper / official release, ViT-B row (COCO val2017):  box AP 45.8, mask AP 41.3, 114M params
(official config: detection/configs/mask_rcnn/mask_rcnn_deit_base_fpn_3x_coco.py,
whose ViTBaseline neck differs from the SimpleFeaturePyramid used here:
see configs/common/models/mask_rcnn_vit_plain.py). Same ViT, heads, schedule,
optimizer and data as configs/COCO/mask_rcnn_vit_adapter_b_3x_ms.py, so
the two differ only by the adapter.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth
"""
from ..common.models.mask_rcnn_vit_plain import model
from .mask_rcnn_vit_adapter_s_3x_ms import dataloader, lr_multiplier, optimizer, train

model.backbone.net.update(embed_dim=768, num_heads=12, drop_path_rate=0.1)
train.init_checkpoint = "checkpoints/deit_base_patch16_224-b5f2ef4d.pth"
train.output_dir = "output/mask_rcnn_vit_b_3x_ms"
