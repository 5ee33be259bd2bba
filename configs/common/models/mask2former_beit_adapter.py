"""Mask2Former with the BEiT-Adapter-L backbone, ADE20K's 150 classes at 640.

The release's `segmentation/configs/_base_/models/mask2former_beit.py` with
`configs/ade20k/mask2former_beit_adapter_large_640_160k_ade20k_ss.py`'s
overrides, as detectron2's `SemanticSegmentor` (our SlidingWindowSegmentor):

| part | setting |
| --- | --- |
| backbone | BEiTAdapter-L, segmentation variant (cls token, global attention, img_size 640), drop path 0.3, layer scale 1e-6, conv_inplane 64, 4 points, 16 deform heads, cffn 0.25, deform ratio 0.5, with_cp |
| pixel decoder | MSDeformAttn encoder over 1/8, 1/16, 1/32: 6 layers, width 1024, 32 heads, 4 points, FFN 4096 (checkpointed, the release's with_cp); GN(32); 1/4 lateral + 3x3 output conv; mask feature 1024 |
| decoder | 9 masked-attention layers cycling 1/32, 1/16, 1/8; 100 queries, width 1024, 32 heads, FFN 4096 (checkpointed) |
| matching | Hungarian; cost class 2, mask BCE 5, dice 5 on 12,544 random points |
| losses | class CE x 2 (no-object 0.1), mask BCE x 5 and dice x 5 on 12,544 importance-sampled points (oversample 3, importance 0.75), every decoder stage |
| inference | softmax classes (no-object dropped) x sigmoid masks summed over queries; slide 640, stride 426 |
| pixels | RGB, ImageNet mean / std |

Other rows override sizes (configs/ADE20K/, configs/COCOStuff164k/, ...):
`MASK2FORMER_B_HEAD` below is the B head (width 256, 8 heads, encoder FFN 1024,
decoder FFN 2048).
"""
from detectron2.config import LazyCall as L

from vit_adapter.modeling.beit_adapter import BEiTAdapter
from vit_adapter.modeling.mask2former import (
    HungarianMatcher,
    Mask2FormerHead,
    MaskedAttentionDecoder,
    MSDeformAttnPixelDecoder,
    SetCriterion,
)
from vit_adapter.modeling.semantic_segmentor import SlidingWindowSegmentor

from .mask_rcnn_vit_adapter import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD

NUM_POINTS = 12544

# BEiT-Adapter presets of the release's segmentation configs (img_size set per row).
BEIT_ADAPTER_L = dict(
    embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4, qkv_bias=True, use_abs_pos_emb=False,
    use_rel_pos_bias=True, init_values=1e-6, drop_path_rate=0.3, conv_inplane=64, n_points=4,
    deform_num_heads=16, cffn_ratio=0.25, deform_ratio=0.5,
    interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]],
)
BEIT_ADAPTER_B = dict(
    embed_dim=768, depth=12, num_heads=12, mlp_ratio=4, qkv_bias=True, use_abs_pos_emb=False,
    use_rel_pos_bias=True, init_values=1e-6, drop_path_rate=0.2, conv_inplane=64, n_points=4,
    deform_num_heads=12, cffn_ratio=0.25, deform_ratio=0.5,
    interaction_indexes=[[0, 2], [3, 5], [6, 8], [9, 11]],
)
# Head widths: (pixel decoder / decoder width, heads, encoder FFN, decoder FFN).
MASK2FORMER_L_HEAD = dict(dim=1024, heads=32, encoder_ffn=4096, decoder_ffn=4096)
MASK2FORMER_B_HEAD = dict(dim=256, heads=8, encoder_ffn=1024, decoder_ffn=2048)


def set_head_size(head, in_channels, dim, heads, encoder_ffn, decoder_ffn):
    """Set the widths of a Mask2FormerHead config (a `MASK2FORMER_*_HEAD` preset)."""
    head.pixel_decoder.in_channels = [in_channels] * 4
    head.pixel_decoder.conv_dim = dim
    head.pixel_decoder.mask_dim = dim
    head.pixel_decoder.num_heads = heads
    head.pixel_decoder.ffn_dim = encoder_ffn
    head.predictor.in_channels = dim
    head.predictor.hidden_dim = dim
    head.predictor.mask_dim = dim
    head.predictor.num_heads = heads
    head.predictor.ffn_dim = decoder_ffn


model = L(SlidingWindowSegmentor)(
    backbone=L(BEiTAdapter)(**BEIT_ADAPTER_L, img_size=640, with_cls_token=True, window_attn=False,
                            norm="SyncBN", with_cp=True),
    sem_seg_head=L(Mask2FormerHead)(
        in_features=["res2", "res3", "res4", "res5"],
        pixel_decoder=L(MSDeformAttnPixelDecoder)(
            in_channels=[1024] * 4, conv_dim=1024, mask_dim=1024, num_layers=6, num_heads=32, num_points=4,
            ffn_dim=4096, num_groups=32, checkpoint_ffn=True,
        ),
        predictor=L(MaskedAttentionDecoder)(
            in_channels=1024, num_classes="${..num_classes}", hidden_dim=1024, mask_dim=1024, num_queries=100,
            num_heads=32, ffn_dim=4096, num_layers=9, num_feature_levels=3, checkpoint_ffn=True,
        ),
        criterion=L(SetCriterion)(
            num_classes="${..num_classes}",
            matcher=L(HungarianMatcher)(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=NUM_POINTS),
            class_weight=2.0, mask_weight=5.0, dice_weight=5.0, no_object_weight=0.1,
            num_points=NUM_POINTS, oversample_ratio=3.0, importance_sample_ratio=0.75,
        ),
        num_classes=150,
        ignore_value=255,
    ),
    pixel_mean=IMAGENET_PIXEL_MEAN,
    pixel_std=IMAGENET_PIXEL_STD,
    test_mode="slide",
    crop_size=(640, 640),
    stride=(426, 426),
)
