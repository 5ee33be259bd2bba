"""Bilinear sampling as rows of a value table: the one corner convention
every gather formulation (embedding_bag, gather, reordered) shares.

Convention (``grid_sample``, ``align_corners=False``, zero padding): a
normalised location (x, y) of level l sits at pixel ``(x * W_l - 0.5,
y * H_l - 0.5)``; with (x0, y0) its floor and (fx, fy) the remainder, its four
corners (order 00, 01, 10, 11 as (dy, dx)) have the weights
``(1 - fy)(1 - fx), (1 - fy) fx, fy (1 - fx), fy fx``, times the point's
attention weight; corners outside the map contribute 0.

A table holds one row of channels per (batch item, position, head), or per
(batch item, position) when the heads share the rows (:class:`Table`).
Corners outside the map read zero in one of two ways:

* padded: each level carries a one-pixel zero border (:func:`pad_levels`);
  the top-left corner is clamped to [-1, W_l - 1] x [-1, H_l - 1], so a
  point's four corners sit at fixed row offsets from it (what the
  embedding_bag backward relies on) and only points whose 2x2 block misses
  the bordered level need a zero weight;
* unpadded: each corner's row is clamped into the map and its weight is
  zeroed when the corner lies outside it (no copy of the table).
"""
from typing import List, NamedTuple, Tuple

import torch
import torch.nn.functional as F

from .reference import shapes_as_list

__all__ = ["Table", "value_table", "pad_levels", "bilinear_corners", "padded_corners"]


class Table(NamedTuple):
    """Row layout of a value table: the row of (batch item b, position s,
    head h) is ``b * stride_n + s * pos + h * stride_m``, positions counted
    level by level from ``starts`` (in the bordered levels when `padded`)."""

    shapes: List[Tuple[int, int]]
    padded: bool
    starts: List[int]  # first position of each level
    positions: int  # positions per batch item (S, or S_pad when padded)
    pos: int
    stride_n: int
    stride_m: int
    rows: int  # rows of the whole table


def value_table(shapes: List[Tuple[int, int]], n: int, m: int, padded: bool, order: str = "nsm") -> Table:
    """The :class:`Table` of N batch items and M heads over levels `shapes`.

    `order`: "nsm" ((N, S, M) rows: a (N, S, M, Dh) value tensor viewed as
    rows), "mns" (head-major (M, N, S) rows) or "ns" ((N, S) rows shared by
    all heads, e.g. un-projected features).
    """
    starts, total = [], 0
    for h, w in shapes:
        starts.append(total)
        total += (h + 2) * (w + 2) if padded else h * w
    pos, stride_n, stride_m, heads = {
        "nsm": (m, total * m, 1, m),
        "mns": (1, total, n * total, m),
        "ns": (1, total, 0, 1),
    }[order]
    return Table(shapes, padded, starts, total, pos, stride_n, stride_m, n * total * heads)


def pad_levels(value: torch.Tensor, shapes: List[Tuple[int, int]]) -> torch.Tensor:
    """(N, S, M, Dh) -> (N, S_pad, M, Dh) with a zero border around each level.

    Out of place (``F.pad`` per level), with or without autograd: in-place
    writes into a table that needs grad would each add a full-table copy to
    the backward. One level (the extractor's) is one copy.
    """
    n, _, m, dh = value.shape
    levels, start = [], 0
    for h, w in shapes:
        v = value[:, start : start + h * w].reshape(n, h, w, m * dh)
        levels.append(F.pad(v, (0, 0, 1, 1, 1, 1)).reshape(n, (h + 2) * (w + 2), m, dh))
        start += h * w
    return levels[0] if len(levels) == 1 else torch.cat(levels, dim=1)


def bilinear_corners(table: Table, sampling_locations: torch.Tensor, attention_weights: torch.Tensor):
    """Rows and attention-folded weights of the four corners of every point.

    Differentiable in the locations and the attention weights (the floor is
    constant); rows are exact integer arithmetic, int32 when the table has
    fewer than 2**31 rows.

    Args:
        table: the layout the rows index (see :func:`value_table`).
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y).
        attention_weights: (N, Lq, M, L, P).
    Returns:
        index: (N, Lq, M, L*P, 4) rows of the corners 00, 01, 10, 11;
        weights: (N, Lq, M, L*P, 4) corner weight times attention weight.
    """
    n, _, m = sampling_locations.shape[:3]
    dev, dt = sampling_locations.device, sampling_locations.dtype
    idx = torch.int32 if table.rows < 2**31 else torch.long

    def per_level(values, dtype=idx):  # (L, 1): broadcasts over the points
        return torch.tensor(values, device=dev, dtype=dtype).view(-1, 1)

    h_l, w_l = per_level([h for h, _ in table.shapes], dt), per_level([w for _, w in table.shapes], dt)
    x = sampling_locations[..., 0] * w_l - 0.5
    y = sampling_locations[..., 1] * h_l - 0.5
    x0, y0 = x.detach().floor(), y.detach().floor()
    fx, fy = x - x0, y - y0
    # Points whose 2x2 block misses the map (and its one-pixel border) entirely.
    inside = (x0 >= -1) & (x0 < w_l) & (y0 >= -1) & (y0 < h_l)
    a = attention_weights * inside
    wy1 = fy * a
    wy0 = a - wy1
    wx1 = fx
    wx0 = 1 - fx
    x0 = torch.minimum(x0.clamp_(min=-1), w_l - 1).to(idx)
    y0 = torch.minimum(y0.clamp_(min=-1), h_l - 1).to(idx)
    steps = [(w + 2 if table.padded else w) * table.pos for _, w in table.shapes]  # an image row, in table rows
    row_step = per_level(steps)
    base = (torch.arange(n, device=dev, dtype=idx).view(n, 1, 1, 1, 1) * table.stride_n
            + torch.arange(m, device=dev, dtype=idx).view(1, 1, m, 1, 1) * table.stride_m
            + per_level([s * table.pos for s in table.starts]))  # (N, 1, M, L, 1)
    if table.padded:
        # Corners outside the map lie in the zero border, at fixed offsets.
        rows00 = (y0 + 1).mul_(row_step).add_((x0 + 1).mul_(table.pos)).add_(base)
        offsets = torch.tensor([[0, table.pos, s, s + table.pos] for s in steps], device=dev, dtype=idx)
        index = rows00[..., None] + offsets[:, None]  # + (L, 1, 4)
    else:
        # Corners outside the map: a clamped row with weight 0.
        w_i, h_i = per_level([w for _, w in table.shapes]), per_level([h for h, _ in table.shapes])
        wx0, wx1 = wx0 * (x0 >= 0), wx1 * (x0 < w_i - 1)
        wy0, wy1 = wy0 * (y0 >= 0), wy1 * (y0 < h_i - 1)
        cols = torch.stack([x0.clamp(min=0), torch.minimum(x0 + 1, w_i - 1)], -1) * table.pos
        rows = torch.stack([y0.clamp(min=0), torch.minimum(y0 + 1, h_i - 1)], -1) * row_step[..., None]
        index = ((rows + base[..., None])[..., :, None] + cols[..., None, :]).flatten(-2)
    weights = torch.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], dim=-1)
    return index.flatten(3, 4), weights.flatten(3, 4)


def padded_corners(value: torch.Tensor, value_spatial_shapes, sampling_locations: torch.Tensor,
                   attention_weights: torch.Tensor, order: str = "nsm"):
    """The zero-bordered value table viewed as (N * S_pad * M, Dh) rows, its
    :class:`Table` (rows counted in `order`, see :func:`value_table`) and
    :func:`bilinear_corners` of the points in it."""
    shapes = shapes_as_list(value_spatial_shapes)
    n, _, m, dh = value.shape
    table = value_table(shapes, n, m, padded=True, order=order)
    rows = pad_levels(value, shapes).view(-1, dh)
    index, weights = bilinear_corners(table, sampling_locations, attention_weights)
    return rows, table, index, weights
