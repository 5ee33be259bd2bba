"""Per-channel affine maps: folding them into the linear map next to them, and
reading a fixed norm layer as one."""
from typing import Optional, Tuple

import torch
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

__all__ = ["fold_affine", "is_fixed_affine", "norm_as_affine", "fold_norm_into_conv"]

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


def is_fixed_affine(norm: nn.Module) -> bool:
    """Whether `norm` currently is a fixed per-channel affine map: a BatchNorm
    in eval mode with running statistics (any flavour: BatchNorm2d,
    SyncBatchNorm, NaiveSyncBatchNorm), detectron2's FrozenBatchNorm2d, or
    Identity (no norm). Not: a BatchNorm in training mode, GroupNorm,
    LayerNorm, ... (they depend on the data)."""
    if isinstance(norm, (nn.Identity, FrozenBatchNorm2d)):
        return True
    return (isinstance(norm, nn.modules.batchnorm._BatchNorm) and not norm.training
            and norm.running_mean is not None)


def norm_as_affine(norm: nn.Module, channels: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of shape (C,) with ``norm(x) == x * scale + shift``
    per channel, for a `norm` that :func:`is_fixed_affine` (ValueError otherwise).

    Args:
        norm: the norm layer.
        channels (int): C, and device: where to put them (used for Identity,
            which has no parameters).
    """
    if not is_fixed_affine(norm):
        raise ValueError(f"norm_as_affine: {type(norm).__name__} (training={norm.training}) is not a fixed affine map")
    if isinstance(norm, nn.Identity):
        return torch.ones(channels, device=device), torch.zeros(channels, device=device)
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


def fold_norm_into_conv(conv: nn.Conv2d, norm: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one conv equal to ``norm(conv(x))``, for a `norm`
    that :func:`is_fixed_affine`."""
    return fold_affine(conv.weight, conv.bias, after=norm_as_affine(norm, conv.out_channels, conv.weight.device))
