"""Cascade Mask R-CNN, BEiT-Adapter-L (BEiT-L / BEiTv2-L init), 3x + MS. Ours: the
release's BEiT-L detector is HTC++ (not expressed here); no COCO result of this config.

Backbone as the release's HTC++ BEiT-L configs (window 14/56, drop path 0.4,
with_cp; configs/common/models/cascade_mask_rcnn_beit_adapter.py); AdamW lr 1e-4,
wd 0.05, layer-wise lr decay 0.9 (the HTC++ configs); schedule and data as
configs/COCO/mask_rcnn_vit_adapter_s_3x_ms.py. Parameters: see docs/beit.md.

train.init_checkpoint (a path you fill):
    https://conversationhub.blob.core.windows.net/beit-share-public/beit/beit_large_patch16_224_pt22k_ft22k.pth
"""
from ..common.models.cascade_mask_rcnn_beit_adapter import model
from .mask_rcnn_beit_adapter_l_3x_ms import dataloader, lr_multiplier, optimizer, train

train.output_dir = "output/cascade_mask_rcnn_beit_adapter_l_3x_ms"
