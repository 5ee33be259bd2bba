"""The MSDeformAttn module: the projections around the operator and their
initialisation (official parameterisation and state-dict names:
``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``)."""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..affine import fold_affine
from .dispatch import IMPLEMENTATIONS, ms_deform_attn
from .reference import shapes_as_list

__all__ = ["MSDeformAttn"]


def _softmax_last(x: torch.Tensor) -> torch.Tensor:
    """softmax over a short last dim (n_levels * n_points), spelt out: CPU's
    ``Tensor.softmax`` kernel is slow for dims this short (4..16)."""
    e = (x - x.detach().amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


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
        shapes = shapes_as_list(input_spatial_shapes)
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
        self._check_inputs(query, reference_points, input_flatten, input_spatial_shapes,
                           input_level_start_index, input_padding_mask)
        value = self._values(input_flatten, input_padding_mask)
        locations, weights = self._locations(query, reference_points, input_spatial_shapes, query_affine)
        # the shapes tensor, not its Python ints: a traced export keeps the level sizes dynamic
        return ms_deform_attn(value, input_spatial_shapes, input_level_start_index, locations, weights,
                              impl=self.impl)

    def sample_output_projected(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        query_affine: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """:meth:`forward` without ``output_proj``'s bias, with ``output_proj``
        applied to the values before sampling
        (:func:`.reordered.ms_deform_attn_output_projected`; no autograd use):
        the same values, cheaper when the queries outnumber the value tokens.
        Arguments as in :meth:`sample` (no padding mask). Returns (N, Lq, d_model)."""
        shapes = self._check_inputs(query, reference_points, input_flatten, input_spatial_shapes, None, None)
        value = self._values(input_flatten, None)
        locations, weights = self._locations(query, reference_points, input_spatial_shapes, query_affine)
        return ms_deform_attn(value, shapes, None, locations, weights, output_proj=self.output_proj.weight,
                              reorder=True)

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
        """:meth:`sample` with ``value_proj`` applied after the sampling
        (:func:`.reordered.ms_deform_attn_project_last`; no autograd use): the
        same values, cheaper when the queries are few next to the value
        tokens. `features` are the un-projected values, read as
        ``features * scale + shift`` when `feature_affine` = ``(scale, shift)``
        is given (folded into ``value_proj``). No padding mask."""
        shapes = self._check_inputs(query, reference_points, features, input_spatial_shapes, None, None)
        value_proj = fold_affine(self.value_proj.weight, self.value_proj.bias, before=feature_affine)
        locations, weights = self._locations(query, reference_points, input_spatial_shapes)
        return ms_deform_attn(features, shapes, None, locations, weights, value_proj=value_proj, reorder=True)

    def _offsets_and_weights(self, query: torch.Tensor, query_affine=None):
        """(N, Lq, C) queries -> sampling offsets (N, Lq, M, L, P, 2) in pixels
        of each level (before normalisation) and softmax attention weights
        (N, Lq, M, L, P)."""
        n, lq, _ = query.shape
        m, nl, p = self.n_heads, self.n_levels, self.n_points
        # sampling_offsets and attention_weights as one GEMM (both read the query).
        weight, bias = fold_affine(
            torch.cat([self.sampling_offsets.weight, self.attention_weights.weight]),
            torch.cat([self.sampling_offsets.bias, self.attention_weights.bias]),
            before=query_affine,
        )
        proj = F.linear(query, weight, bias)
        n_off = m * nl * p * 2
        offsets = proj[..., :n_off].view(n, lq, m, nl, p, 2)
        weights = proj[..., n_off:].reshape(n, lq, m, nl * p)
        return offsets, _softmax_last(weights).view(n, lq, m, nl, p)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, "
                f"n_points={self.n_points}, ratio={self.ratio}")
