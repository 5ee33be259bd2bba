"""UperNet, ViT-Adapter-B (AugReg-B init, ImageNet-21k, 384 px), ADE20K, crop 512, 160k iterations.

Release row: UperNet ViT-Adapter-B, AugReg-B, 512, 160k: mIoU 51.9 (ss) / 52.5 (ms),
134M params (133.64M + the 384 px pos-embed grid: (24^2 - 14^2) * 768 = 0.29M more).
Release config: segmentation/configs/ade20k/upernet_augreg_adapter_base_512_160k_ade20k.py
Schedule, data and test as configs/ADE20K/upernet_vit_adapter_s_512_160k.py, with:
pos-embed grid of 384 px, AugReg pixel normalisation (mean = std = 127.5), AdamW
lr 2e-5, weight decay 0.01, no layer decay, decode / auxiliary heads at 10x the
lr except their biases (the release's mmcv custom_keys, see
vit_adapter.engine.seg_optim).

train.init_checkpoint (a path you fill; the release's .pth of the AugReg .npz):
    https://github.com/czczup/ViT-Adapter/releases/download/v0.3.1/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384.pth
"""
from detectron2.config import LazyCall as L

from vit_adapter.engine.seg_optim import get_param_groups_with_lr_mult

from ..common.models.mask_rcnn_vit_adapter import AUGREG_PIXEL_MEAN, AUGREG_PIXEL_STD
from .upernet_vit_adapter_b_512_160k import dataloader, lr_multiplier, model, optimizer, train

model.backbone.pretrain_size = 384
model.pixel_mean = AUGREG_PIXEL_MEAN
model.pixel_std = AUGREG_PIXEL_STD
optimizer.lr = 2e-5
optimizer.weight_decay = 0.01
optimizer.params = L(get_param_groups_with_lr_mult)(
    lr_mult={"head": 10.0},
    base_lr="${..lr}",
    weight_decay="${..weight_decay}",
)
train.init_checkpoint = (
    "checkpoints/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384.pth"
)
train.output_dir = "output/upernet_augreg_adapter_b_512_160k"
