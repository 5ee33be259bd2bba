"""The eager CPU formulation: the whole operator as one ``F.embedding_bag``.

All levels at once: the four bilinear corners of every sampling point are
rows of the zero-bordered value table (:mod:`.corners`) and the attention
weight is folded into the corner weights, so the forward is ONE
``embedding_bag`` (gather + weighted sum, nothing materialised per corner).
The backward is hand-written: corner-weight gradients with one sampled
dense-dense product (``torch.sparse.sampled_addmm``), value gradients as a
*gather* over the sampling points sorted by table row (``embedding_bag`` with
offsets) instead of a scatter.
"""
import warnings

import torch
import torch.nn.functional as F

from .corners import padded_corners

__all__ = ["ms_deform_attn_embedding_bag"]

# Value-gradient strategy (see _BilinearGatherSum.backward), both exact and
# tested equal (tests/layers/test_ms_deform_attn_paths.py forces each):
# * all corners: one sort of the K * 4 corner rows, one gather; its cost
#   follows the points alone;
# * shifted top-left: one sort of the K top-left rows, four gathers, then four
#   shifted adds over the whole (R, Dh) table; cheaper only while those table
#   passes are small next to the sorting they save.
# The crossover is a tuning constant, not a correctness one: all corners when
# the table has more than this many rows per point (the injector: 3 value
# levels, few queries), shifted top-left otherwise (the extractor: one small
# value level, 5.25x as many queries).
_CORNER_SORT_MIN_ROWS_PER_POINT = 0.05


class _BilinearGatherSum(torch.autograd.Function):
    """``out[b] = sum_j w[b, j] * table[index[b, j]]`` over the 4 corners of K points.

    table: (R, Dh) padded value table with (N, S_pad, M) rows; index: (B, K * 4)
    int32 / int64 corner rows (corners 00, 01, 10, 11 of each point); weights:
    (B, K * 4); layout: (N, S_pad, M, blocks) with blocks the per-level
    (first position, end position, corner offsets in positions) of the
    table (see the backward). Returns (B, Dh).
    """

    @staticmethod
    def forward(ctx, table, index, weights, layout):
        out = F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")
        ctx.save_for_backward(table, index, weights)
        ctx.layout = layout
        return out

    @staticmethod
    def backward(ctx, grad_out):
        table, index, weights = ctx.saved_tensors
        b, k4 = index.shape
        grad_out = grad_out.contiguous()
        grad_table = grad_weights = None
        if ctx.needs_input_grad[2]:
            # d out[b] / d w[b, j] = <grad_out[b], table[index[b, j]]>: a sampled
            # dense-dense product on the (B, R) sparsity pattern of `index`.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                pattern = torch.sparse_csr_tensor(
                    torch.arange(0, b * k4 + 1, k4, device=index.device),
                    index.view(-1).long(),
                    grad_out.new_zeros(b * k4),
                    size=(b, table.shape[0]),
                    check_invariants=False,
                )
                dots = torch.sparse.sampled_addmm(pattern, grad_out, table.t())
            grad_weights = dots.values().view(b, k4)
        if ctx.needs_input_grad[0]:
            if table.shape[0] > _CORNER_SORT_MIN_ROWS_PER_POINT * (index.numel() // 4):
                grad_table = _gather_all_corners(grad_out, index, weights, table.shape[0])
            else:
                grad_table = _scatter_corners(grad_out, index[:, 0::4], weights, table.shape, ctx.layout)
        return grad_table, None, grad_weights, None


def _bags_by_row(rows: torch.Tensor, n_rows: int):
    """Group the entries of `rows` (B, K) by row value, for ``embedding_bag``:
    returns (perm, bag_of, offsets) with ``perm`` the entries sorted by row,
    ``bag_of`` the b of each sorted entry and ``offsets`` the start of each of
    the `n_rows` rows' runs in that order."""
    keys, perm = torch.sort(rows.reshape(-1))
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


def ms_deform_attn_embedding_bag(
    value: torch.Tensor,
    value_spatial_shapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention as one ``embedding_bag`` over all levels,
    points and corners, with a hand-written backward; same contract as
    :func:`.reference.ms_deform_attn_reference`."""
    n, _, m, dh = value.shape
    lq = sampling_locations.shape[1]
    rows, table, index, weights = padded_corners(value, value_spatial_shapes, sampling_locations, attention_weights)
    blocks = [(start, start + (h + 2) * (w + 2), (0, 1, w + 2, w + 3))
              for start, (h, w) in zip(table.starts, table.shapes)]
    b = n * lq * m
    out = _BilinearGatherSum.apply(
        rows, index.view(b, -1), weights.view(b, -1), (n, table.positions, m, blocks))
    return out.view(n, lq, m * dh)
