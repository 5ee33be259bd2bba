"""Mask R-CNN + FPN with the ViT-Adapter backbone (ViT-Adapter-S by default).

The official `detection/configs/mask_rcnn/mask_rcnn_deit_adapter_small_fpn_3x_coco.py`
(mmdetection `_base_/models/mask_rcnn_r50_fpn.py` with the backbone replaced)
expressed on detectron2's model-zoo `common/models/mask_rcnn_fpn.py`:

- backbone: ViTAdapter -> res2..res5 (D channels, strides 4..32) -> FPN 256
  channels with a max-pooled p6 (mmdet FPN num_outs=5, no extra convs);
- RPN: anchors 32..512 at strides 4..64, ratios 0.5/1/2, L1 loss (as mmdet);
- box head: 2 shared FC 1024 ("Shared2FCBBoxHead"), class-specific regression,
  deltas scaled (10, 10, 5, 5) == mmdet target_stds (0.1, 0.1, 0.2, 0.2), L1;
- mask head: 4 conv 256 + deconv, class-specific 28x28 masks;
- RoIAlign (aligned) 7x7 / 14x14, sampling_ratio 0, same level mapping
  (mmdet finest_scale 56 == detectron2 canonical 224 at p4);
- pixels: RGB, ImageNet mean/std (the DeiT normalisation; mmdet to_rgb=True);
- training rules as mmdet's base: RPN 256 anchors / 50% positive, IoU 0.3 / 0.7
  with low-quality matches; RoI 512 per image / 25% positive, IoU 0.5, gt boxes
  added; losses normalised by the sampled counts; test: RPN 1000 per level and
  per image, NMS 0.7, score 0.05, NMS 0.5, 100 detections, masks at 0.5.

Other sizes (a short override, see configs/COCO/; import the presets under a
leading-underscore name so LazyConfig does not export them as a config key):
    from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS
    model.backbone.bottom_up.update(_PRESETS["B"])
ViT-Adapter-L (AugReg) also normalises with mean = std = 127.5, see
:data:`AUGREG_PIXEL_MEAN` / :data:`AUGREG_PIXEL_STD`.

Paper parameter counts of this detector (80 classes): T 28.1M, S 47.8M,
B 120.2M, L 347.9M (tests/modeling/test_param_counts.py checks them).
"""
from detectron2.config import LazyCall as L

from vit_adapter.compat import get_model_zoo_config
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS as _PRESETS
from vit_adapter.modeling.backbone import ViTAdapter

# DeiT / ImageNet normalisation in RGB (mmdet img_norm_cfg, to_rgb=True).
IMAGENET_PIXEL_MEAN = [123.675, 116.28, 103.53]
IMAGENET_PIXEL_STD = [58.395, 57.12, 57.375]
# AugReg (ViT-Adapter-L): mean = std = 127.5.
AUGREG_PIXEL_MEAN = [127.5, 127.5, 127.5]
AUGREG_PIXEL_STD = [127.5, 127.5, 127.5]

# detectron2.model_zoo.get_config without pkg_resources (see vit_adapter.compat).
model = get_model_zoo_config("common/models/mask_rcnn_fpn.py").model

# "SyncBN" as in the release; a plain BatchNorm when training in one process
# (see vit_adapter.modeling.adapter_modules.build_norm).
model.backbone.bottom_up = L(ViTAdapter)(**_PRESETS["S"], norm="SyncBN")
model.backbone.in_features = ["res2", "res3", "res4", "res5"]
model.backbone.out_channels = 256

model.pixel_mean = IMAGENET_PIXEL_MEAN
model.pixel_std = IMAGENET_PIXEL_STD
model.input_format = "RGB"
