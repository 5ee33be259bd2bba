"""A tiny ViT-Adapter + Mask2Former (model only), for the conversion and
export tests: the checkpoint fixtures' TINY ViT-Adapter (width 48, 4 blocks)
and a Mask2Former head of width 32 (2 encoder layers, 3 decoder layers,
8 queries, 3 classes, 256 points), whole-image inference."""
from detectron2.config import LazyCall as L

from vit_adapter.modeling.backbone import ViTAdapter
from vit_adapter.modeling.mask2former import (
    HungarianMatcher,
    Mask2FormerHead,
    MaskedAttentionDecoder,
    MSDeformAttnPixelDecoder,
    SetCriterion,
)
from vit_adapter.modeling.semantic_segmentor import SlidingWindowSegmentor

model = L(SlidingWindowSegmentor)(
    backbone=L(ViTAdapter)(
        embed_dim=48, depth=4, num_heads=3, deform_num_heads=6, deform_ratio=1.0, drop_path_rate=0.0,
        window_block_indexes=[0, 2], window_size=4, interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
        pretrain_size=32, conv_inplane=16, norm="BN",
    ),
    sem_seg_head=L(Mask2FormerHead)(
        in_features=["res2", "res3", "res4", "res5"],
        pixel_decoder=L(MSDeformAttnPixelDecoder)(
            in_channels=[48] * 4, conv_dim=32, mask_dim=32, num_layers=2, num_heads=4, num_points=2, ffn_dim=64,
            num_groups=8,
        ),
        predictor=L(MaskedAttentionDecoder)(
            in_channels=32, num_classes=3, hidden_dim=32, mask_dim=32, num_queries=8, num_heads=4, ffn_dim=64,
            num_layers=3,
        ),
        criterion=L(SetCriterion)(num_classes=3, matcher=L(HungarianMatcher)(num_points=256), num_points=256),
        num_classes=3,
        ignore_value=255,
    ),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    test_mode="whole",
)
