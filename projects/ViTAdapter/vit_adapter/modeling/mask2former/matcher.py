"""Hungarian matching of queries to ground-truth masks (Mask2Former's, on
randomly sampled points; ``scipy.optimize.linear_sum_assignment``, or
the equivalent :mod:`.assignment` without SciPy)."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import point_sample
from torch import nn

from .assignment import linear_sum_assignment

__all__ = ["HungarianMatcher", "batch_dice_cost", "batch_sigmoid_bce_cost"]


def batch_sigmoid_bce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction against every target.

    Args:
        logits: (Q, P) mask logits at P points; targets: (G, P) in [0, 1].

    Returns:
        (Q, G) cost: ``mean_p BCE(logits[q, p], targets[g, p])``.
    """
    pos = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def batch_dice_cost(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Dice loss of every prediction against every target.

    Args:
        logits: (Q, P) mask logits; targets: (G, P) in [0, 1]; eps: smoothing.

    Returns:
        (Q, G) cost: ``1 - (2 sum(p t) + eps) / (sum p + sum t + eps)``, p = sigmoid(logits).
    """
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + eps) / (denominator + eps)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets per image, minimising
    ``cost_class * (-p(class)) + cost_mask * BCE + cost_dice * dice`` with the
    mask costs on ``num_points`` uniformly random points shared by the image's
    predictions and targets. No gradient."""

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 num_points: int = 12544):
        super().__init__()
        if num_points <= 0:
            raise ValueError(f"HungarianMatcher: num_points must be positive, got {num_points!r}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    def cost_matrix(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
                    labels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """
        Args:
            class_logits: (Q, K + 1); mask_logits: (Q, h, w);
            labels: (G,) long; masks: (G, H, W) binary targets.

        Returns:
            (Q, G) float cost matrix.
        """
        cost = -class_logits.float().softmax(-1)[:, labels] * self.cost_class
        coords = torch.rand(1, self.num_points, 2, device=mask_logits.device)
        pred = point_sample(mask_logits[:, None].float(), coords.expand(mask_logits.shape[0], -1, -1),
                            align_corners=False)[:, 0]
        tgt = point_sample(masks[:, None].float(), coords.expand(masks.shape[0], -1, -1),
                           align_corners=False)[:, 0]
        return cost + self.cost_mask * batch_sigmoid_bce_cost(pred, tgt) + self.cost_dice * batch_dice_cost(pred, tgt)

    @staticmethod
    def assign(cost: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(Q, G) cost -> (query indices, target indices), each (min(Q, G),) long,
        the minimum-total-cost one-to-one assignment."""
        if not torch.isfinite(cost).all():
            raise FloatingPointError("HungarianMatcher: the cost matrix has NaN or inf entries")
        rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
        return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)

    @torch.no_grad()
    def forward(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
                targets: List[Dict[str, torch.Tensor]]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            class_logits: (N, Q, K + 1); mask_logits: (N, Q, h, w);
            targets: N dicts with "labels" (G_i,) long and "masks" (G_i, H, W).

        Returns:
            N pairs (query indices, target indices) (CPU long tensors).
        """
        out = []
        for b, target in enumerate(targets):
            if target["labels"].numel() == 0:
                empty = torch.zeros(0, dtype=torch.long)
                out.append((empty, empty))
                continue
            cost = self.cost_matrix(class_logits[b], mask_logits[b], target["labels"], target["masks"])
            out.append(self.assign(cost))
        return out
