"""Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021),
as used by ViT-Adapter's injector and extractor.

The operator is a plain function with a precise shape contract; the module
:class:`MSDeformAttn` only owns the projections and their initialisation
(official parameterisation and state-dict names: ``sampling_offsets``,
``attention_weights``, ``value_proj``, ``output_proj``).

Everything here is pure PyTorch (``F.grid_sample``): no compile step, runs on
CPU and GPU.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ms_deform_attn_reference", "MSDeformAttn"]


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
        """
        super().__init__()
        for name, v in (("d_model", d_model), ("n_levels", n_levels),
                        ("n_heads", n_heads), ("n_points", n_points)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"MSDeformAttn: {name} must be a positive int, got {v!r}")
        if ratio <= 0:
            raise ValueError(f"MSDeformAttn: ratio must be > 0, got {ratio!r}")
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
        shapes = self._check_inputs(query, reference_points, input_flatten, input_spatial_shapes,
                                    input_level_start_index, input_padding_mask)
        n, lq, _ = query.shape
        s = input_flatten.shape[1]
        m, nl, p = self.n_heads, self.n_levels, self.n_points

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, m, self.value_dim // m)

        offsets = self.sampling_offsets(query).view(n, lq, m, nl, p, 2)
        weights = self.attention_weights(query).view(n, lq, m, nl * p)
        weights = weights.softmax(-1).view(n, lq, m, nl, p)

        ref = reference_points[:, :, None, :, None, :]  # (N|1, Lq, 1, L|1, 1, 2|4)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalise by (W_l, H_l)
            normalizer = input_spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) as (W, H)
            locations = ref + offsets / normalizer[None, None, None, :, None, :]
        else:
            locations = ref[..., :2] + offsets / p * ref[..., 2:] * 0.5

        out = ms_deform_attn_reference(value, shapes, locations, weights)
        return self.output_proj(out)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, "
                f"n_points={self.n_points}, ratio={self.ratio}")
