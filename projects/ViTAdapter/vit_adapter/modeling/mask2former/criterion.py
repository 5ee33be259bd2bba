"""Mask2Former's losses: weighted cross-entropy of the classes (no-object
down-weighted) and point-sampled mask BCE + dice on the matched queries, on
every decoder stage (deep supervision)."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from detectron2.utils import comm
from torch import nn

from .matcher import HungarianMatcher

__all__ = ["SetCriterion", "dice_loss", "sigmoid_bce_loss", "mask_uncertainty"]


def mask_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of mask logits (M, 1, P): ``-|logit|`` (highest at the boundary)."""
    return -logits.abs()


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Sum over masks of the mean-over-points BCE, divided by `num_masks`.

    Args:
        logits, targets: (M, P) point logits and targets in [0, 1].
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float, eps: float = 1.0) -> torch.Tensor:
    """Sum over masks of ``1 - (2 sum(p t) + eps) / (sum p + sum t + eps)``
    (p = sigmoid(logits)), divided by `num_masks`.

    Args:
        logits, targets: (M, P) point logits and targets in [0, 1].
    """
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + eps) / (denominator + eps)).sum() / num_masks


class SetCriterion(nn.Module):
    """Matches every decoder stage's queries to the targets and returns the
    weighted losses of all stages.

    Loss names (the release's): ``loss_cls``, ``loss_mask``, ``loss_dice`` for
    the final stage, ``d{i}.loss_*`` for stage ``i`` (0 = before the first
    decoder layer). Each value is already multiplied by its weight.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ):
        """
        Args:
            num_classes: classes, without no-object.
            matcher: the :class:`HungarianMatcher`.
            class_weight, mask_weight, dice_weight: loss weights.
            no_object_weight: cross-entropy weight of the no-object class
                (the other classes have 1).
            num_points, oversample_ratio, importance_sample_ratio: point
                sampling of the mask losses (PointRend's importance sampling:
                ``num_points * oversample_ratio`` random candidates, the
                ``importance_sample_ratio`` most uncertain kept, the rest uniform).
        """
        super().__init__()
        if not 0.0 <= importance_sample_ratio <= 1.0 or oversample_ratio < 1.0:
            raise ValueError(
                "SetCriterion: importance_sample_ratio must be in [0, 1] and oversample_ratio >= 1, got "
                f"{importance_sample_ratio!r}, {oversample_ratio!r}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def class_loss(self, class_logits: torch.Tensor, targets: List[Dict[str, torch.Tensor]],
                   indices: List[Tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Weighted-mean cross-entropy over all queries; unmatched queries'
        target is no-object (index ``num_classes``)."""
        n, q, _ = class_logits.shape
        target_classes = torch.full((n, q), self.num_classes, dtype=torch.long, device=class_logits.device)
        for b, (src, tgt) in enumerate(indices):
            target_classes[b, src.to(class_logits.device)] = targets[b]["labels"][tgt.to(class_logits.device)]
        return F.cross_entropy(class_logits.flatten(0, 1).float(), target_classes.flatten(),
                               weight=self.empty_weight.to(class_logits.device))

    def mask_losses(self, mask_logits: torch.Tensor, targets: List[Dict[str, torch.Tensor]],
                    indices: List[Tuple[torch.Tensor, torch.Tensor]], num_masks: float) -> Tuple[torch.Tensor, torch.Tensor]:
        """(BCE, dice) of the matched masks on importance-sampled points."""
        device = mask_logits.device
        src = torch.cat([mask_logits[b, i.to(device)] for b, (i, _) in enumerate(indices)])
        tgt = torch.cat([targets[b]["masks"][j.to(device)] for b, (_, j) in enumerate(indices)])
        if src.shape[0] == 0:
            zero = mask_logits.sum() * 0.0
            return zero, zero
        src = src[:, None].float()
        with torch.no_grad():
            coords = get_uncertain_point_coords_with_randomness(
                src, mask_uncertainty, self.num_points, self.oversample_ratio, self.importance_sample_ratio)
            point_targets = point_sample(tgt[:, None].to(src.dtype), coords, align_corners=False)[:, 0]
        point_logits = point_sample(src, coords, align_corners=False)[:, 0]
        return (sigmoid_bce_loss(point_logits, point_targets, num_masks),
                dice_loss(point_logits, point_targets, num_masks))

    def stage_losses(self, prediction: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]],
                     num_masks: float) -> Dict[str, torch.Tensor]:
        """Weighted losses of one decoder stage ("loss_cls", "loss_mask", "loss_dice")."""
        indices = self.matcher(prediction["pred_logits"], prediction["pred_masks"], targets)
        loss_mask, loss_dice = self.mask_losses(prediction["pred_masks"], targets, indices, num_masks)
        return {
            "loss_cls": self.class_weight * self.class_loss(prediction["pred_logits"], targets, indices),
            "loss_mask": self.mask_weight * loss_mask,
            "loss_dice": self.dice_weight * loss_dice,
        }

    def forward(self, predictions: List[Dict[str, torch.Tensor]],
                targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """
        Args:
            predictions: the decoder's stages (last = final), dicts with
                "pred_logits" (N, Q, K + 1) and "pred_masks" (N, Q, h, w).
            targets: N dicts with "labels" (G_i,) long and "masks" (G_i, H, W)
                float (any resolution: the losses sample normalised points).

        Returns:
            dict of weighted losses, 3 per stage.
        """
        num_masks = sum(int(t["labels"].numel()) for t in targets)
        num_masks = torch.as_tensor([num_masks], dtype=torch.float, device=predictions[-1]["pred_logits"].device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num_masks)
        num_masks = max(num_masks.item() / comm.get_world_size(), 1.0)
        losses = {}
        for i, prediction in enumerate(predictions):
            prefix = "" if i == len(predictions) - 1 else f"d{i}."
            for name, value in self.stage_losses(prediction, targets, num_masks).items():
                losses[prefix + name] = value
        return losses
