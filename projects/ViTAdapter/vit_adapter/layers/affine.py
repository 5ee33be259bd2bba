"""Folding per-channel affine maps into the linear map next to them."""
from typing import Optional, Tuple

import torch

__all__ = ["fold_affine"]

Affine = Tuple[torch.Tensor, Optional[torch.Tensor]]


def fold_affine(weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                before: Optional[Affine] = None, after: Optional[Affine] = None):
    """Weight and bias of ``after(linear(before(x), weight, bias))`` as one map.

    Args:
        weight: (out, in) of a linear map, (out, in, *kernel) of a conv
            (then `before` must be None), or None for the identity map (the
            result is then the composed per-channel affine ``(scale, shift)``).
        bias: (out,) or None.
        before, after: optional per-channel affines ``(scale, shift)``,
            ``t -> t * scale + shift`` over the input / output channels; a
            None shift is zero.
    Returns:
        ``(weight, bias)`` (bias None only when there is none to add).
    """
    if before is not None:
        scale, shift = before
        if shift is not None:
            shift_term = weight @ shift
            bias = shift_term if bias is None else bias + shift_term
        weight = weight * scale
    if after is not None:
        scale, shift = after
        if weight is None:
            weight = scale
        else:
            weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
        if bias is not None:
            bias = bias * scale if shift is None else torch.addcmul(shift, bias, scale)
        else:
            bias = shift
    return weight, bias
