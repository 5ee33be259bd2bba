"""BEiT / BEiTv2 ImageNet weights onto a BEiT trunk (:class:`vit_adapter.modeling.beit.BEiT`).

Layouts read (after the checkpointer has unwrapped ``{"model": ...}`` /
``{"module": ...}`` / ``{"state_dict": ...}`` and a ``module.`` prefix):

* unilm (``beit_*_pt22k*.pth``, BEiTv2 ``beitv2_*.pth``): ``cls_token``,
  ``patch_embed.proj``, ``blocks.N.{gamma_1,gamma_2,norm1,norm2}``,
  ``blocks.N.attn.{qkv.weight,q_bias,v_bias,proj}``,
  ``blocks.N.attn.relative_position_bias_table`` (+ ``relative_position_index``),
  ``blocks.N.mlp.fc1/fc2``; pre-training checkpoints have one shared table
  ``rel_pos_bias.relative_position_bias_table`` instead, ``mask_token``,
  ``lm_head``, ``norm`` and (BEiTv2) ``cls_pt_layers``;
* timm ``beit_*`` / ``beitv2_*``: the same names, ``fc_norm`` / ``head``, no index buffers.

Mapping (what the release's loader does, without ``scipy.interpolate.interp2d``):

* a shared table is copied to every block (or kept shared when the model uses one);
* every table is resized from the checkpoint's grid to the block's grid
  (segmentation layout: the img_size grid, cls rows kept) or window (detection
  layout: the window, cls rows dropped) with BEiT's geometric-progression
  cubic interpolation (:func:`vit_adapter.modeling.beit.resize_relative_position_table`);
  the zero-offset entry and the cls rows carry over exactly;
* ``gamma_*``, ``q_bias`` / ``v_bias`` load by name; ``cls_token`` loads when
  the model has one; ``pos_embed`` (if both have one) is resized bicubically;
* index buffers (derived), heads, final norms, ``mask_token``, ``lm_head``,
  ``cls_pt_layers`` are dropped and reported;
* a ViT checkpoint without relative position tables (DeiT, AugReg, ...) is
  refused (``ValueError``): the model would have no position information.
"""
import math
import re
from typing import Any, Dict, List, Mapping, Tuple

import torch
import torch.nn.functional as F

from vit_adapter.modeling.beit import NUM_CLS_ENTRIES, BEiT, resize_relative_position_table

__all__ = ["has_relative_position_tables", "convert_beit_state_dict", "BEIT_ADAPTER_CONFIGS"]

# What a plain-ViT config given a BEiT checkpoint is pointed to.
BEIT_ADAPTER_CONFIGS = (
    "configs/COCO/mask_rcnn_beit_adapter_l_3x_ms.py, configs/COCO/cascade_mask_rcnn_beit_adapter_l_3x_ms.py"
)

_TABLE = "relative_position_bias_table"
_DROP = re.compile(
    r"^(mask_token|lm_head\.|head\.|fc_norm\.|norm\.|cls_pt_layers\.|pre_logits\.)|relative_position_index$"
)


def has_relative_position_tables(state_dict: Mapping[str, Any]) -> bool:
    """True for a BEiT-family ViT with relative position tables (per block or shared)."""
    return any(k.endswith(_TABLE) for k in state_dict)


def _table_grid(rows: int, key: str) -> int:
    """Grid side g of a square table of (2g-1)^2 + 3 rows (unilm / timm tables carry the cls rows)."""
    side = math.isqrt(rows - NUM_CLS_ENTRIES)
    if side * side != rows - NUM_CLS_ENTRIES or side % 2 == 0:
        raise ValueError(f"{key}: {rows} rows is not a square (2g-1)^2 table plus 3 cls rows")
    return (side + 1) // 2


def _fit_table(table: torch.Tensor, key: str, target_grid, target_cls: bool) -> Tuple[torch.Tensor, str]:
    g = _table_grid(table.shape[0], key)
    out = resize_relative_position_table(table.float(), (g, g), tuple(target_grid), with_cls=True).to(table.dtype)
    if not target_cls:
        out = out[: out.shape[0] - NUM_CLS_ENTRIES]
    note = "" if (g, g) == tuple(target_grid) else f"{g}x{g} -> {target_grid[0]}x{target_grid[1]}"
    return out, note


def convert_beit_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: BEiT
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """BEiT / BEiTv2 (unilm or timm) ViT weights -> `model`'s names and table sizes (no prefix).

    Returns:
        (state_dict, report) with report keys ``dropped`` (checkpoint names not
        used), ``pos_embed_resized`` ((old grid, new grid) or None) and ``notes``.
    """
    model_has_tables = model.rel_pos_bias is not None or any(b.attn.has_table for b in model.blocks)
    if model_has_tables and not has_relative_position_tables(state_dict):
        raise ValueError(
            "a ViT checkpoint without relative position tables (DeiT / AugReg / MAE / DINOv2 layout) would "
            "leave this BEiT-Adapter with no position information: give it BEiT / BEiTv2 weights, or use a "
            "ViT-Adapter config for this checkpoint"
        )
    out: Dict[str, torch.Tensor] = {}
    dropped: List[str] = []
    resized: Dict[str, str] = {}
    shared = state_dict.get("rel_pos_bias." + _TABLE)
    for key, value in state_dict.items():
        if _DROP.search(key):
            dropped.append(key)
            continue
        if key == "rel_pos_bias." + _TABLE:
            if model.rel_pos_bias is not None:
                rpb = model.rel_pos_bias
                out[key], note = _fit_table(value, key, rpb.table_grid, rpb.with_cls)
                if note:
                    resized[key] = note
            continue  # else copied to every block below
        if key == "cls_token" and not model.with_cls_token:
            dropped.append(key)
            continue
        if key == "pos_embed":
            if model.pos_embed is None:
                dropped.append(key)
                continue
            value, note = _resize_pos_embed(value, model)
            if note:
                resized[key] = note
        m = re.match(r"^blocks\.(\d+)\.attn\." + _TABLE + "$", key)
        if m and int(m.group(1)) < len(model.blocks):
            attn = model.blocks[int(m.group(1))].attn
            if not attn.has_table:
                dropped.append(key)
                continue
            value, note = _fit_table(value, key, attn.table_grid, attn.with_cls)
            if note:
                resized[key] = note
        out[key] = value
    notes = []
    if shared is not None and model.rel_pos_bias is None:
        copied = 0
        for i, blk in enumerate(model.blocks):
            key = f"blocks.{i}.attn.{_TABLE}"
            if blk.attn.has_table and key not in out:
                out[key], note = _fit_table(shared, key, blk.attn.table_grid, blk.attn.with_cls)
                if note:
                    resized[key] = note
                copied += 1
        notes.append(f"shared rel_pos_bias.{_TABLE} copied to the {copied} blocks' tables")
    if resized:
        sizes = sorted(set(resized.values()))
        notes.append(
            f"relative position tables resized (geometric-progression cubic interpolation): "
            f"{len(resized)} tables, {', '.join(sizes)}"
        )
    has_cls_rows = any(b.attn.has_table and b.attn.with_cls for b in model.blocks)
    if any(b.attn.has_table for b in model.blocks) and not has_cls_rows:
        notes.append("cls rows of the relative position tables dropped (windowed layout, no cls token)")
    pos = resized.get("pos_embed")
    return out, {"dropped": dropped, "pos_embed_resized": pos, "notes": notes}


def _resize_pos_embed(pos: torch.Tensor, model: BEiT):
    """(1, P + g*g, D) -> the model's (1, [1 +] G, D) (bicubic on the grid, cls slot kept when both have one)."""
    length, dim = pos.shape[1], pos.shape[2]
    g = math.isqrt(length)
    num_prefix = length - g * g
    grid = pos[:, num_prefix:]
    target = model.img_grid
    note = ""
    if (g, g) != target:
        grid = grid.reshape(1, g, g, dim).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=target, mode="bicubic", align_corners=False)
        grid = grid.flatten(2).transpose(1, 2).to(pos.dtype)
        note = ((g, g), target)
    if model.with_cls_token:
        cls = pos[:, :1] if num_prefix >= 1 else pos.new_zeros(1, 1, dim)
        grid = torch.cat([cls, grid], dim=1)
    return grid, note
