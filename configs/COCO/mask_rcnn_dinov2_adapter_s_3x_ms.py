"""Mask R-CNN, ViT-Adapter-S (DINOv2-S/14 init), 3x + MS.

Official release (its `dinov2` branch, COCO val2017): box AP 51.5, mask AP 45.6, "48M" params.
Official config: detection/configs/mask_rcnn/dinov2/mask_rcnn_dinov2_adapter_small_fpn_3x_coco.py

As configs/COCO/mask_rcnn_vit_adapter_s_3x_ms.py (DeiT-S row) except:

- pretrain_size 592: a 37 x 37 position grid, DINOv2's 518 / 14, so its
  pos-embed loads without resizing;
- layer-wise lr decay 0.70 over the 12 ViT blocks (the release's
  LayerDecayOptimizerConstructor; its README: 51.5 box AP at 0.70 vs 48.8 at 0.95);
- init: the Meta hub file as downloaded; the checkpointer resizes the 14 x 14
  patch kernel to 16 x 16 bilinearly (the release's convert_14to16.py), renames
  ls1/ls2.gamma to gamma1/gamma2 and drops cls / mask tokens and the final norm
  (vit_adapter/checkpoint/dinov2.py).

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth
"""
from .mask_rcnn_vit_adapter_s_3x_ms import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.pretrain_size = 592
optimizer.params.layer_decay_rate = 0.70
optimizer.params.num_layers = 12
train.init_checkpoint = "checkpoints/dinov2_vits14_pretrain.pth"
train.output_dir = "output/mask_rcnn_dinov2_adapter_s_3x_ms"
