"""Cascade R-CNN heads as in the ViT-Adapter release (mmdetection 2.x CascadeRoIHead).

detectron2's :class:`CascadeROIHeads` only supports class-agnostic box
regression: each stage passes one box per proposal to the next. The release's
Cascade Mask R-CNN configs regress per class (``reg_class_agnostic=False``),
so their checkpoints (``fc_reg``: 4 x num_classes outputs) do not fit it.
:class:`ClassSpecificCascadeROIHeads` adds mmdetection's rule for passing
class-specific boxes between stages, its per-stage loss weights, its per-stage
RoI sampling and its per-stage mask heads.

mmdetection 2.x ``CascadeRoIHead`` as configured by the release
(``_base_/models/cascade_mask_rcnn_r50_fpn.py`` + the ViT-Adapter cascade configs):

* every stage assigns its RoIs with its own IoU threshold (0.5 / 0.6 / 0.7)
  and samples 512 of them per image (``RandomSampler``, 25% positive,
  ``add_gt_as_proposals=True``); before stage k > 0 samples, the refined boxes
  of the gt boxes that stage k - 1 added as proposals are removed
  (``refine_bboxes`` drops ``pos_is_gt``) and the gt boxes are added again;
* a single ``mask_head`` dict is replicated into one FCNMaskHead per stage;
  stage k's head trains on stage k's positive sampled RoIs, its loss scaled by
  ``stage_loss_weights[k]`` (as the box losses);
* at test time every stage's mask head runs on the final detections (the
  mask RoIs pooled once: 14 x 14, as the shared ``mask_roi_extractor``
  config), and the sigmoid mask probabilities are averaged over the stages
  (``merge_aug_masks``) before pasting / thresholding at 0.5.
"""
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.layers import cat
from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import get_event_storage
from torch import nn

__all__ = ["ClassSpecificCascadeROIHeads", "average_mask_probs"]


def average_mask_probs(mask_logits: Sequence[torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
    """Mean over stages of the sigmoid mask probabilities of each RoI's class.

    Args:
        mask_logits: one (R, C, M, M) tensor per stage (C = 1: class-agnostic).
        classes: (R,) predicted class of each RoI.

    Returns:
        (R, 1, M, M) probabilities (mmdetection ``merge_aug_masks`` without
        weights, then the class channel, as ``FCNMaskHead.get_seg_masks``).
    """
    if not mask_logits:
        raise ValueError("average_mask_probs needs the mask logits of at least one stage")
    rows = torch.arange(classes.numel(), device=classes.device)
    probs = []
    for logits in mask_logits:
        chosen = logits[:, :1] if logits.shape[1] == 1 else logits[rows, classes][:, None]
        probs.append(chosen.sigmoid())
    return torch.stack(probs).mean(dim=0)


class ClassSpecificCascadeROIHeads(CascadeROIHeads):
    """:class:`CascadeROIHeads` whose stages may regress one box per class,
    optionally with mmdetection's per-stage RoI sampling and mask heads.

    Between stages each proposal moves to the box of one class (mmdetection's
    ``refine_bboxes`` / ``regress_by_class``): its ground-truth class when it is
    foreground during training, otherwise the highest-scoring foreground class.
    The last stage's per-class boxes go to the usual class-specific inference
    (scores averaged over stages, as detectron2 and mmdetection both do).
    Class-agnostic predictors (4 outputs), no stage weights, one mask head and
    no per-stage sampling behave exactly as detectron2's CascadeROIHeads.
    """

    def __init__(
        self,
        *,
        stage_loss_weights: Optional[Sequence[float]] = None,
        mask_heads: Optional[Sequence[nn.Module]] = None,
        sample_every_stage: bool = False,
        **kwargs,
    ):
        """
        Args:
            stage_loss_weights (list[float] or None): weight of each stage's box
                (and per-stage mask) losses (mmdetection: 1, 0.5, 0.25). None
                keeps detectron2's rule (stage losses summed, box features'
                gradient scaled by 1 / num_stages); given weights replace that
                gradient scaling.
            mask_heads (list[nn.Module] or None): one mask head per stage
                (mmdetection): stage k's head trains on stage k's foreground
                RoIs, and at test time all heads' mask probabilities are
                averaged. None: detectron2's single ``mask_head`` (trained on the
                first stage's RoIs, run on the final boxes). Not both.
            sample_every_stage (bool): stages after the first also sample
                ``batch_size_per_image`` RoIs at ``positive_fraction`` from the
                refined boxes with the gt boxes added (mmdetection); False:
                they train on every refined box (detectron2).
            kwargs: as :class:`CascadeROIHeads`.
        """
        num_stages = len(kwargs.get("box_heads", ()))
        if mask_heads is not None:
            if kwargs.get("mask_head") is not None:
                raise ValueError("give either mask_head (one head) or mask_heads (one per stage), not both")
            if len(mask_heads) != num_stages:
                raise ValueError(f"mask_heads has {len(mask_heads)} heads for {num_stages} cascade stages")
            kwargs["mask_head"] = nn.ModuleList(mask_heads)
        super().__init__(**kwargs)
        if stage_loss_weights is not None:
            stage_loss_weights = [float(w) for w in stage_loss_weights]
            if len(stage_loss_weights) != self.num_cascade_stages:
                raise ValueError(
                    f"stage_loss_weights has {len(stage_loss_weights)} entries for "
                    f"{self.num_cascade_stages} cascade stages"
                )
        self.stage_loss_weights = stage_loss_weights
        self.mask_per_stage = mask_heads is not None
        self.sample_every_stage = bool(sample_every_stage)

    def _stage_weight(self, stage: int) -> float:
        return 1.0 if self.stage_loss_weights is None else self.stage_loss_weights[stage]

    # ---------------------------------------------------------------- training labels

    @torch.no_grad()
    def label_and_sample_proposals(self, proposals: List[Instances], targets: List[Instances]) -> List[Instances]:
        if not self.sample_every_stage:
            return super().label_and_sample_proposals(proposals, targets)
        return self._label_stage(proposals, targets, 0, sample=True)

    @torch.no_grad()
    def _label_stage(self, proposals, targets, stage: int, sample: bool) -> List[Instances]:
        """Match (and, with `sample`, add the gt boxes and sample) one stage's RoIs.

        Every returned Instances has ``proposal_boxes``, ``gt_classes`` (background
        = num_classes), ``gt_boxes``, and ``proposal_is_gt`` (the RoI is a gt box
        added as a proposal); the other ``gt_*`` fields of the targets (masks)
        only where a mask head trains on this stage (stage 0, or per-stage heads).
        """
        copy_all = stage == 0 or self.mask_per_stage
        out, num_fg, num_bg = [], [], []
        for props, tgt in zip(proposals, targets):
            boxes = props.proposal_boxes
            is_gt = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
            if sample and self.proposal_append_gt:
                boxes = Boxes.cat([boxes, tgt.gt_boxes])
                is_gt = torch.cat([is_gt, torch.ones(len(tgt), dtype=torch.bool, device=boxes.device)])
            matched_idxs, matched_labels = self.proposal_matchers[stage](pairwise_iou(tgt.gt_boxes, boxes))
            if sample:
                idxs, gt_classes = self._sample_proposals(matched_idxs, matched_labels, tgt.gt_classes)
            else:
                idxs = torch.arange(len(boxes), device=boxes.device)
                gt_classes = torch.full_like(matched_idxs, self.num_classes)
                if len(tgt) > 0:
                    gt_classes = torch.where(matched_labels == 1, tgt.gt_classes[matched_idxs], gt_classes)
            new = Instances(props.image_size, proposal_boxes=boxes[idxs], proposal_is_gt=is_gt[idxs])
            new.gt_classes = gt_classes
            if len(tgt) > 0:
                for name, value in tgt.get_fields().items():
                    if name.startswith("gt_") and not new.has(name) and (copy_all or name == "gt_boxes"):
                        new.set(name, value[matched_idxs[idxs]])
            else:
                new.gt_boxes = Boxes(boxes.tensor.new_zeros((len(idxs), 4)))
            num_bg.append((gt_classes == self.num_classes).sum().item())
            num_fg.append(gt_classes.numel() - num_bg[-1])
            out.append(new)
        storage = get_event_storage()
        scope = "roi_head" if stage == 0 else f"stage{stage}/roi_head"
        storage.put_scalar(f"{scope}/num_fg_samples", sum(num_fg) / max(len(num_fg), 1))
        storage.put_scalar(f"{scope}/num_bg_samples", sum(num_bg) / max(len(num_bg), 1))
        return out

    @torch.no_grad()
    def _match_and_label_boxes(self, proposals, stage, targets):
        # detectron2's labels (plus gt_masks when per-stage mask heads train on this stage)
        return self._label_stage(proposals, targets, stage, sample=False)

    # ---------------------------------------------------------------- box branch

    def _run_stage(self, features, proposals, stage):
        if self.stage_loss_weights is None:
            return super()._run_stage(features, proposals, stage)
        box_features = self.box_pooler(features, [x.proposal_boxes for x in proposals])
        return self.box_predictor[stage](self.box_head[stage](box_features))

    def _boxes_for_next_stage(self, predictor, predictions, proposals) -> List[torch.Tensor]:
        """Per image (R_i, 4) boxes: the box of each proposal's chosen class."""
        boxes = predictor.predict_boxes(predictions, proposals)
        if boxes and boxes[0].shape[1] == 4:  # class-agnostic
            return boxes
        scores = predictions[0]
        labels = scores[:, :-1].argmax(dim=1)  # best foreground class (mmdet: cls_score[:, :-1])
        if self.training:
            gt = torch.cat([p.gt_classes for p in proposals])
            labels = torch.where(gt < self.num_classes, gt, labels)
        out = []
        for b, lab in zip(boxes, labels.split([len(p) for p in proposals])):
            out.append(b.view(b.shape[0], -1, 4)[torch.arange(b.shape[0], device=b.device), lab])
        return out

    def _run_cascade(self, features, proposals, targets=None):
        """All stages: list of (predictor, predictions, proposals) per stage."""
        features = [features[f] for f in self.box_in_features]
        head_outputs = []
        prev_pred_boxes = None
        image_sizes = [x.image_size for x in proposals]
        for k in range(self.num_cascade_stages):
            if k > 0:
                if self.training and self.sample_every_stage:  # mmdet refine_bboxes: drop the added gt
                    prev_pred_boxes = [
                        b[~p.proposal_is_gt] if p.has("proposal_is_gt") else b
                        for b, p in zip(prev_pred_boxes, proposals)
                    ]
                proposals = self._create_proposals_from_boxes(prev_pred_boxes, image_sizes)
                if self.training:
                    proposals = self._label_stage(proposals, targets, k, sample=self.sample_every_stage)
            predictions = self._run_stage(features, proposals, k)
            prev_pred_boxes = self._boxes_for_next_stage(self.box_predictor[k], predictions, proposals)
            head_outputs.append((self.box_predictor[k], predictions, proposals))
        return head_outputs

    def _box_losses(self, head_outputs) -> Dict[str, torch.Tensor]:
        losses = {}
        storage = get_event_storage()
        for stage, (predictor, predictions, props) in enumerate(head_outputs):
            with storage.name_scope(f"stage{stage}"):
                stage_losses = predictor.losses(predictions, props)
            w = self._stage_weight(stage)
            losses.update({f"{k}_stage{stage}": v * w for k, v in stage_losses.items()})
        return losses

    def _forward_box(self, features, proposals, targets=None):
        head_outputs = self._run_cascade(features, proposals, targets)
        if self.training:
            return self._box_losses(head_outputs)

        scores_per_stage = [h[0].predict_probs(h[1], h[2]) for h in head_outputs]
        scores = [
            sum(list(per_image)) * (1.0 / self.num_cascade_stages) for per_image in zip(*scores_per_stage)
        ]
        predictor, predictions, props = head_outputs[-1]
        boxes = predictor.predict_boxes(predictions, props)
        pred_instances, _ = fast_rcnn_inference(
            boxes, scores, [x.image_size for x in proposals], predictor.test_score_thresh,
            predictor.test_nms_thresh, predictor.test_topk_per_image,
        )
        return pred_instances

    # ---------------------------------------------------------------- per-stage masks

    def forward(self, images, features, proposals, targets=None):
        if not (self.training and self.mask_per_stage):
            return super().forward(images, features, proposals, targets)
        del images
        proposals = self.label_and_sample_proposals(proposals, targets)
        head_outputs = self._run_cascade(features, proposals, targets)
        losses = self._box_losses(head_outputs)
        losses.update(self._stage_mask_losses(features, [h[2] for h in head_outputs]))
        losses.update(self._forward_keypoint(features, proposals))
        return proposals, losses

    def _stage_mask_losses(self, features, stage_proposals) -> Dict[str, torch.Tensor]:
        """Stage k's mask head on stage k's foreground RoIs, loss x stage weight."""
        features = [features[f] for f in self.mask_in_features]
        losses = {}
        for k, props in enumerate(stage_proposals):
            fg, _ = select_foreground_proposals(props, self.num_classes)
            x = self.mask_pooler(features, [p.proposal_boxes for p in fg])
            losses[f"loss_mask_stage{k}"] = self.mask_head[k](x, fg)["loss_mask"] * self._stage_weight(k)
        return losses

    def _forward_mask(self, features, instances):
        if not self.mask_per_stage:
            return super()._forward_mask(features, instances)
        if self.training:
            raise RuntimeError("per-stage mask heads are trained in forward(), not _forward_mask()")
        x = self.mask_pooler([features[f] for f in self.mask_in_features], [i.pred_boxes for i in instances])
        classes = cat([i.pred_classes for i in instances]) if instances else torch.zeros(0, dtype=torch.long)
        probs = average_mask_probs([head.layers(x) for head in self.mask_head], classes)
        for inst, p in zip(instances, probs.split([len(i) for i in instances])):
            inst.pred_masks = p
        return instances
