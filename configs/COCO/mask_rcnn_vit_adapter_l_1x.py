"""Mask R-CNN, ViT-Adapter-L (AugReg-L, ImageNet-21k, 384 px init), 1x, single scale.

Paper / official release (COCO val2017):  box AP 48.7, mask AP 43.3, 347.9M params.
Official config: detection/configs/mask_rcnn/mask_rcnn_augreg_adapter_large_fpn_1x_coco.py

Differences from S: 24 blocks (global attention on 5, 11, 17, 23), pos-embed
grid of 384 px, layer-wise lr decay 0.8 over the 24 blocks (official
LayerDecayOptimizerConstructor), AugReg pixel normalisation (mean = std = 127.5).

train.init_checkpoint (a path you fill; timm reads the .npz):
    https://storage.googleapis.com/vit_models/augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384.npz
"""
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS

from ..common.models.mask_rcnn_vit_adapter import AUGREG_PIXEL_MEAN, AUGREG_PIXEL_STD
from .mask_rcnn_vit_adapter_s_1x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.update(_PRESETS["L"])  # D 1024, 24 blocks, 16 heads, pretrain 384, dp 0.4
model.pixel_mean = AUGREG_PIXEL_MEAN
model.pixel_std = AUGREG_PIXEL_STD
optimizer.params.layer_decay_rate = 0.8
optimizer.params.num_layers = 24
train.init_checkpoint = (
    "checkpoints/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1"
    "--imagenet2012-steps_20k-lr_0.01-res_384.npz"
)
train.output_dir = "output/mask_rcnn_vit_adapter_l_1x"
