"""Mask R-CNN, ViT-Adapter-S (DeiT-S init), 3x schedule + multi-scale training.

Paper / official release (COCO val2017):  box AP 48.2, mask AP 42.8, 47.8M params.
Official config: detection/configs/mask_rcnn/mask_rcnn_deit_adapter_small_fpn_3x_coco.py

- 3x: 36 epochs at 16 images / iter = 36 * 7393 = 266148 iters, lr x0.1 after
  epochs 27 and 33, 500 linear warm-up iters;
- MS: DETR-style multi-scale resize (short edge 480..800) or resize + random
  crop 384..600 + resize, then crop to 1024 (configs/common/data_coco_ms.py);
- model, optimizer, checkpoint as configs/COCO/mask_rcnn_vit_adapter_s_1x.py.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_small_patch16_224-cd65a155.pth
"""
from ..common.data_coco_ms import dataloader
from ..common.schedules import lr_multiplier_3x as lr_multiplier, max_iter_3x
from .mask_rcnn_vit_adapter_s_1x import model, optimizer, train

train.max_iter = max_iter_3x  # 266148
train.output_dir = "output/mask_rcnn_vit_adapter_s_3x_ms"
