"""The grid_sample formulation of multi-scale deformable attention: the
oracle every other formulation is tested against (the release's
``ms_deform_attn_core_pytorch``, written here in this project's style)."""
from typing import List, Tuple

import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn_reference", "shapes_as_list"]


def shapes_as_list(value_spatial_shapes, keep_traced: bool = False) -> List[Tuple[int, int]]:
    """(L, 2) tensor / nested sequence of (H, W) -> list of python int pairs.

    With `keep_traced` while tracing (ONNX export of this formulation), a
    tensor's sizes stay traced 0-d tensors and a sequence is returned as given,
    so the graph follows the input's size.
    """
    if keep_traced and torch.jit.is_tracing():
        if isinstance(value_spatial_shapes, torch.Tensor):
            return [(row[0], row[1]) for row in value_spatial_shapes.unbind(0)]
        return [(h, w) for h, w in value_spatial_shapes]
    if isinstance(value_spatial_shapes, torch.Tensor):
        value_spatial_shapes = value_spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in value_spatial_shapes]


def ms_deform_attn_reference(
    value: torch.Tensor,
    value_spatial_shapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention as one ``F.grid_sample`` per level.

    Heads are folded into the batch; a weighted sum over levels and points
    follows. This is the operator's contract, shared by every formulation.

    Args:
        value: (N, S, M, Dh) values, S = sum_l H_l * W_l, levels concatenated
            in order, each level flattened row-major (H_l, W_l).
        value_spatial_shapes: (L, 2) long tensor (or sequence) of (H_l, W_l).
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y) locations,
            (0, 0) = top-left corner of the map, (1, 1) = bottom-right corner.
            Points outside [0, 1] read zeros (bilinear, zero padding).
        attention_weights: (N, Lq, M, L, P) weights (softmax-normalised over
            L * P by the caller; any values are accepted here).

    Returns:
        (N, Lq, M * Dh) tensor.
    """
    n, _, m, dh = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = shapes_as_list(value_spatial_shapes, keep_traced=True)
    value_per_level = value.split([h * w for h, w in shapes], dim=1)
    # grid_sample with align_corners=False maps -1 / +1 to the outer pixel edges.
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        # (N, H*W, M, Dh) -> (N, M, Dh, H*W) -> (N*M, Dh, H, W)
        v = value_per_level[lvl].permute(0, 2, 3, 1).reshape(n * m, dh, h, w)
        # (N, Lq, M, P, 2) -> (N, M, Lq, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        # (N*M, Dh, Lq, P)
        sampled.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # (N, Lq, M, L, P) -> (N, M, Lq, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_levels * n_points)
    # (N*M, Dh, Lq, L, P) -> (N*M, Dh, Lq, L*P), weighted sum over L*P
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    # (N*M, Dh, Lq) -> (N, M*Dh, Lq) -> (N, Lq, M*Dh)
    return out.view(n, m * dh, lq).transpose(1, 2).contiguous()
