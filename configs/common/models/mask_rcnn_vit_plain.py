"""Mask R-CNN with a plain ViT + ViTDet's SimpleFeaturePyramid (ViT-S by default).

The plain-ViT baseline for apples-to-apples comparison with
`mask_rcnn_vit_adapter.py`: the same ViT (DeiT names, window 14 on blocks
0,1,3,4,6,7,9,10 and global attention on 2,5,8,11, layer scale, drop path 0.1
as the release's ViT baselines), the same RPN / box / mask heads and pixel
normalisation; only the adapter is replaced by ViTDet's simple feature
pyramid (Li et al., ECCV 2022) on the last 1/16 map: scales 4, 2, 1, 0.5 ->
p2..p5 (LayerNorm), p6 by max-pooling. detectron2's SimpleFeaturePyramid
where it exists, ours on detectron2 0.6 (see vit_adapter.compat).

This is not the release's own ViT baseline (`ViTBaseline`: four intermediate
blocks + deconvs + a standard FPN), and ViTDet itself uses 4conv-1fc LN box
heads; the heads are kept identical to the ViT-Adapter detector here so that
only the backbone differs.

Other sizes: `model.backbone.net.update(embed_dim=192, num_heads=3)` (T),
`(embed_dim=768, num_heads=12)` (B).
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from vit_adapter.modeling.backbone import PlainViTBackbone
from vit_adapter.modeling.simple_feature_pyramid import SimpleFeaturePyramid

from .mask_rcnn_vit_adapter import model

embed_dim, depth, num_heads, dp = 384, 12, 6, 0.1

model.backbone = L(SimpleFeaturePyramid)(
    net=L(PlainViTBackbone)(
        pretrain_size=224,
        patch_size=16,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        drop_path_rate=dp,
        window_size=14,
        window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10],
        layer_scale=True,
        out_feature="last_feat",
    ),
    in_feature="${.net.out_feature}",
    out_channels=256,
    scale_factors=(4.0, 2.0, 1.0, 0.5),
    top_block=L(LastLevelMaxPool)(),
    norm="LN",
    square_pad=0,
)
