"""Cascade R-CNN heads as in the ViT-Adapter release (mmdetection 2.x CascadeRoIHead).

detectron2's :class:`CascadeROIHeads` only supports class-agnostic box
regression: each stage passes one box per proposal to the next. The release's
Cascade Mask R-CNN configs regress per class (``reg_class_agnostic=False``),
so their checkpoints (``fc_reg``: 4 x num_classes outputs) do not fit it.
:class:`ClassSpecificCascadeROIHeads` adds mmdetection's rule for passing
class-specific boxes between stages and its per-stage loss weights.
"""
from typing import List, Optional, Sequence

import torch
from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.utils.events import get_event_storage

__all__ = ["ClassSpecificCascadeROIHeads"]


class ClassSpecificCascadeROIHeads(CascadeROIHeads):
    """:class:`CascadeROIHeads` whose stages may regress one box per class.

    Between stages each proposal moves to the box of one class (mmdetection's
    ``refine_bboxes`` / ``regress_by_class``): its ground-truth class when it is
    foreground during training, otherwise the highest-scoring foreground class.
    The last stage's per-class boxes go to the usual class-specific inference
    (scores averaged over stages, as detectron2 and mmdetection both do).
    Class-agnostic predictors (4 outputs) behave exactly as in detectron2.
    """

    def __init__(self, *, stage_loss_weights: Optional[Sequence[float]] = None, **kwargs):
        """
        Args:
            stage_loss_weights (list[float] or None): weight of each stage's box
                losses (mmdetection: 1, 0.5, 0.25). None keeps detectron2's rule
                (stage losses summed, box features' gradient scaled by
                1 / num_stages); given weights replace that gradient scaling.
            kwargs: as :class:`CascadeROIHeads`.
        """
        super().__init__(**kwargs)
        if stage_loss_weights is not None:
            stage_loss_weights = [float(w) for w in stage_loss_weights]
            if len(stage_loss_weights) != self.num_cascade_stages:
                raise ValueError(
                    f"stage_loss_weights has {len(stage_loss_weights)} entries for "
                    f"{self.num_cascade_stages} cascade stages"
                )
        self.stage_loss_weights = stage_loss_weights

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

    def _forward_box(self, features, proposals, targets=None):
        features = [features[f] for f in self.box_in_features]
        head_outputs = []  # (predictor, predictions, proposals)
        prev_pred_boxes = None
        image_sizes = [x.image_size for x in proposals]
        for k in range(self.num_cascade_stages):
            if k > 0:
                proposals = self._create_proposals_from_boxes(prev_pred_boxes, image_sizes)
                if self.training:
                    proposals = self._match_and_label_boxes(proposals, k, targets)
            predictions = self._run_stage(features, proposals, k)
            prev_pred_boxes = self._boxes_for_next_stage(self.box_predictor[k], predictions, proposals)
            head_outputs.append((self.box_predictor[k], predictions, proposals))

        if self.training:
            losses = {}
            storage = get_event_storage()
            for stage, (predictor, predictions, props) in enumerate(head_outputs):
                with storage.name_scope(f"stage{stage}"):
                    stage_losses = predictor.losses(predictions, props)
                w = 1.0 if self.stage_loss_weights is None else self.stage_loss_weights[stage]
                losses.update({f"{k}_stage{stage}": v * w for k, v in stage_losses.items()})
            return losses

        scores_per_stage = [h[0].predict_probs(h[1], h[2]) for h in head_outputs]
        scores = [
            sum(list(per_image)) * (1.0 / self.num_cascade_stages) for per_image in zip(*scores_per_stage)
        ]
        predictor, predictions, props = head_outputs[-1]
        boxes = predictor.predict_boxes(predictions, props)
        pred_instances, _ = fast_rcnn_inference(
            boxes, scores, image_sizes, predictor.test_score_thresh, predictor.test_nms_thresh,
            predictor.test_topk_per_image,
        )
        return pred_instances
