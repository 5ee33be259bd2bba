"""UperNet, ViT-Adapter-B (DeiT-B init), ADE20K, crop 512, 160k iterations.

Release row: UperNet ViT-Adapter-B, DeiT-B, 512, 160k: mIoU 48.8 (ss) / 49.7 (ms),
134M params (133.64M counted from the release's code).
Release config: segmentation/configs/ade20k/upernet_deit_adapter_base_512_160k_ade20k.py
Schedule, data and test as configs/ADE20K/upernet_vit_adapter_s_512_160k.py; lr 6e-5.

train.init_checkpoint (a path you fill):
    https://dl.fbaipublicfiles.com/deit/deit_base_patch16_224-b5f2ef4d.pth
"""
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS

from .upernet_vit_adapter_s_512_160k import dataloader, lr_multiplier, model, optimizer, train

model.backbone.update({k: v for k, v in _PRESETS["B"].items() if k != "window_block_indexes"})  # dp 0.3
train.init_checkpoint = "checkpoints/deit_base_patch16_224-b5f2ef4d.pth"
train.output_dir = "output/upernet_vit_adapter_b_512_160k"
