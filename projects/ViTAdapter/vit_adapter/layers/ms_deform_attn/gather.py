"""The formulation written for ``torch.compile`` (the default on CUDA): the
four corners of every point gathered by plain indexing, then a weighted sum.
Eager mode materialises the gathered rows; Inductor fuses the gather, the
reduction and, in the backward, the scatter."""
import torch

from .corners import padded_corners

__all__ = ["ms_deform_attn_gather"]


def ms_deform_attn_gather(
    value: torch.Tensor,
    value_spatial_shapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Same contract as :func:`.reference.ms_deform_attn_reference`."""
    n, _, m, dh = value.shape
    lq = sampling_locations.shape[1]
    rows, _, index, weights = padded_corners(value, value_spatial_shapes, sampling_locations, attention_weights)
    b = n * lq * m
    out = (rows[index.view(b, -1)] * weights.view(b, -1, 1)).sum(1)
    return out.view(n, lq, m * dh)
