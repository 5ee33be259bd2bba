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
- stage loss weights 1 / 0.5 / 0.25 on every stage's box and mask losses
  (and no 1/3 gradient scaling on the box features, which is detectron2's rule);
- one mask head per stage (mmdetection replicates the single mask_head dict):
  stage k's head trains on stage k's foreground RoIs; at test time the three
  heads run on the final boxes and their mask probabilities are averaged
  (`mask_heads`);
- every stage samples 512 RoIs per image, 25% positive, with the gt boxes
  added (stages 2 and 3 re-sample from the refined boxes, after dropping the
  refined copies of the previous stage's gt proposals) (`sample_every_stage`).

Paper parameter counts of this detector (80 classes): S 86M, B 158M
(tests/modeling/test_param_counts.py checks them; measured counts in docs/dinov2_and_cascade.md).

detectron2's cascade behaviour instead (one mask head trained on the first
stage's RoIs, later stages on every refined box):

    model.roi_heads.mask_head = model.roi_heads.mask_heads[0]
    model.roi_heads.mask_head.num_classes = "${..num_classes}"
    model.roi_heads.mask_heads = None
    model.roi_heads.sample_every_stage = False

Still different from the release: the head convs' "SyncBN" is detectron2's
(torch.nn.SyncBatchNorm: a plain BatchNorm in one process; multi-process
needs CUDA / NCCL).
"""
import copy

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.roi_heads import FastRCNNConvFCHead, FastRCNNOutputLayers

from vit_adapter.modeling.roi_heads import ClassSpecificCascadeROIHeads

from .mask_rcnn_vit_adapter import model

# arguments that do not exist for Cascade R-CNN
[model.roi_heads.pop(k) for k in ["box_head", "box_predictor", "proposal_matcher"]]
_mask_head = model.roi_heads.pop("mask_head")
_mask_head.num_classes = "${...num_classes}"  # one level deeper: inside the mask_heads list

model.roi_heads.update(
    _target_=ClassSpecificCascadeROIHeads,
    stage_loss_weights=[1.0, 0.5, 0.25],
    mask_heads=[copy.deepcopy(_mask_head) for _ in range(3)],
    sample_every_stage=True,
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
