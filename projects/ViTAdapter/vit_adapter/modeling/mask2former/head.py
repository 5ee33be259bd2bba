"""Mask2Former as a detectron2 ``sem_seg_head``.

Contract (detectron2's ``SemanticSegmentor`` and our sliding-window segmentor):
``forward(features, targets=None) -> (scores, losses)``; training takes the
(N, H, W) long semantic targets (``ignore_value`` where unlabelled) and
returns ``(None, losses)``; inference returns ``(scores, {})`` with per-class
semantic scores (N, num_classes, H, W) at the padded input size.
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .criterion import SetCriterion
from .pixel_decoder import MSDeformAttnPixelDecoder
from .transformer_decoder import MaskedAttentionDecoder

__all__ = ["Mask2FormerHead", "semantic_inference", "semantic_to_instances"]


def semantic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Per-class semantic scores from query predictions: softmax over the
    classes with no-object dropped, times the sigmoid masks, summed over queries.

    Args:
        class_logits: (N, Q, K + 1), no-object last; mask_logits: (N, Q, h, w).

    Returns:
        (N, K, h, w) scores.
    """
    probs = class_logits.softmax(-1)[..., :-1]
    return torch.einsum("nqk,nqhw->nkhw", probs, mask_logits.sigmoid())


def semantic_to_instances(sem_seg: torch.Tensor, ignore_value: int) -> Dict[str, torch.Tensor]:
    """One binary mask per class present in a semantic label map.

    Args:
        sem_seg: (H, W) long labels; `ignore_value` pixels belong to no mask.

    Returns:
        {"labels": (G,) long (sorted), "masks": (G, H, W) float}.
    """
    labels = torch.unique(sem_seg)
    labels = labels[labels != ignore_value]
    masks = (sem_seg[None] == labels[:, None, None]).float()
    return {"labels": labels, "masks": masks}


class Mask2FormerHead(nn.Module):
    """Pixel decoder + masked-attention decoder (+ criterion in training) over
    a backbone's (1/4, 1/8, 1/16, 1/32) maps.

    Child names (for checkpoints): ``pixel_decoder``, ``predictor`` (the
    transformer decoder with its queries and prediction heads), ``criterion``
    (no parameters).
    """

    def __init__(
        self,
        *,
        in_features: Sequence[str],
        pixel_decoder: MSDeformAttnPixelDecoder,
        predictor: MaskedAttentionDecoder,
        criterion: SetCriterion,
        num_classes: int,
        ignore_value: int = 255,
        mask_stride: int = 4,
    ):
        """
        Args:
            in_features: backbone outputs, finest first (e.g. "res2".."res5").
            pixel_decoder, predictor, criterion: the parts.
            num_classes: classes (without no-object); must equal the predictor's.
            ignore_value: label of unlabelled pixels in the targets.
            mask_stride: input stride of the mask features (the output is
                upsampled by it).
        """
        super().__init__()
        if len(in_features) != 4:
            raise ValueError(f"Mask2FormerHead: in_features must name 4 maps (1/4..1/32), got {list(in_features)}")
        if predictor.num_classes != num_classes or criterion.num_classes != num_classes:
            raise ValueError(
                f"Mask2FormerHead: num_classes={num_classes} but the predictor has {predictor.num_classes} "
                f"and the criterion {criterion.num_classes}")
        self.in_features = list(in_features)
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.criterion = criterion
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.mask_stride = mask_stride

    def layers(self, features: Dict[str, torch.Tensor]) -> List[Dict[str, torch.Tensor]]:
        """Backbone maps -> the decoder's per-stage predictions (see
        :meth:`MaskedAttentionDecoder.forward`)."""
        missing = [f for f in self.in_features if f not in features]
        if missing:
            raise KeyError(f"Mask2FormerHead: backbone outputs {sorted(features)} lack {missing}")
        mask_features, multi_scale_features = self.pixel_decoder([features[f] for f in self.in_features])
        return self.predictor(multi_scale_features, mask_features)

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None):
        """
        Args:
            features: backbone maps by name.
            targets: training only, (N, H, W) long semantic labels at the
                padded input size.

        Returns:
            training: (None, dict of weighted losses); inference:
            ((N, num_classes, H, W) scores at mask_stride x the mask-feature size, {}).
        """
        predictions = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("Mask2FormerHead: training needs the (N, H, W) semantic targets")
            instances = [semantic_to_instances(t, self.ignore_value) for t in targets]
            return None, self.criterion(predictions, instances)
        final = predictions[-1]
        scores = semantic_inference(final["pred_logits"], final["pred_masks"])
        scores = F.interpolate(scores, scale_factor=self.mask_stride, mode="bilinear", align_corners=False)
        return scores, {}
