"""ImageNet ViT initialisation: timm / DeiT / AugReg / BEiT / MAE / DINOv2 weights onto the model's ViT."""
import logging
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from vit_adapter.checkpoint.beit import BEIT_ADAPTER_CONFIGS, convert_beit_state_dict, has_relative_position_tables
from vit_adapter.checkpoint.dinov2 import adapt_dinov2_state_dict
from vit_adapter.modeling.beit import BEiT
from vit_adapter.modeling.vit import VisionTransformer

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- ImageNet ViT


def find_vit(model: nn.Module) -> Tuple[str, Optional[VisionTransformer]]:
    """The model's ViT (ViTAdapter / PlainViTBackbone / BEiTAdapter) and its state-dict prefix."""
    for name, module in model.named_modules():
        if isinstance(module, (VisionTransformer, BEiT)):
            return (name + "." if name else ""), module
    return "", None


# ImageNet-checkpoint keys that have no place in a detection ViT (dropped, reported).
_IMAGENET_DROP = re.compile(
    r"^(cls_token|dist_token|reg_token|mask_token|head(_dist)?\.|fc_norm\.|norm\.|pre_logits\.|"
    r"attn_pool\.|lm_head\.|decoder)"
)
_VIT_PREFIX_HINT = "patch_embed.proj.weight"


def _imagenet_vit_prefix(state_dict: Mapping[str, Any]) -> Optional[str]:
    """Prefix in front of ``patch_embed.proj.weight`` when the dict is a bare ViT, else None."""
    for key in state_dict:
        if key.endswith(_VIT_PREFIX_HINT):
            prefix = key[: -len(_VIT_PREFIX_HINT)]
            if prefix in ("", "module.", "backbone.", "encoder.", "model.", "visual.trunk."):
                return prefix
    return None


def convert_imagenet_vit_state_dict(
    state_dict: Mapping[str, torch.Tensor], vit: VisionTransformer, patch_kernel_resize: str = "bilinear"
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """timm / DeiT / MAE / BEiT / AugReg / DINOv2 ViT weights -> our ViT's names (no prefix).

    * a patch kernel of another size (DINOv2: 14 x 14) is resized to the
      model's patch size, ``patch_kernel_resize`` "bilinear" (the release's
      ``convert_14to16.py``) or "pinv" (FlexiViT); DINOv2 chunked blocks,
      register tokens and ViT-g are handled as :mod:`vit_adapter.checkpoint.dinov2` says.

    * ``gamma_1``/``gamma_2`` (BEiT) and ``ls1.gamma``/``ls2.gamma`` (timm,
      DeiT-3) -> ``gamma1``/``gamma2``; BEiT's ``q_bias``/``v_bias`` -> ``qkv.bias``
      (zero key bias).
    * ``pos_embed`` (1 x (P + g*g) x D, P prefix tokens) -> (1 x (1 + G) x D):
      the grid is resized bicubically (timm ``resample_abs_pos_embed``, no
      antialias, as the official runtime interpolation) to the model's
      pre-training grid G; the unused cls slot is kept (zeros when the
      checkpoint has none); dist / register slots are dropped.
    * cls / dist / mask tokens, heads, final norms, MAE decoder: dropped and
      listed in the report.
    * a BEiT / BEiTv2 checkpoint (relative position tables) is refused for a
      plain ViT (ValueError naming the BEiT-Adapter configs); into a BEiT trunk
      (:class:`vit_adapter.modeling.beit.BEiT`) it is mapped by
      :func:`vit_adapter.checkpoint.beit.convert_beit_state_dict`.

    Returns:
        (state_dict, report) with report keys ``dropped`` (names),
        ``pos_embed_resized`` ((old grid, new grid) or None) and ``notes``.
    """
    if isinstance(vit, BEiT):  # BEiT-Adapter: relative position tables, gammas, q/v biases by name
        return convert_beit_state_dict(state_dict, vit)
    if has_relative_position_tables(state_dict):
        raise ValueError(
            "a BEiT checkpoint (relative position bias) needs a BEiT-Adapter config, this model's ViT has no "
            f"relative position bias: use {BEIT_ADAPTER_CONFIGS}"
        )
    state_dict, notes = adapt_dinov2_state_dict(state_dict, vit.patch_size, patch_kernel_resize)
    out: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    resized = None
    for key, value in state_dict.items():
        if _IMAGENET_DROP.match(key):
            dropped.append(key)
            continue
        key = re.sub(r"\.gamma_([12])$", r".gamma\1", key)
        key = re.sub(r"\.ls([12])\.gamma$", r".gamma\1", key)
        m = re.match(r"^(blocks\.\d+\.attn)\.(q_bias|v_bias)$", key)
        if m:
            if m.group(2) == "q_bias":
                v_bias = state_dict[f"{m.group(1)}.v_bias"]
                out[f"{m.group(1)}.qkv.bias"] = torch.cat([value, torch.zeros_like(value), v_bias])
            continue
        if key == "pos_embed":
            value, resized = _resize_pos_embed(value, vit)
        out[key] = value
    return out, {"dropped": dropped, "pos_embed_resized": resized, "notes": notes}


def _resize_pos_embed(pos: torch.Tensor, vit: VisionTransformer):
    """(1, P + g*g, D) -> (1, 1 + G, D) for the model's pre-training grid G (cls slot kept)."""
    if pos.dim() != 3:
        return pos, None
    length, dim = pos.shape[1], pos.shape[2]
    g = math.isqrt(length)
    num_prefix = length - g * g
    if num_prefix > 8:  # not a square grid plus a few prefix tokens: leave it to the shape check
        return pos, None
    target = tuple(vit.pretrain_grid)
    grid = pos[:, num_prefix:]
    cls_slot = pos[:, :1] if num_prefix >= 1 else pos.new_zeros(1, 1, dim)
    resized = None
    if (g, g) != target:
        grid = resample_abs_pos_embed(
            grid.float(),
            new_size=list(target),
            old_size=[g, g],
            num_prefix_tokens=0,
            interpolation="bicubic",
            antialias=False,
        ).to(pos.dtype)
        resized = ((g, g), target)
    if vit.pos_embed.shape[1] == target[0] * target[1]:  # a model without the cls slot
        return grid, resized
    return torch.cat([cls_slot, grid], dim=1), resized


