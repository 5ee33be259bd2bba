"""UperNet, ViT-Adapter-T (AugReg-T init, ImageNet-21k), ADE20K, crop 512, 160k iterations.

Release row: UperNet ViT-Adapter-T, AugReg-T, 512, 160k: mIoU 43.9 (ss) / 44.8 (ms),
36M params (36.06M counted from the release's code).
Release config: segmentation/configs/ade20k/upernet_augreg_adapter_tiny_512_160k_ade20k.py
As configs/ADE20K/upernet_vit_adapter_t_512_160k.py (the release keeps the
ImageNet mean / std and the 224 pos-embed grid for this row): lr 12e-5, wd 0.01,
layer decay 0.95.

train.init_checkpoint (a path you fill; the release's .pth of the AugReg .npz):
    https://github.com/czczup/ViT-Adapter/releases/download/v0.3.1/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.pth
"""
from .upernet_vit_adapter_t_512_160k import dataloader, lr_multiplier, model, optimizer, train

train.init_checkpoint = (
    "checkpoints/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.pth"
)
train.output_dir = "output/upernet_augreg_adapter_t_512_160k"
