"""UperNet with the ViT-Adapter backbone (ViT-Adapter-S by default), ADE20K's 150 classes.

The release's `segmentation/configs/_base_/models/upernet_r50.py` with the
backbone replaced (`configs/ade20k/upernet_deit_adapter_*_512_160k_ade20k.py`),
as detectron2's `SemanticSegmentor` (vit_adapter.modeling.semantic_segmentor):

- backbone: ViTAdapter, the detection presets' sizes with global attention in
  every ViT block (`window_attn=[False] * N`), res2..res5 (D channels,
  strides 4..32); the segmentation release's backbone adds the ViT map after
  interaction i to output i (`vit_feature="per_interaction"`; the detection
  release adds the final map to all four);
- decode head: UPerHead, 512 channels, PPM scales 1, 2, 3, 6 on res5,
  SyncBN, dropout 0.1; auxiliary FCNHead on res4, 256 channels, one 3x3 conv,
  loss weight 0.4 (vit_adapter.modeling.upernet);
- loss: cross-entropy, ignore 255, averaged over all pixels (mmseg 0.20.2);
- test: slide, crop 512, stride 341 (`model.test_mode = "whole"` for one pass;
  `model.test_scales` / `model.test_flip` for the release's "ms" column);
- pixels: RGB, ImageNet mean / std.

Other sizes: a short override (configs/ADE20K/). Parameter counts with the
auxiliary head, 150 classes (the release's code at random init): T 36.06M,
S 57.61M, B 133.64M, AugReg-L 363.8M (tests/modeling/test_upernet_configs.py).
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS
from vit_adapter.modeling.backbone import ViTAdapter
from vit_adapter.modeling.semantic_segmentor import SlidingWindowSegmentor
from vit_adapter.modeling.upernet import UperNetHead

from .mask_rcnn_vit_adapter import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD

_S = {k: v for k, v in _PRESETS["S"].items() if k != "window_block_indexes"}

model = L(SlidingWindowSegmentor)(
    backbone=L(ViTAdapter)(
        **_S,
        window_block_indexes=[],  # global attention everywhere
        vit_feature="per_interaction",  # output i gets the ViT map after interaction i (segmentation release)
        norm="SyncBN",
    ),
    sem_seg_head=L(UperNetHead)(
        input_shape={
            f"res{i}": L(ShapeSpec)(channels="${....backbone.embed_dim}", stride=2**i) for i in range(2, 6)
        },
        num_classes=150,
        in_features=["res2", "res3", "res4", "res5"],
        channels=512,
        pool_scales=(1, 2, 3, 6),
        dropout=0.1,
        norm="SyncBN",
        aux_in_feature="res4",
        aux_channels=256,
        aux_loss_weight=0.4,
        ignore_value=255,
    ),
    pixel_mean=IMAGENET_PIXEL_MEAN,
    pixel_std=IMAGENET_PIXEL_STD,
    input_format="RGB",  # the data mapper's image_format (configs/common/data_ade20k.py)
    test_mode="slide",
    crop_size=(512, 512),
    stride=(341, 341),
)
