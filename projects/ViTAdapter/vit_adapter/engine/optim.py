"""Optimizer parameter groups of the official ViT-Adapter detection recipe.

The released configs train with AdamW (lr 1e-4, weight decay 0.05) and

* no weight decay on ``pos_embed``, ``level_embed``, normalisation layers and
  biases (T/S/B: mmcv ``paramwise_cfg.custom_keys``; L:
  ``LayerDecayOptimizerConstructor``, which exempts every 1-D parameter);
* for ViT-Adapter-L, layer-wise learning-rate decay
  (``num_layers=24, layer_decay_rate=0.8``, from BEiT): with ``n`` ViT blocks,
  the patch embedding / position embedding get ``rate ** (n + 1)``, ViT block
  ``i`` gets ``rate ** (n - i)`` and everything else (adapter, FPN, heads)
  gets 1.

:func:`get_vit_adapter_param_groups` builds these groups for a detectron2
model, for use as ``optimizer.params`` in a LazyConfig::

    optimizer = L(torch.optim.AdamW)(
        params=L(get_vit_adapter_param_groups)(base_lr="${..lr}", weight_decay=0.05),
        lr=1e-4, weight_decay=0.05)
    # train_net.py sets optimizer.params.model = model before instantiating.

One rule exempts weight decay here for every size: every 1-D parameter
(norm weights and biases, all biases, layer-scale ``gamma``, injector
``gamma``) plus the names in ``no_weight_decay_keys``. This is the L
constructor's rule plus ``level_embed``; the T/S/B configs' substring keys
("norm", "bias", ...) differ from it only on the spatial prior module's
BatchNorm weights and the ``gamma`` vectors, which they leave decayed.
"""
import re
from typing import Any, Dict, Iterable, List, Optional

from torch import nn

__all__ = ["get_vit_layer_id", "get_vit_adapter_param_groups"]

# Official `get_num_layer_for_vit`: embeddings are layer 0, ViT block i is layer i + 1.
_EMBED_RE = re.compile(r"(^|\.)(pos_embed|patch_embed|cls_token|mask_token)(\.|$)")
_BLOCK_RE = re.compile(r"(^|\.)blocks\.(\d+)\.")


def get_vit_layer_id(name: str, num_layers: int, backbone_prefix: str = "backbone.") -> int:
    """Layer id of a parameter for layer-wise lr decay (official numbering).

    Args:
        name (str): parameter name in the detector, e.g.
            "backbone.bottom_up.blocks.3.attn.qkv.weight".
        num_layers (int): ViT depth n.
        backbone_prefix (str): only names starting with it can belong to the ViT.

    Returns:
        int: 0 for the patch / position embedding, i + 1 for ViT block i,
        n + 1 for everything else (adapter, neck, heads).
    """
    if name.startswith(backbone_prefix):
        if _EMBED_RE.search(name):
            return 0
        m = _BLOCK_RE.search(name)
        if m:
            return int(m.group(2)) + 1
    return num_layers + 1


def get_vit_adapter_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    no_weight_decay_keys: Iterable[str] = ("pos_embed", "level_embed", "cls_token"),
    layer_decay_rate: Optional[float] = None,
    num_layers: Optional[int] = None,
    backbone_prefix: str = "backbone.",
) -> List[Dict[str, Any]]:
    """Parameter groups with the official weight-decay exemptions and lr decay.

    Args:
        model: the detector.
        base_lr (float): the optimizer's lr; each group gets
            ``lr = base_lr * lr_scale``.
        weight_decay (float): weight decay of the decayed groups.
        no_weight_decay_keys: parameter-name components that get no weight
            decay (besides every 1-D parameter).
        layer_decay_rate (float or None): layer-wise lr decay (0.8 for
            ViT-Adapter-L); None or 1.0 disables it.
        num_layers (int or None): ViT depth, required with ``layer_decay_rate``.
        backbone_prefix (str): name prefix of the backbone in ``model``.

    Returns:
        list[dict]: torch optimizer groups, each with "params", "lr",
        "weight_decay", "lr_scale" and "param_names" (for logging / tests).
        Frozen parameters (requires_grad False) are left out; a parameter
        shared by several modules appears once.
    """
    if layer_decay_rate is not None and layer_decay_rate != 1.0:
        if not 0.0 < layer_decay_rate <= 1.0:
            raise ValueError(f"layer_decay_rate must be in (0, 1], got {layer_decay_rate}")
        if not num_layers or num_layers < 1:
            raise ValueError(f"layer_decay_rate needs num_layers (the ViT depth), got {num_layers}")
    else:
        layer_decay_rate = None
    keys = set(no_weight_decay_keys)

    groups: Dict[tuple, Dict[str, Any]] = {}
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        no_decay = param.ndim <= 1 or name.endswith(".bias") or bool(keys & set(name.split(".")))
        wd = 0.0 if no_decay else weight_decay
        scale = 1.0
        if layer_decay_rate is not None:
            scale = layer_decay_rate ** (num_layers + 1 - get_vit_layer_id(name, num_layers, backbone_prefix))
        group = groups.setdefault(
            (scale, wd),
            {"params": [], "param_names": [], "lr": base_lr * scale, "weight_decay": wd, "lr_scale": scale},
        )
        group["params"].append(param)
        group["param_names"].append(name)
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[0], -k[1]))]
