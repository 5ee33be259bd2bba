"""Mask2Former, BEiTv2-Adapter-L, ADE20K, crop 896, 80k iterations, from the COCO-Stuff-164k model.

Release row (segmentation/README.md): Mask2Former ViT-Adapter-L, BEiTv2-L + COCO-Stuff, 80k, 896:
mIoU 61.2 (ss) / 61.5 (ms), 571M params (570.7M counted here).
Release config: segmentation/configs/ade20k/mask2former_beitv2_adapter_large_896_80k_ade20k_ss.py

Same network and recipe as configs/ADE20K/mask2former_beit_adapter_l_896_80k.py
(BEiTv2 has BEiT's architecture); only the initialisation differs:

train.init_checkpoint (a path you fill; convert the release checkpoint first):
    https://github.com/czczup/ViT-Adapter/releases/download/v0.3.1/mask2former_beitv2_adapter_large_896_80k_cocostuff164k.zip
"""
from .mask2former_beit_adapter_l_896_80k import dataloader, lr_multiplier, model, optimizer, train

train.init_checkpoint = "checkpoints/mask2former_beitv2_adapter_large_896_80k_cocostuff164k_d2.pth"
train.output_dir = "output/mask2former_beitv2_adapter_l_896_80k"
