"""UperNet, ViT-Adapter-L (AugReg-L init, ImageNet-21k, 384 px), ADE20K, crop 512, 160k iterations.

Release row: UperNet ViT-Adapter-L, AugReg-L, 512, 160k: mIoU 53.4 (ss) / 54.4 (ms),
364M params (363.8M counted from the release's code).
Release config: segmentation/configs/ade20k/upernet_augreg_adapter_large_512_160k_ade20k.py
Schedule, data and test as configs/ADE20K/upernet_vit_adapter_s_512_160k.py, with:
24 blocks (all global attention), pos-embed grid of 384 px, activation
checkpointing (with_cp, as released), AugReg pixel normalisation (mean = std =
127.5), AdamW lr 2e-5, weight decay 0.05, layer decay 0.95 over 24 blocks.

train.init_checkpoint (a path you fill; timm reads the .npz):
    https://storage.googleapis.com/vit_models/augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384.npz
"""
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS

from ..common.models.mask_rcnn_vit_adapter import AUGREG_PIXEL_MEAN, AUGREG_PIXEL_STD
from .upernet_vit_adapter_s_512_160k import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update({k: v for k, v in _PRESETS["L"].items() if k != "window_block_indexes"})  # dp 0.4
model.backbone.with_cp = True
model.pixel_mean = AUGREG_PIXEL_MEAN
model.pixel_std = AUGREG_PIXEL_STD
optimizer.lr = 2e-5
optimizer.weight_decay = 0.05
optimizer.params.num_layers = 24
train.init_checkpoint = (
    "checkpoints/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1"
    "--imagenet2012-steps_20k-lr_0.01-res_384.npz"
)
train.output_dir = "output/upernet_augreg_adapter_l_512_160k"
