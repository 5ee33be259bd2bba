"""Deformable attention with a projection moved across the sampling: the
faster formulations :class:`.module.MSDeformAttn` may take (built with
``reorder``; no autograd use). The operator itself
(:func:`.dispatch.ms_deform_attn`) knows nothing of projections.

Bilinear sampling and the attention-weighted sum are linear, so they commute
with the linear maps around them. Two reorderings, each cheaper on one side
of ViT-Adapter (same values up to float rounding):

* :func:`ms_deform_attn_project_last`: ``value_proj`` applied after the
  sampling, to each head's samples: a GEMM over the N * Lq * M samples
  instead of the N * S value tokens, and no padded table; fewer MACs when the
  queries are few next to the values (the injector).
* :func:`ms_deform_attn_output_projected`: ``output_proj`` applied to each
  head's values before the sampling, then one ``embedding_bag`` per query
  over all heads' corners; fewer MACs when the values are few next to the
  queries (the extractor).

Both use the corner convention of :mod:`.corners` and take the operator's
normalised sampling locations (see :func:`.reference.ms_deform_attn_reference`).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

from .corners import bilinear_corners, padded_corners, value_table

__all__ = ["ms_deform_attn_project_last", "ms_deform_attn_output_projected"]


def ms_deform_attn_project_last(
    features: torch.Tensor,
    shapes: List[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    value_weight: torch.Tensor,
    value_bias: Optional[torch.Tensor],
) -> torch.Tensor:
    """Deformable attention over ``value = features @ value_weight.T + value_bias``
    (split into M heads), computed by sampling `features` and projecting each
    head's sample:
    ``sum_k a_k * bilinear(V_h, p_k) = (sum_k a_k * bilinear(F, p_k)) @ W_h.T + b_h * sum_k a_k * inside_k``
    (``inside_k``: the bilinear weight of p_k's corners inside the map).

    Args:
        features: (N, S, C) un-projected values, levels concatenated row-major.
        shapes: [(H_l, W_l), ...].
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y).
        attention_weights: (N, Lq, M, L, P).
        value_weight: (M * Dh, C); value_bias: (M * Dh,) or None.
    Returns:
        (N, Lq, M * Dh)
    """
    n, s, c = features.shape
    _, lq, m = sampling_locations.shape[:3]
    dh = value_weight.shape[0] // m
    # One row per (batch item, position), shared by the heads: no table copy.
    table = value_table(shapes, n, m, padded=False, order="ns")
    index, weights = bilinear_corners(table, sampling_locations, attention_weights)
    index, weights = index.view(n * lq * m, -1), weights.view(n * lq * m, -1)
    sampled = F.embedding_bag(index, features.reshape(n * s, c), per_sample_weights=weights, mode="sum")
    # (M, N*Lq, C) @ (M, C, Dh): every head's samples through its value_proj rows.
    heads = torch.bmm(sampled.view(n * lq, m, c).transpose(0, 1), value_weight.view(m, dh, c).transpose(1, 2))
    out = heads.transpose(0, 1)  # (N*Lq, M, Dh)
    if value_bias is not None:
        out = torch.addcmul(out, weights.sum(-1).view(n * lq, m, 1), value_bias.view(m, dh))
    return out.reshape(n, lq, m * dh)


def ms_deform_attn_output_projected(
    value: torch.Tensor,
    shapes: List[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    output_weight: torch.Tensor,
) -> torch.Tensor:
    """``ms_deform_attn(value, ...) @ output_weight.T``, with the projection
    applied to the values before sampling:
    ``sum_h sample_h @ W_o[:, h].T == sum_h sum_k a_k bilinear(V_h @ W_o[:, h].T, p_k)``.

    Args:
        value: (N, S, M, Dh) projected values (value_proj output).
        shapes: [(H_l, W_l), ...].
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y).
        attention_weights: (N, Lq, M, L, P).
        output_weight: (D_out, M * Dh), ``output_proj.weight`` (its bias is the caller's).
    Returns:
        (N, Lq, D_out)
    """
    n, _, m, dh = value.shape
    lq = sampling_locations.shape[1]
    d_out = output_weight.shape[0]
    rows, _, index, weights = padded_corners(value, shapes, sampling_locations, attention_weights, order="mns")
    # (M, N*S_pad, Dh) @ (M, Dh, D_out): the head-major projected table (zero borders stay zero).
    projected = torch.bmm(rows.view(-1, m, dh).transpose(0, 1), output_weight.view(d_out, m, dh).permute(1, 2, 0))
    # One bag per query: all heads' corners.
    out = F.embedding_bag(index.view(n * lq, -1), projected.view(-1, d_out),
                          per_sample_weights=weights.view(n * lq, -1), mode="sum")
    return out.view(n, lq, d_out)
