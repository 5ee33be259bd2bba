"""UperNet, ViT-Adapter-T (DeiT-T init), ADE20K, crop 512, 160k iterations.

Release row: UperNet ViT-Adapter-T, DeiT-T, 512, 160k: mIoU 42.6 (ss) / 43.6 (ms),
36M params (36.06M counted from the release's code).
Release config: segmentation/configs/ade20k/upernet_deit_adapter_tiny_512_160k_ade20k.py
Schedule, data and test as configs/ADE20K/upernet_vit_adapter_s_512_160k.py; lr 12e-5.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_tiny_patch16_224-a1311bcf.pth
"""
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS

from .upernet_vit_adapter_s_512_160k import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update({k: v for k, v in _PRESETS["T"].items() if k != "window_block_indexes"})  # dp 0.1
optimizer.lr = 12e-5
train.init_checkpoint = "checkpoints/deit_tiny_patch16_224-a1311bcf.pth"
train.output_dir = "output/upernet_vit_adapter_t_512_160k"
