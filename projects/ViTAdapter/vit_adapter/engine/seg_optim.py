"""Per-name learning-rate multipliers on top of the ViT-Adapter parameter groups.

The release's AugReg-B UperNet config trains its heads at 10x the lr (mmcv
``paramwise_cfg.custom_keys={'head': dict(lr_mult=10.0), 'bias': ..., ...}``).
mmcv applies the first matching key only, longest first and alphabetically
among equals, so ``bias`` wins over ``head``: the heads' biases keep lr x1.

    optimizer.params = L(get_param_groups_with_lr_mult)(
        lr_mult={"head": 10.0}, base_lr="${..lr}", weight_decay="${..weight_decay}")
"""
from typing import Any, Dict, List, Sequence

from torch import nn

from .optim import get_vit_adapter_param_groups

__all__ = ["get_param_groups_with_lr_mult"]


def get_param_groups_with_lr_mult(
    model: nn.Module,
    lr_mult: Dict[str, float],
    base_lr: float,
    skip_substrings: Sequence[str] = ("bias",),
    **kwargs,
) -> List[Dict[str, Any]]:
    """:func:`vit_adapter.engine.optim.get_vit_adapter_param_groups`, then the
    parameters whose name contains a key of ``lr_mult`` (and none of
    ``skip_substrings``) get ``lr * lr_mult[key]`` (the first key that
    matches, in the dict's order).

    Args:
        model: the model.
        lr_mult (dict[str, float]): name substring -> lr multiplier.
        base_lr (float): the optimizer's lr.
        skip_substrings (list[str]): names containing one keep their lr
            (mmcv's first-match rule for the release's ``bias`` key).
        kwargs: the other arguments of ``get_vit_adapter_param_groups``.
    """
    groups = get_vit_adapter_param_groups(model, base_lr=base_lr, **kwargs)
    out: Dict[tuple, Dict[str, Any]] = {}
    for g in groups:
        for name, param in zip(g["param_names"], g["params"]):
            mult = 1.0
            if not any(s in name for s in skip_substrings):
                mult = next((m for key, m in lr_mult.items() if key in name), 1.0)
            scale = g["lr_scale"] * mult
            group = out.setdefault(
                (scale, g["weight_decay"]),
                {"params": [], "param_names": [], "lr": base_lr * scale, "weight_decay": g["weight_decay"],
                 "lr_scale": scale},
            )
            group["params"].append(param)
            group["param_names"].append(name)
    return [out[k] for k in sorted(out, key=lambda k: (-k[0], -k[1]))]
