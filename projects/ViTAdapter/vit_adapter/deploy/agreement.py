"""How well two detectors' outputs on one image agree (numpy only).

Detections are dicts as returned by :class:`vit_adapter.deploy.OnnxPredictor`:
``boxes`` (N, 4) xyxy, ``scores`` (N,), ``classes`` (N,), optional ``masks``
(N, H, W) bool.
"""
from typing import Dict

import numpy as np

__all__ = ["box_iou", "agreement"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4), (M, 4) xyxy boxes -> (N, M) IoU."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def agreement(reference: Dict[str, np.ndarray], other: Dict[str, np.ndarray], top_k: int = 50,
              min_box_iou: float = 0.99, score_tol: float = 1e-3, min_mask_iou: float = 0.95) -> Dict:
    """Match the `top_k` highest-scoring `reference` detections to `other`'s.

    A reference detection is matched by an unused `other` detection of the
    same class with box IoU > `min_box_iou`, score within `score_tol` and
    (when both have masks) mask IoU >= `min_mask_iou`; the candidate with the
    highest box IoU is taken.

    Returns:
        dict: ``checked`` (reference detections considered), ``matched``,
        ``fraction`` (matched / checked, 1.0 when nothing to check),
        ``min_box_iou`` / ``max_score_diff`` / ``min_mask_iou`` over the matches.
    """
    order = np.argsort(-reference["scores"], kind="stable")[:top_k]
    ious = box_iou(reference["boxes"][order], other["boxes"])
    with_masks = "masks" in reference and "masks" in other
    used = np.zeros(len(other["scores"]), dtype=bool)
    stats = {"box_iou": [], "score_diff": [], "mask_iou": []}
    for row, i in enumerate(order):
        ok = (~used & (other["classes"] == reference["classes"][i]) & (ious[row] > min_box_iou)
              & (np.abs(other["scores"] - reference["scores"][i]) <= score_tol))
        for j in np.flatnonzero(ok)[np.argsort(-ious[row][ok], kind="stable")]:
            mask_iou = 1.0
            if with_masks:
                a, b = reference["masks"][i], other["masks"][j]
                union = np.logical_or(a, b).sum()
                mask_iou = float(np.logical_and(a, b).sum() / union) if union else 1.0
                if mask_iou < min_mask_iou:
                    continue
            used[j] = True
            stats["box_iou"].append(float(ious[row, j]))
            stats["score_diff"].append(float(abs(other["scores"][j] - reference["scores"][i])))
            stats["mask_iou"].append(mask_iou)
            break
    matched = len(stats["box_iou"])
    return {
        "checked": len(order),
        "matched": matched,
        "fraction": matched / len(order) if len(order) else 1.0,
        "min_box_iou": min(stats["box_iou"], default=float("nan")),
        "max_score_diff": max(stats["score_diff"], default=float("nan")),
        "min_mask_iou": min(stats["mask_iou"], default=float("nan")),
    }
