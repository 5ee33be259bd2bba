"""Cascade Mask R-CNN + FPN with the ViT-Adapter backbone (ViT-Adapter-S by default).

The official `detection/configs/cascade_rcnn/cascade_mask_rcnn_deit_adapter_small_fpn_3x_coco.py`
(mmdetection `_base_/models/cascade_mask_rcnn_r50_fpn.py`). Backbone, FPN,
RPN, poolers, mask head and pixel normalisation are those of
`mask_rcnn_vit_adapter.py`. Per cascade stage, as released:

- box head: 4 conv 3x3 256 + 1 FC 1024 with SyncBN ("ConvFCBBoxHead",
  num_shared_convs=4, num_shared_fcs=1, norm_cfg SyncBN);
- class-specific regression (reg_class_agnostic=False): between stages each
  proposal moves to the box of its gt class (training, foreground) or of its
  best-scoring class (vit_adapter.modeling.roi_heads.ClassSpecificCascadeROIHeads;
  detectron2's CascadeROIHeads is class-agnostic only);
- IoU thresholds 0.5 / 0.6 / 0.7; delta stds (0.1, 0.1, 0.2, 0.2),
  (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067) == detectron2 weights
  (10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15);
- box loss: GIoU on the decoded boxes, weight 10 (reg_decoded_bbox=True);
- stage loss weights 1 / 0.5 / 0.25 (and no 1/3 gradient scaling on the box
  features, which is detectron2's rule).

Still different from the release (paper: Cascade-S 86M, -B 158M params):

- one mask head, on the last stage's boxes; mmdetection's CascadeRoIHead
  builds a mask head per stage (a single mask_head dict is replicated), trains
  each with its stage's loss weight and averages the three stages' mask
  probabilities at test time. -5.29M parameters (2 x 2.64M); the converter
  keeps one stage's mask head (vit_adapter.checkpoint.official).
- stages 2 and 3 train on all boxes refined by the previous stage
  (detectron2), not on 512 re-sampled RoIs with the gt boxes added again
  (mmdetection's per-stage sampler).
- the head convs' "SyncBN" is detectron2's (torch.nn.SyncBatchNorm: a plain
  BatchNorm in one process; multi-process needs CUDA / NCCL).
"""
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers

from vit_adapter.modeling.roi_heads import ClassSpecificCascadeROIHeads

from .mask_rcnn_vit_adapter import model

# arguments that do not exist for Cascade R-CNN
[model.roi_heads.pop(k) for k in ["box_head", "box_predictor", "proposal_matcher"]]

model.roi_heads.update(
    _target_=ClassSpecificCascadeROIHeads,
    stage_loss_weights=[1.0, 0.5, 0.25],
    box_heads=[
        L(FastRCNNConvFCHead)(
            input_shape=ShapeSpec(channels=256, height=7, width=7),
            conv_dims=[256, 256, 256, 256],
            fc_dims=[1024],
            conv_norm="SyncBN",
        )
        for _ in range(3)
    ],
    box_predictors=[
        L(FastRCNNOutputLayers)(
            input_shape=ShapeSpec(channels=1024),
            test_score_thresh=0.05,
            box2box_transform=L(Box2BoxTransform)(weights=(w1, w1, w2, w2)),
            cls_agnostic_bbox_reg=False,
            box_reg_loss_type="giou",
            loss_weight={"loss_box_reg": 10.0},
            num_classes="${...num_classes}",
        )
        for (w1, w2) in [(10, 5), (20, 10), (30, 15)]
    ],
    proposal_matchers=[
        L(Matcher)(thresholds=[th], labels=[0, 1], allow_low_quality_matches=False)
        for th in [0.5, 0.6, 0.7]
    ],
)
