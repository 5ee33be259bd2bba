"""Cascade Mask R-CNN + FPN with the BEiT-Adapter-L backbone (detection variant).

The backbone of configs/common/models/mask_rcnn_beit_adapter.py (the release's
HTC++ BEiT-L backbone settings) on the cascade heads of
configs/common/models/cascade_mask_rcnn_vit_adapter.py. The release's BEiT-L
detector is HTC++ (with an ExtraAttention neck); this Cascade Mask R-CNN is ours.
"""
from .cascade_mask_rcnn_vit_adapter import model
from .mask_rcnn_beit_adapter import model as _beit

model.backbone.bottom_up = _beit.backbone.bottom_up
model.pixel_mean = _beit.pixel_mean
model.pixel_std = _beit.pixel_std
