"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021),
as used by ViT-Adapter's injector and extractor.

The operator is a plain function with a precise shape contract; the module
:class:`MSDeformAttn` only owns the projections and their initialisation
(official parameterisation and state-dict names: ``sampling_offsets``,
``attention_weights``, ``value_proj``, ``output_proj``).

Everything here is pure PyTorch: no compile step, runs on CPU and GPU.

Implementations of the operator (all compute the same function; tests check
values and gradients of each against the reference to 1e-5):

* ``"reference"``: :func:`ms_deform_attn_reference`, one ``F.grid_sample``
  per level (the official pure-PyTorch formulation). The baseline.
* ``"pytorch"``: :func:`ms_deform_attn_pytorch`, the fast eager path (default
  on CPU). All levels at once: the four bilinear corners of every sampling
  point are turned into row indices of the (padded) value table and the
  attention weight is folded into the corner weights, so the whole op is ONE
  ``F.embedding_bag`` (gather + weighted sum, nothing materialised per
  corner). Its backward is hand-written: corner-weight gradients with one
  sampled dense-dense product (``torch.sparse.sampled_addmm``), value
  gradients as a *gather* over the sampling points sorted by value row
  (one sort, then ``embedding_bag`` with offsets) instead of a scatter.
  A one-pixel zero border around each level keeps the four corners of a
  point at fixed row offsets, so out-of-map corners need no special case.
* ``"gather"``: :func:`ms_deform_attn_gather`, the same corner indices and
  weights as plain indexing + weighted sum; written for ``torch.compile``.
* ``"compile"``: ``torch.compile`` of ``"gather"`` (Inductor fuses the gather,
  the weighted reduction and, in the backward, the scatter into Triton kernels
  on CUDA). Default on CUDA when Triton is importable.

:func:`ms_deform_attn_project_last` (:meth:`MSDeformAttn.sample_features`) is
the same attention with ``value_proj`` moved after the sampling (both are
linear): it samples the un-projected features and projects each head's
samples. ViT-Adapter's injector uses it at inference on CPU, where 1024 queries
read 5376 value tokens (ViT-Adapter-S, 512x512 input): each head's samples
are projected to that head's 64 channels only (0.15 GMACs instead of 0.79
for value_proj over the value table), and no padded table is built.
:func:`ms_deform_attn_output_projected` (:meth:`MSDeformAttn.sample_output_projected`)
is the converse for the extractor, where 5376 queries read 1024 value tokens:
``output_proj`` is applied to each head's (padded) value map before sampling
(0.17 GMACs instead of 0.79) and one ``embedding_bag`` per query sums all
heads' corners.

:func:`ms_deform_attn` dispatches: ``impl="auto"`` (default) picks
``"compile"`` for CUDA tensors when available, else ``"pytorch"``; the
environment variable ``VIT_ADAPTER_MSDA_IMPL`` or the ``impl`` argument
forces one. An automatically chosen ``"compile"`` that fails falls back to
``"pytorch"`` with a warning; a forced one raises.
"""
import math
import os
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IMPLEMENTATIONS",
    "IMPL_ENV_VAR",
    "ms_deform_attn",
    "ms_deform_attn_reference",
    "ms_deform_attn_pytorch",
    "ms_deform_attn_gather",
    "ms_deform_attn_project_last",
    "ms_deform_attn_output_projected",
    "select_impl",
    "MSDeformAttn",
]

IMPLEMENTATIONS = ("reference", "pytorch", "gather", "compile")
IMPL_ENV_VAR = "VIT_ADAPTER_MSDA_IMPL"


def _shapes_as_list(value_spatial_shapes) -> List[Tuple[int, int]]:
    """(L, 2) tensor / nested sequence of (H, W) -> list of python int pairs."""
    if isinstance(value_spatial_shapes, torch.Tensor):
        value_spatial_shapes = value_spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in value_spatial_shapes]


def ms_deform_attn_reference(
    value: torch.Tensor,
    value_spatial_shapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Straightforward grid_sample formulation of multi-scale deformable attention.

    This mirrors the slow pure-PyTorch path shipped with Deformable DETR /
    ViT-Adapter: one ``grid_sample`` per level with heads folded into the
    batch, then a weighted sum over levels and points. It is the baseline the
    faster paths are checked against.

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
    shapes = _shapes_as_list(value_spatial_shapes)
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


# --------------------------------------------------------------------------
# Fast paths: bilinear corners as row indices of a zero-bordered value table.
# --------------------------------------------------------------------------


def _corner_layout(shapes: List[Tuple[int, int]]):
    """Layout of the value table with a one-pixel zero border around each level.

    Level l becomes a (H_l + 2) x (W_l + 2) block of rows, so the four corners
    of any point whose top-left corner (x0, y0) is clamped to [-1, W_l - 1] x
    [-1, H_l - 1] lie at fixed offsets ``(0, 1, W_l + 2, W_l + 3)`` from it.

    Returns:
        padded starts (list), total padded rows S_pad, per-level corner
        offsets [[o00, o01, o10, o11], ...] in rows.
    """
    starts, offsets, total = [], [], 0
    for h, w in shapes:
        starts.append(total)
        offsets.append([0, 1, w + 2, w + 3])
        total += (h + 2) * (w + 2)
    return starts, total, offsets


def _pad_levels(value: torch.Tensor, shapes: List[Tuple[int, int]]) -> torch.Tensor:
    """(N, S, M, Dh) -> (N, S_pad, M, Dh) with a zero border around each level."""
    n, _, m, dh = value.shape
    if torch.is_grad_enabled() and value.requires_grad:
        # Autograd: out-of-place pads (in-place writes into a table that needs
        # grad would each add a full-table copy to the backward).
        levels, start = [], 0
        for h, w in shapes:
            v = value[:, start : start + h * w].reshape(n, h, w, m * dh)
            levels.append(F.pad(v, (0, 0, 1, 1, 1, 1)).reshape(n, (h + 2) * (w + 2), m, dh))
            start += h * w
        return levels[0] if len(levels) == 1 else torch.cat(levels, dim=1)
    s_pad = sum((h + 2) * (w + 2) for h, w in shapes)
    table = value.new_empty(n, s_pad, m, dh)  # inference: one allocation, written once
    start = pad_start = 0
    for h, w in shapes:
        level = table[:, pad_start : pad_start + (h + 2) * (w + 2)].view(n, h + 2, w + 2, m, dh)
        for border in (level[:, 0], level[:, -1], level[:, 1:-1, 0], level[:, 1:-1, -1]):
            border.zero_()
        level[:, 1:-1, 1:-1].copy_(value[:, start : start + h * w].reshape(n, h, w, m, dh))
        start += h * w
        pad_start += (h + 2) * (w + 2)
    return table


def _bilinear_corners(
    shapes: List[Tuple[int, int]],
    s_pad: int,
    padded_starts: List[int],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    head_major: bool = False,
):
    """Top-left corner rows and attention-folded corner weights of every point.

    Follows ``grid_sample(align_corners=False, padding_mode="zeros")``: pixel
    coordinate ``x = loc_x * W - 0.5``; a corner outside the map contributes 0
    (it lies in the table's zero border, or its whole point is masked).
    Differentiable in the locations and weights (the floor is constant).

    Returns:
        rows00: (N, Lq, M, L*P) int32 (int64 for tables of 2**31 rows or
            more), row of the top-left corner in the
            padded value table viewed as (N * S_pad * M, Dh), or with
            `head_major` in a (M, N, S_pad) table (one row per head and
            position; corner offsets then are (0, 1, W + 2, W + 3)).
        weights: (N, Lq, M, L*P, 4) corner weights (order 00, 01, 10, 11 as
            (dy, dx)) times the attention weight.
    """
    n, lq, m, n_levels, n_points, _ = sampling_locations.shape
    dev, dt = sampling_locations.device, sampling_locations.dtype
    hw = torch.tensor(shapes, device=dev, dtype=dt)  # (L, 2) rows (H, W)
    h_l, w_l = hw[:, 0, None], hw[:, 1, None]  # (L, 1): broadcast over points
    x = sampling_locations[..., 0] * w_l - 0.5
    y = sampling_locations[..., 1] * h_l - 0.5
    x0, y0 = x.detach().floor(), y.detach().floor()
    fx, fy = x - x0, y - y0
    # Corners in the one-pixel zero border read 0 (and get 0 gradient), so only
    # points whose 2x2 block misses the bordered level entirely need a mask.
    inside = (x0 >= -1) & (x0 < w_l) & (y0 >= -1) & (y0 < h_l)
    a = attention_weights * inside
    wy1 = fy * a
    wy0 = a - wy1
    wx0 = 1 - fx
    weights = torch.stack([wy0 * wx0, wy0 * fx, wy1 * wx0, wy1 * fx], dim=-1)
    # Row of the top-left corner (clamped for the masked points) in the
    # (N, S_pad, M) table: ((start + (y0 + 1) * (W + 2) + (x0 + 1)) * M + head
    # + batch offset; integer arithmetic (exact), int32 when the table allows.
    idx = torch.int32 if n * s_pad * m < 2**31 else torch.long
    x0 = torch.minimum(x0.clamp_(min=-1), w_l - 1).to(idx)
    y0 = torch.minimum(y0.clamp_(min=-1), h_l - 1).to(idx)
    # One spatial step is `pos` table rows; batch items and heads are `stride_n` / `stride_m` apart.
    pos, stride_n, stride_m = (1, s_pad, n * s_pad) if head_major else (m, s_pad * m, 1)
    row_stride = torch.tensor([[(w + 2) * pos] for _, w in shapes], device=dev, dtype=idx)  # (L, 1)
    first = torch.tensor([[(st + w + 3) * pos] for st, (_, w) in zip(padded_starts, shapes)], device=dev, dtype=idx)
    base = (torch.arange(n, device=dev, dtype=idx).view(n, 1, 1, 1, 1) * stride_n
            + torch.arange(m, device=dev, dtype=idx).view(1, 1, m, 1, 1) * stride_m + first)  # (N, 1, M, L, 1)
    rows00 = y0.mul_(row_stride)
    if pos != 1:
        x0 = x0.mul_(pos)
    rows00 = rows00.add_(x0).add_(base)
    return rows00.flatten(3), weights.flatten(3, 4)


class _BilinearGatherSum(torch.autograd.Function):
    """out[b] = sum_{k, c} w[b, k, c] * table[rows00[b, k] + off[k, c]].

    table: (R, Dh) padded value table, rows00: (B, K) int32 / int64, w: (B, K, 4),
    offsets: (K, 4) corner offsets in rows (rows00's dtype), level_blocks: per level
    (first row, end row, [4 offsets]) in units of the table's (n, s, m) rows
    divided by M (see the backward). Returns (B, Dh).
    """

    @staticmethod
    def forward(ctx, table, rows00, weights, offsets, layout):
        b, k = rows00.shape
        index = (rows00[..., None] + offsets).view(b, k * 4)
        out = F.embedding_bag(
            index, table, per_sample_weights=weights.reshape(b, k * 4), mode="sum"
        )
        ctx.save_for_backward(table, rows00, weights, index)
        ctx.layout = layout
        return out

    @staticmethod
    def backward(ctx, grad_out):
        table, rows00, weights, index = ctx.saved_tensors
        b, k = rows00.shape
        grad_out = grad_out.contiguous()
        grad_table = grad_weights = None
        if ctx.needs_input_grad[2]:
            # d out[b] / d w[b, j] = <grad_out[b], table[index[b, j]]>: a sampled
            # dense-dense product on the (B, R) sparsity pattern of `index`.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                pattern = torch.sparse_csr_tensor(
                    torch.arange(0, b * k * 4 + 1, k * 4, device=index.device),
                    index.view(-1).long(),
                    grad_out.new_zeros(b * k * 4),
                    size=(b, table.shape[0]),
                    check_invariants=False,
                )
                dots = torch.sparse.sampled_addmm(pattern, grad_out, table.t())
            grad_weights = dots.values().view(b, k, 4)
        if ctx.needs_input_grad[0]:
            if table.shape[0] > _CORNER_SORT_MIN_ROWS_PER_POINT * rows00.numel():
                grad_table = _gather_all_corners(grad_out, index, weights, table.shape[0])
            else:
                grad_table = _scatter_corners(grad_out, rows00, weights, table.shape, ctx.layout)
        return grad_table, None, grad_weights, None, None


# Value-gradient strategy (see _BilinearGatherSum.backward): one sort of all
# corner rows when the table is large next to the number of sampling points
# (table rows / points above this; the injector's case), else one sort of the
# points' top-left rows and four shifted sums (the extractor's case). Measured
# on CPU at ViT-Adapter-S shapes; both give the same result.
_CORNER_SORT_MIN_ROWS_PER_POINT = 0.05


def _bags_by_row(rows: torch.Tensor, n_rows: int):
    """Group the entries of `rows` (B, K) by row value, for ``embedding_bag``:
    returns (perm, bag_of, offsets) with ``perm`` the entries sorted by row,
    ``bag_of`` the b of each sorted entry and ``offsets`` the start of each of
    the `n_rows` rows' runs in that order."""
    keys, perm = torch.sort(rows.view(-1))
    counts = torch.bincount(keys, minlength=n_rows)
    offsets = torch.zeros_like(counts)
    torch.cumsum(counts[:-1], 0, out=offsets[1:])
    bag_of = torch.div(perm, rows.shape[1], rounding_mode="floor")
    return perm, bag_of, offsets


def _gather_all_corners(grad_out, index, weights, n_rows):
    """grad_table[r] = sum over (b, j) with index[b, j] == r of w[b, j] * grad_out[b],
    as one gather: entries sorted by row, one ``embedding_bag`` with offsets."""
    perm, bag_of, offsets = _bags_by_row(index, n_rows)
    return F.embedding_bag(bag_of, grad_out, offsets, per_sample_weights=weights.reshape(-1)[perm], mode="sum")


def _scatter_corners(grad_out, rows00, weights, table_shape, layout):
    """grad_table[r] = sum over (b, k, c) with rows00[b, k] + off_c == r of w * grad_out[b].

    Computed as gathers, not scatters: points are sorted once by their top-left
    row; for each corner c an ``embedding_bag`` over that order sums
    ``w[..., c] * grad_out`` per top-left row; the four results are shifted by
    the corner offset of each level and added.
    """
    n, s_pad, m, blocks = layout
    b, k = rows00.shape
    rows, dh = table_shape
    perm, bag_of, offsets = _bags_by_row(rows00, rows)
    w = weights.reshape(b * k, 4)[perm].t().contiguous()  # (4, b*k)

    def corner_sums(c):
        return F.embedding_bag(bag_of, grad_out, offsets, per_sample_weights=w[c], mode="sum")

    grad = corner_sums(0).view(n, s_pad, m, dh)  # corner 00: offset 0, the accumulator
    for c in range(1, 4):
        part = corner_sums(c).view(n, s_pad, m, dh)
        for start, end, corner_offsets in blocks:
            o = corner_offsets[c]
            grad[:, start + o : end].add_(part[:, start : end - o])
    return grad.view(rows, dh)


def _prepare(value, value_spatial_shapes, sampling_locations, attention_weights, head_major: bool = False):
    """Padded value table viewed as (N * S_pad * M, Dh), corner rows / weights
    (:func:`_bilinear_corners`, rows for a (M, N, S_pad) table with
    `head_major`), (L*P, 4) corner offsets in those rows, and the layout."""
    shapes = _shapes_as_list(value_spatial_shapes)
    n, s, m, dh = value.shape
    padded_starts, s_pad, corner_offsets = _corner_layout(shapes)
    table = _pad_levels(value, shapes).view(n * s_pad * m, dh)
    rows00, weights = _bilinear_corners(
        shapes, s_pad, padded_starts, sampling_locations, attention_weights, head_major=head_major
    )
    n_levels, n_points = sampling_locations.shape[3:5]
    # (L*P, 4) corner offsets, in table rows (one spatial row = M table rows, or 1 head-major).
    offsets = torch.tensor(corner_offsets, device=value.device).repeat_interleave(n_points, 0)
    offsets = (offsets if head_major else offsets * m).to(rows00.dtype)
    blocks = [
        (start, start + (h + 2) * (w + 2), offs)
        for start, (h, w), offs in zip(padded_starts, shapes, corner_offsets)
    ]
    return table, rows00, weights, offsets, (n, s_pad, m, blocks)


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    value_spatial_shapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Fast eager multi-scale deformable attention (same contract as
    :func:`ms_deform_attn_reference`): one ``embedding_bag`` over all levels,
    points and corners, with a hand-written backward (see the module docstring).
    """
    n, _, m, dh = value.shape
    lq = sampling_locations.shape[1]
    table, rows00, weights, offsets, layout = _prepare(
        value, value_spatial_shapes, sampling_locations, attention_weights
    )
    b = n * lq * m
    out = _BilinearGatherSum.apply(
        table, rows00.view(b, -1), weights.view(b, -1, 4), offsets, layout
    )
    return out.view(n, lq, m * dh)


def _hat_corners(shapes: List[Tuple[int, int]], pixel_xy: torch.Tensor, attention_weights: torch.Tensor,
                 s_total: int):
    """Corner rows and weights of bilinear sampling in an *unpadded* table.

    The top-left corner is clamped into [0, W_l - 2] x [0, H_l - 2], so the
    four corners sit at the fixed row offsets (0, 1, W_l, W_l + 1) inside the
    level; each corner gets the tent weight ``max(0, 1 - |x - corner|)``,
    which equals grid_sample's bilinear weight for corners inside the map and
    is 0 for corners outside it (zero padding). Needs H_l, W_l >= 2.

    Args:
        shapes: level sizes (H_l, W_l).
        pixel_xy: (N, Lq, M, L, P, 2) positions in pixels of each level
            (grid_sample, align_corners=False: ``x = loc_x * W_l - 0.5``).
        attention_weights: (N, Lq, M, L, P).
        s_total: rows per batch element in the table (sum H_l * W_l).
    Returns:
        index: (N * Lq * M, L * P * 4) int32 / int64 rows of the
            (N * S, C) table; weights: same shape, attention times corner weight.
    """
    n, lq, m, n_levels, n_points, _ = pixel_xy.shape
    dev, dt = pixel_xy.device, pixel_xy.dtype
    wh = torch.tensor([[w, h] for h, w in shapes], device=dev, dtype=dt)[:, None]  # (L, 1, 2)
    lo = torch.minimum(pixel_xy.floor().clamp_(min=0), wh - 2)
    dist = pixel_xy - lo  # from the top-left corner, per axis
    near = (1 - dist.abs()).clamp_(min=0)  # tent weight of the corner at lo
    far = (1 - (dist - 1).abs()).clamp_(min=0)  # ... at lo + 1
    a_near = attention_weights * near[..., 1]
    a_far = attention_weights * far[..., 1]
    weights = torch.stack([a_near * near[..., 0], a_near * far[..., 0], a_far * near[..., 0], a_far * far[..., 0]], -1)
    idx = torch.int32 if n * s_total < 2**31 else torch.long
    lo = lo.to(idx)
    starts, offsets, total = [], [], 0
    for h, w in shapes:
        starts.append([total])
        offsets.append([0, 1, w, w + 1])
        total += h * w
    row_stride = torch.tensor([[w] for _, w in shapes], device=dev, dtype=idx)  # (L, 1)
    base = torch.tensor(starts, device=dev, dtype=idx)  # (L, 1)
    if n > 1:
        base = base + torch.arange(n, device=dev, dtype=idx).view(n, 1, 1, 1, 1) * s_total
    rows00 = lo[..., 1] * row_stride + lo[..., 0] + base
    index = rows00[..., None] + torch.tensor(offsets, device=dev, dtype=idx)[:, None]  # (N, Lq, M, L, P, 4)
    return index.view(n * lq * m, -1), weights.view(n * lq * m, -1)


def ms_deform_attn_project_last(
    features: torch.Tensor,
    shapes: List[Tuple[int, int]],
    pixel_xy: torch.Tensor,
    attention_weights: torch.Tensor,
    value_weight: torch.Tensor,
    value_bias: Optional[torch.Tensor],
) -> torch.Tensor:
    """Deformable attention over ``value = features @ value_weight.T + value_bias``
    (split into M heads), computed by sampling `features` first and projecting
    each head's sample afterwards.

    Bilinear sampling and the attention sum are linear, so they commute with
    the value projection: per head h,
    ``sum_k a_k * bilinear(V_h, p_k) = (sum_k a_k * bilinear(F, p_k)) @ W_h.T + b_h * sum_k a_k * inside_k``
    (``inside_k``: the bilinear weight of p_k's corners inside the map).
    Same values as projecting first (up to float rounding), with a GEMM over
    the N * Lq * M samples instead of the N * S value tokens: fewer MACs
    when the queries are few next to the values (ViT-Adapter's injector: 1024
    ViT tokens query 5376 adapter tokens at 512x512), and no padded value table.

    Args:
        features: (N, S, C) un-projected values, levels concatenated row-major.
        shapes: [(H_l, W_l), ...], each H_l, W_l >= 2.
        pixel_xy: (N, Lq, M, L, P, 2) positions in pixels (see :func:`_hat_corners`).
        attention_weights: (N, Lq, M, L, P).
        value_weight: (M * Dh, C); value_bias: (M * Dh,) or None.
    Returns:
        (N, Lq, M * Dh)
    """
    n, s, c = features.shape
    _, lq, m = pixel_xy.shape[:3]
    dh = value_weight.shape[0] // m
    index, weights = _hat_corners(shapes, pixel_xy, attention_weights, s)
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
    """``output_proj`` (without its bias) of deformable attention, with the
    projection applied to the values before sampling.

    ``sum_h sample_h @ W_o[:, h].T`` with ``sample_h = sum_k a_k bilinear(V_h, p_k)``
    equals ``sum_h sum_k a_k bilinear(V_h @ W_o[:, h].T, p_k)``: each head's
    value map is projected to the output width once (a GEMM over the N * S
    value tokens) and one ``embedding_bag`` per query sums all heads' corners.
    Same values as sampling then projecting (up to float rounding), fewer
    MACs when the values are few next to the queries (ViT-Adapter's
    extractor: 5376 adapter tokens read the 1024 ViT tokens at 512x512).

    Args:
        value: (N, S, M, Dh) projected values (value_proj output).
        shapes: [(H_l, W_l), ...].
        sampling_locations: (N, Lq, M, L, P, 2) normalised, see :func:`ms_deform_attn_reference`.
        attention_weights: (N, Lq, M, L, P).
        output_weight: (D_out, M * Dh), ``output_proj.weight``.
    Returns:
        (N, Lq, D_out)
    """
    n, _, m, dh = value.shape
    lq = sampling_locations.shape[1]
    d_out = output_weight.shape[0]
    table, rows00, weights, offsets, _ = _prepare(value, shapes, sampling_locations, attention_weights,
                                                  head_major=True)
    # (M, N*S_pad, Dh) @ (M, Dh, D_out): the head-major projected table (zero borders stay zero).
    projected = torch.bmm(table.view(-1, m, dh).transpose(0, 1), output_weight.view(d_out, m, dh).permute(1, 2, 0))
    index = (rows00[..., None] + offsets).view(n * lq, -1)  # one bag per query: all heads' corners
    out = F.embedding_bag(index, projected.view(-1, d_out), per_sample_weights=weights.view(n * lq, -1), mode="sum")
    return out.view(n, lq, d_out)


def ms_deform_attn_gather(
    value: torch.Tensor,
    value_spatial_shapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Plain-indexing formulation (same contract as :func:`ms_deform_attn_reference`):
    gather the four corners of every point, weighted sum. Materialises the
    gathered rows in eager mode; written to be fused by ``torch.compile``.
    """
    n, _, m, dh = value.shape
    lq = sampling_locations.shape[1]
    table, rows00, weights, offsets, _ = _prepare(
        value, value_spatial_shapes, sampling_locations, attention_weights
    )
    b = n * lq * m
    index = (rows00.view(b, -1, 1) + offsets).view(b, -1)
    out = (table[index] * weights.view(b, -1, 1)).sum(1)
    return out.view(n, lq, m * dh)


# --------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------

_COMPILED = None
_COMPILE_FAILED = False


def _compile_available(device: torch.device) -> bool:
    if device.type != "cuda" or not hasattr(torch, "compile"):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _compiled_gather():
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(ms_deform_attn_gather, dynamic=None)
    return _COMPILED


def _check_op_inputs(value, value_spatial_shapes, sampling_locations, attention_weights):
    """Cheap shape checks of the operator's contract (host-side, no sync for CPU shapes)."""
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be (N, S, M, Dh), got {tuple(value.shape)}")
    n, s, m, _ = value.shape
    shapes = _shapes_as_list(value_spatial_shapes)
    if sum(h * w for h, w in shapes) != s:
        raise ValueError(
            f"ms_deform_attn: value_spatial_shapes {shapes} give {sum(h * w for h, w in shapes)} "
            f"value tokens, value has S = {s}")
    loc = sampling_locations
    if loc.dim() != 6 or loc.shape[0] != n or loc.shape[2] != m or loc.shape[3] != len(shapes) or loc.shape[5] != 2:
        raise ValueError(
            f"ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2) = ({n}, Lq, {m}, "
            f"{len(shapes)}, P, 2), got {tuple(loc.shape)}")
    if tuple(attention_weights.shape) != tuple(loc.shape[:5]):
        raise ValueError(
            f"ms_deform_attn: attention_weights must be (N, Lq, M, L, P) = {tuple(loc.shape[:5])}, "
            f"got {tuple(attention_weights.shape)}")


def _requested_impl(impl: str) -> Tuple[str, str]:
    """(requested name, where it came from): the argument, else the env var."""
    if impl == "auto":
        env = os.environ.get(IMPL_ENV_VAR, "").strip().lower()
        if env and env != "auto":
            impl, source = env, f"${IMPL_ENV_VAR}"
        else:
            return "auto", ""
    else:
        source = "impl"
    if impl not in IMPLEMENTATIONS:
        raise ValueError(
            f"ms_deform_attn: {source} must be 'auto' or one of {IMPLEMENTATIONS}, got {impl!r}"
        )
    return impl, source


def select_impl(device, impl: str = "auto") -> str:
    """Name of the implementation :func:`ms_deform_attn` uses for tensors on `device`.

    A forced choice (``impl`` argument, else ``$VIT_ADAPTER_MSDA_IMPL`` unless
    it is "auto") wins; otherwise "compile" on CUDA with Triton importable
    (unless it failed before in this process), else "pytorch".
    """
    requested, _ = _requested_impl(impl)
    if requested != "auto":
        return requested
    if _compile_available(torch.device(device)) and not _COMPILE_FAILED:
        return "compile"
    return "pytorch"


def ms_deform_attn(
    value: torch.Tensor,
    value_spatial_shapes,
    level_start_index: Optional[torch.Tensor],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    impl: str = "auto",
) -> torch.Tensor:
    """Multi-scale deformable attention, dispatched to the best implementation.

    Args:
        value: (N, S, M, Dh), levels concatenated, each row-major.
        value_spatial_shapes: (L, 2) long tensor (or sequence) of (H_l, W_l).
        level_start_index: (L,) start of each level in S, or None. Accepted for
            the official op's signature; the layout follows from the shapes.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y), see
            :func:`ms_deform_attn_reference`.
        attention_weights: (N, Lq, M, L, P).
        impl: "auto" or one of :data:`IMPLEMENTATIONS` (see :func:`select_impl`).

    Returns:
        (N, Lq, M * Dh)
    """
    global _COMPILE_FAILED
    _check_op_inputs(value, value_spatial_shapes, sampling_locations, attention_weights)
    chosen = select_impl(value.device, impl)
    dtype = torch.promote_types(
        torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
    # Mixed precision (e.g. fp16 values under autocast, fp32 locations): compute
    # in the widest dtype, as the official CUDA op casts to float32.
    args = (value.to(dtype), value_spatial_shapes, sampling_locations.to(dtype), attention_weights.to(dtype))
    if chosen == "reference":
        return ms_deform_attn_reference(*args)
    if chosen == "gather":
        return ms_deform_attn_gather(*args)
    if chosen == "compile":
        # Python ints, so the compiled graph specialises on the level sizes.
        shapes = _shapes_as_list(value_spatial_shapes)
        compiled = _compiled_gather()
        if _requested_impl(impl)[0] == "compile":
            return compiled(value, shapes, sampling_locations, attention_weights)
        try:
            return compiled(value, shapes, sampling_locations, attention_weights)
        except Exception as e:  # noqa: BLE001 - any compiler failure: use the eager path
            _COMPILE_FAILED = True
            warnings.warn(
                f"ms_deform_attn: the torch.compile path failed ({type(e).__name__}: {e}); "
                f"using the eager 'pytorch' path from now on (set {IMPL_ENV_VAR} to choose)."
            )
    return ms_deform_attn_pytorch(*args)


def _softmax_last(x: torch.Tensor) -> torch.Tensor:
    """softmax over a short last dim (n_levels * n_points): spelt out, as
    ``Tensor.softmax`` is ~4x slower on CPU when that dim is 4..16 long."""
    e = (x - x.detach().amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def _fold_affine(weight: torch.Tensor, bias: Optional[torch.Tensor], affine):
    """(W, b) of ``linear(x * scale + shift, W, b)`` as one linear map of x:
    ``(W * scale, b + W @ shift)``; unchanged when `affine` is None."""
    if affine is None:
        return weight, bias
    scale, shift = affine
    folded_bias = weight @ shift
    return weight * scale, folded_bias if bias is None else folded_bias + bias


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (official parameterisation).

    Each query attends to ``n_points`` sampled locations per head and level,
    placed at ``reference point + learned offset`` and mixed with learned,
    softmax-normalised weights.
    """

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        ratio: float = 1.0,
        impl: str = "auto",
    ):
        """
        Args:
            d_model (int): channels of the query and of ``input_flatten``.
            n_levels (int): number of value feature levels.
            n_heads (int): number of attention heads.
            n_points (int): sampling points per head and level.
            ratio (float): ``deform_ratio``: the values are projected to
                ``int(d_model * ratio)`` channels (split across heads) and
                projected back to ``d_model`` by ``output_proj``.
            impl (str): operator implementation, "auto" (see
                :func:`ms_deform_attn`) or one of :data:`IMPLEMENTATIONS`.
        """
        super().__init__()
        for name, v in (("d_model", d_model), ("n_levels", n_levels),
                        ("n_heads", n_heads), ("n_points", n_points)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"MSDeformAttn: {name} must be a positive int, got {v!r}")
        if ratio <= 0:
            raise ValueError(f"MSDeformAttn: ratio must be > 0, got {ratio!r}")
        if impl != "auto" and impl not in IMPLEMENTATIONS:
            raise ValueError(
                f"MSDeformAttn: impl must be 'auto' or one of {IMPLEMENTATIONS}, got {impl!r}")
        value_dim = int(d_model * ratio)
        if value_dim % n_heads != 0:
            raise ValueError(
                f"MSDeformAttn: the value width int(d_model * ratio) = int({d_model} * {ratio}) "
                f"= {value_dim} must be divisible by n_heads = {n_heads}"
            )
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.ratio = ratio
        self.value_dim = value_dim
        self.impl = impl

        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, value_dim)
        self.output_proj = nn.Linear(value_dim, d_model)
        self._reset_parameters()

    def _reset_parameters(self):
        """Official initialisation. Parents that re-initialise all Linear
        layers (e.g. trunc_normal) call this afterwards, as the official
        ViT-Adapter does."""
        nn.init.zeros_(self.sampling_offsets.weight)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(self._initial_offsets().flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def _initial_offsets(self) -> torch.Tensor:
        """(heads, levels, points, 2) initial offsets in pixels of each level:
        head h looks along direction 2*pi*h/heads (scaled so that the larger
        |coordinate| is 1), point p at distance p + 1 along it."""
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        direction = torch.stack([thetas.cos(), thetas.sin()], -1)
        direction = direction / direction.abs().max(-1, keepdim=True)[0]
        scale = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        grid = direction[:, None, None, :] * scale[None, None, :, None]
        return grid.expand(self.n_heads, self.n_levels, self.n_points, 2).contiguous()

    def _check_inputs(self, query, reference_points, input_flatten, input_spatial_shapes,
                      input_level_start_index, input_padding_mask):
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(
                f"MSDeformAttn: query must be (N, Lq, {self.d_model}), got {tuple(query.shape)}")
        if input_flatten.dim() != 3 or input_flatten.shape[-1] != self.d_model:
            raise ValueError(
                f"MSDeformAttn: input_flatten must be (N, S, {self.d_model}), "
                f"got {tuple(input_flatten.shape)}")
        n, lq, _ = query.shape
        if input_flatten.shape[0] != n:
            raise ValueError(
                f"MSDeformAttn: query batch {n} != input_flatten batch {input_flatten.shape[0]}")
        if not isinstance(input_spatial_shapes, torch.Tensor) or input_spatial_shapes.dtype != torch.long:
            raise ValueError(
                "MSDeformAttn: input_spatial_shapes must be a torch.long tensor of (H, W) rows, got "
                + (str(input_spatial_shapes.dtype) if isinstance(input_spatial_shapes, torch.Tensor)
                   else type(input_spatial_shapes).__name__))
        if input_spatial_shapes.shape != (self.n_levels, 2):
            raise ValueError(
                f"MSDeformAttn: input_spatial_shapes must be (n_levels, 2) = ({self.n_levels}, 2) "
                f"(module built with n_levels={self.n_levels}), got {tuple(input_spatial_shapes.shape)}")
        shapes = _shapes_as_list(input_spatial_shapes)
        if any(h <= 0 or w <= 0 for h, w in shapes):
            raise ValueError(f"MSDeformAttn: input_spatial_shapes must be positive, got {shapes}")
        total = sum(h * w for h, w in shapes)
        if total != input_flatten.shape[1]:
            raise ValueError(
                f"MSDeformAttn: input_spatial_shapes {shapes} give sum(H*W) = {total} value tokens, "
                f"but input_flatten has {input_flatten.shape[1]}")
        if input_level_start_index is not None:
            if tuple(input_level_start_index.shape) != (self.n_levels,):
                raise ValueError(
                    f"MSDeformAttn: input_level_start_index must be ({self.n_levels},), "
                    f"got {tuple(input_level_start_index.shape)}")
        rp = reference_points
        if (rp.dim() != 4 or rp.shape[-1] not in (2, 4) or rp.shape[1] != lq
                or rp.shape[0] not in (1, n) or rp.shape[2] not in (1, self.n_levels)):
            raise ValueError(
                f"MSDeformAttn: reference_points must be (N, Lq, n_levels, 2) (or 4 for boxes) = "
                f"({n}, {lq}, {self.n_levels}, 2); batch and level dims may be 1 to broadcast; "
                f"got {tuple(rp.shape)}")
        if input_padding_mask is not None:
            if input_padding_mask.dtype != torch.bool or tuple(input_padding_mask.shape) != tuple(
                    input_flatten.shape[:2]):
                raise ValueError(
                    f"MSDeformAttn: input_padding_mask must be a bool tensor of shape (N, S) = "
                    f"{tuple(input_flatten.shape[:2])}, got {input_padding_mask.dtype} "
                    f"{tuple(input_padding_mask.shape)}")
        return shapes

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, C) queries.
            reference_points: (N, Lq, n_levels, 2) normalised (x, y) in [0, 1]
                ((0, 0) top-left, (1, 1) bottom-right); or (..., 4) boxes
                (cx, cy, w, h). Batch and level dims of size 1 broadcast (the
                official ViT-Adapter passes (1, Lq, 1, 2)).
            input_flatten: (N, S, C) values of all levels, S = sum_l H_l*W_l.
            input_spatial_shapes: (n_levels, 2) long, rows (H_l, W_l).
            input_level_start_index: (n_levels,) long, start of each level in S.
            input_padding_mask: optional (N, S) bool, True = padding (value zeroed).

        Returns:
            (N, Lq, C) tensor.
        """
        return self.output_proj(self.sample(query, reference_points, input_flatten, input_spatial_shapes,
                                            input_level_start_index, input_padding_mask))

    def sample(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: Optional[torch.Tensor] = None,
        query_affine: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """:meth:`forward` without ``output_proj``: the sampled, attention-weighted
        values, (N, Lq, value_dim). Same arguments as :meth:`forward`, plus
        `query_affine`: ``(scale, shift)`` (C,) each, to read the query as
        ``query * scale + shift`` (a LayerNorm's affine), folded into the
        offset / attention projection instead of applied to the query."""
        shapes = self._check_inputs(query, reference_points, input_flatten, input_spatial_shapes,
                                    input_level_start_index, input_padding_mask)
        value = self._values(input_flatten, input_padding_mask)
        locations, weights = self._locations(query, reference_points, input_spatial_shapes, query_affine)
        return ms_deform_attn(value, shapes, input_level_start_index, locations, weights, impl=self.impl)

    def sample_output_projected(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        query_affine: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """:meth:`forward` without ``output_proj``'s bias, computed with
        ``output_proj`` applied to the values before sampling (see
        :func:`ms_deform_attn_output_projected`): the same values, cheaper
        when the queries outnumber the value tokens. Arguments as in
        :meth:`sample` (no padding mask). Returns (N, Lq, d_model)."""
        shapes = self._check_inputs(query, reference_points, input_flatten, input_spatial_shapes, None, None)
        value = self._values(input_flatten, None)
        locations, weights = self._locations(query, reference_points, input_spatial_shapes, query_affine)
        return ms_deform_attn_output_projected(value, shapes, locations, weights, self.output_proj.weight)

    def _values(self, input_flatten: torch.Tensor, input_padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """(N, S, C) -> value_proj'ed (N, S, M, Dh), padding positions zeroed."""
        n, s, _ = input_flatten.shape
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        return value.view(n, s, self.n_heads, self.value_dim // self.n_heads)

    def _locations(self, query, reference_points, input_spatial_shapes, query_affine=None):
        """Normalised sampling locations (N, Lq, M, L, P, 2) and attention
        weights (N, Lq, M, L, P) of the queries."""
        offsets, weights = self._offsets_and_weights(query, query_affine)
        ref = reference_points[:, :, None, :, None, :]  # (N|1, Lq, 1, L|1, 1, 2|4)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalise by (W_l, H_l)
            normalizer = input_spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) as (W, H)
            return ref + offsets / normalizer[None, None, None, :, None, :], weights
        return ref[..., :2] + offsets / self.n_points * ref[..., 2:] * 0.5, weights

    def sample_features(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        features: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        feature_affine: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """:meth:`sample` with ``value_proj`` applied after sampling (see
        :func:`ms_deform_attn_project_last`): the same values, cheaper when the
        queries are few next to the value tokens. `features` are the
        un-projected values, read as ``features * scale + shift`` when
        `feature_affine` = ``(scale, shift)`` is given (folded into
        ``value_proj``). Point reference points (N|1, Lq, L|1, 2) only, every
        level at least 2x2, no padding mask; returns None when these do not
        hold (callers then use :meth:`sample`)."""
        shapes = self._check_inputs(query, reference_points, features, input_spatial_shapes, None, None)
        if reference_points.shape[-1] != 2 or any(h < 2 or w < 2 for h, w in shapes):
            return None
        weight, bias = _fold_affine(self.value_proj.weight, self.value_proj.bias, feature_affine)
        offsets, weights = self._offsets_and_weights(query, query_affine=None)
        # Reference points in pixels of each level, (x, y) = loc * (W, H) - 0.5 (grid_sample's convention).
        wh = input_spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) as (W, H)
        ref_px = (reference_points * wh - 0.5)[:, :, None, :, None, :]  # (N|1, Lq, 1, L, 1, 2)
        return ms_deform_attn_project_last(features, shapes, offsets + ref_px, weights, weight, bias)

    def _offsets_and_weights(self, query: torch.Tensor, query_affine=None):
        """(N, Lq, C) queries -> sampling offsets (N, Lq, M, L, P, 2) in pixels
        of each level (before normalisation) and softmax attention weights
        (N, Lq, M, L, P)."""
        n, lq, _ = query.shape
        m, nl, p = self.n_heads, self.n_levels, self.n_points
        # sampling_offsets and attention_weights as one GEMM (both read the query).
        weight, bias = _fold_affine(
            torch.cat([self.sampling_offsets.weight, self.attention_weights.weight]),
            torch.cat([self.sampling_offsets.bias, self.attention_weights.bias]),
            query_affine,
        )
        proj = F.linear(query, weight, bias)
        n_off = m * nl * p * 2
        offsets = proj[..., :n_off].view(n, lq, m, nl, p, 2)
        weights = proj[..., n_off:].reshape(n, lq, m, nl * p)
        return offsets, _softmax_last(weights).view(n, lq, m, nl, p)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, "
                f"n_points={self.n_points}, ratio={self.ratio}")
