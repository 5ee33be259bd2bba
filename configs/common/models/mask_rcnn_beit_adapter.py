"""Mask R-CNN + FPN with the BEiT-Adapter-L backbone (detection variant).

Backbone settings of the release's HTC++ BEiT-L configs
(detection/configs/htc++/htc++_beit_adapter_large_fpn_3x_coco_ms.py and the
BEiTv2 ones): BEiT-L (1024 wide, 24 blocks, 16 heads, q/v bias, layer scale
1e-6, relative position bias, no absolute position embedding), every block
windowed (window 14, blocks 5, 11, 17, 23: 56) with per-window tables,
16 deformable heads, deform_ratio 0.5, drop path 0.4, interactions every 6
blocks, activation checkpointing on. Pixels: RGB, ImageNet mean / std (as the
HTC++ configs). Neck, RPN and heads are configs/common/models/mask_rcnn_vit_adapter.py's
(the release has no Mask R-CNN BEiT-Adapter: this detector is ours).
"""
from detectron2.config import LazyCall as L

from vit_adapter.modeling.beit_adapter import BEIT_ADAPTER_L_WINDOW_SIZES as _WINDOWS
from vit_adapter.modeling.beit_adapter import BEiTAdapter

from .mask_rcnn_vit_adapter import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD, model

# One row per argument group, the release's names.
model.backbone.bottom_up = L(BEiTAdapter)(
    img_size=224, pretrain_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4,
    qkv_bias=True, use_abs_pos_emb=False, use_rel_pos_bias=True, init_values=1e-6, drop_path_rate=0.4,
    window_attn=[True] * 24, window_size=list(_WINDOWS),  # 14, every 6th block 56
    conv_inplane=64, n_points=4, deform_num_heads=16, cffn_ratio=0.25, deform_ratio=0.5,
    interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]],
    with_cp=True, norm="SyncBN",
)
model.pixel_mean = IMAGENET_PIXEL_MEAN
model.pixel_std = IMAGENET_PIXEL_STD
