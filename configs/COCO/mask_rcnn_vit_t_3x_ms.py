"""Mask R-CNN, plain ViT-T (DeiT-T init) + SimpleFeaturePyramid, 3x + MS: the baseline.

Paper / official release, ViT-T row (COCO val2017):  box AP 40.2, mask AP 37.0, 26M params
(official config: detection/configs/mask_rcnn/mask_rcnn_deit_tiny_fpn_3x_coco.py,
whose ViTBaseline neck differs from the SimpleFeaturePyramid used here:
see configs/common/models/mask_rcnn_vit_plain.py). Same ViT, heads, schedule,
optimizer and data as configs/COCO/mask_rcnn_vit_adapter_t_3x_ms.py, so
the two differ only by the adapter.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_tiny_patch16_224-a1311bcf.pth
"""
from ..common.models.mask_rcnn_vit_plain import model
from .mask_rcnn_vit_adapter_s_3x_ms import dataloader, lr_multiplier, optimizer, train

model.backbone.net.update(embed_dim=192, num_heads=3, drop_path_rate=0.1)
train.init_checkpoint = "checkpoints/deit_tiny_patch16_224-a1311bcf.pth"
train.output_dir = "output/mask_rcnn_vit_t_3x_ms"
