"""The MSDeformAttn module: the projections around the operator and their
initialisation (official parameterisation and state-dict names:
``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``).

One forward. The plain formulation calls every projection as a module and
the operator (:func:`.dispatch.ms_deform_attn`) on the projected values. A
module built with ``reorder`` also holds one faster formulation of the same
function, a branch beside the plain code that moves one projection across the
sampling (:mod:`.reordered`); whether a call takes it is decided in
:meth:`MSDeformAttn.takes_reordered`, and which operator formulation a call
runs in :meth:`MSDeformAttn.resolved_impl`.
"""
import math
import warnings
from typing import Optional

import torch
from torch import nn

from ..fast_path import fast_path_ok
from .dispatch import check_impl, ms_deform_attn, select_impl
from .reference import shapes_as_list
from .reordered import ms_deform_attn_output_projected, ms_deform_attn_project_last

__all__ = ["MSDeformAttn", "REORDERINGS"]

#: The projection reorderings a module can be built with (see :class:`MSDeformAttn`).
REORDERINGS = ("value_proj_last", "output_proj_first")


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

    Attributes fixed at construction (the module's fast-path choice):

    * ``impl``: the operator formulation ("auto" resolves per device, see
      :meth:`resolved_impl`);
    * ``reorder``: None, or one of :data:`REORDERINGS`: the faster
      formulation this module may take without autograd (see
      :meth:`takes_reordered`);
    * ``fast_path``: True; set it to False to keep the plain formulation
      everywhere.
    """

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        ratio: float = 1.0,
        impl: str = "auto",
        reorder: Optional[str] = None,
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
            impl (str): operator formulation, "auto" (see
                :func:`.dispatch.select_impl`) or one of :data:`IMPLEMENTATIONS`.
            reorder (str): None (always the plain formulation), or the
                projection to move across the sampling when the module runs
                without autograd on CPU: "value_proj_last" (sample the input
                features, then ``value_proj`` per head: fewer MACs when the
                queries are few next to the values, ViT-Adapter's injector)
                or "output_proj_first" (``output_proj`` applied to each
                head's values before sampling: fewer MACs when the values are
                few next to the queries, the extractor).
        """
        super().__init__()
        for name, v in (("d_model", d_model), ("n_levels", n_levels),
                        ("n_heads", n_heads), ("n_points", n_points)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"MSDeformAttn: {name} must be a positive int, got {v!r}")
        if ratio <= 0:
            raise ValueError(f"MSDeformAttn: ratio must be > 0, got {ratio!r}")
        check_impl(impl, "MSDeformAttn")
        if reorder is not None and reorder not in REORDERINGS:
            raise ValueError(f"MSDeformAttn: reorder must be None or one of {REORDERINGS}, got {reorder!r}")
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
        self.reorder = reorder
        self.fast_path = True
        self._compile_failed = False  # an automatic "compile" that failed in this module

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
        shapes = self._check_inputs(query, reference_points, input_flatten, input_spatial_shapes,
                                    input_level_start_index, input_padding_mask)
        n, lq, _ = query.shape
        m, n_levels, p = self.n_heads, self.n_levels, self.n_points
        offsets = self.sampling_offsets(query).view(n, lq, m, n_levels, p, 2)
        weights = _softmax_last(self.attention_weights(query).view(n, lq, m, n_levels * p))
        weights = weights.view(n, lq, m, n_levels, p)
        locations = self._locations(reference_points, offsets, input_spatial_shapes)
        reordered = self.takes_reordered(query, input_padding_mask)

        if reordered == "value_proj_last":
            # Sampling and the attention sum are linear, so with V_h = F W_h^T + b_h:
            # sum_k a_k bilinear(V_h, p_k) = (sum_k a_k bilinear(F, p_k)) W_h^T + b_h sum_k a_k inside_k.
            sampled = ms_deform_attn_project_last(input_flatten, shapes, locations, weights,
                                                  self.value_proj.weight, self.value_proj.bias)
            return self.output_proj(sampled)

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, input_flatten.shape[1], m, self.value_dim // m)
        if reordered == "output_proj_first":
            # output_proj (W_o = [W_o,1 .. W_o,M] by head) commutes with sampling:
            # sum_h sample_h(V_h) W_o,h^T = sum_h sample_h(V_h W_o,h^T), then its bias.
            out = ms_deform_attn_output_projected(value, shapes, locations, weights, self.output_proj.weight)
            return out if self.output_proj.bias is None else out + self.output_proj.bias
        return self.output_proj(self._sample(value, input_spatial_shapes, input_level_start_index, locations, weights))

    def takes_reordered(self, query: torch.Tensor, input_padding_mask: Optional[torch.Tensor] = None) -> Optional[str]:
        """The reordering a call on `query` takes, or None for the plain
        formulation: the module's ``reorder``, when its fast path applies
        (:func:`vit_adapter.layers.fast_path.fast_path_ok`: eval, no
        autograd, no autocast, not tracing), on CPU (where the projection
        GEMMs dominate; GPUs keep the plain formulation), without a padding
        mask, and with the operator formulation the reorderings are written
        in (``embedding_bag``: a forced other ``impl`` keeps the plain path)."""
        if self.reorder is None or input_padding_mask is not None or query.device.type != "cpu":
            return None
        if not fast_path_ok(self, query) or self.resolved_impl(query.device) != "embedding_bag":
            return None
        return self.reorder

    def resolved_impl(self, device) -> str:
        """The operator formulation this module runs on `device`: ``impl``,
        "auto" resolved by :func:`.dispatch.select_impl`, except that after an
        automatic "compile" failed in this module it runs "embedding_bag"."""
        chosen = select_impl(device, self.impl)
        if chosen == "compile" and self.impl == "auto" and self._compile_failed:
            return "embedding_bag"
        return chosen

    def _sample(self, value, input_spatial_shapes, input_level_start_index, locations, weights) -> torch.Tensor:
        """The operator on (N, S, M, Dh) values: (N, Lq, value_dim). An
        automatic "compile" that fails warns once and this module runs
        "embedding_bag" from then on; a forced one raises."""
        impl = self.resolved_impl(value.device)
        # the shapes tensor, not its Python ints: a traced export keeps the level sizes dynamic
        args = (value, input_spatial_shapes, input_level_start_index, locations, weights)
        if impl == "compile" and self.impl == "auto":
            try:
                return ms_deform_attn(*args, impl="compile")
            except Exception as e:  # noqa: BLE001 - any compiler failure: use the eager path
                self._compile_failed = True
                warnings.warn(f"MSDeformAttn: the torch.compile path failed ({type(e).__name__}: {e}); this "
                              f"module uses 'embedding_bag' from now on (pass impl= to choose)")
                impl = "embedding_bag"
        return ms_deform_attn(*args, impl=impl)

    def _locations(self, reference_points, offsets, input_spatial_shapes) -> torch.Tensor:
        """Normalised sampling locations (N, Lq, M, L, P, 2) from offsets in
        pixels of each level (point references) or in box half-sizes / P (boxes)."""
        ref = reference_points[:, :, None, :, None, :]  # (N|1, Lq, 1, L|1, 1, 2|4)
        if reference_points.shape[-1] == 2:
            normalizer = input_spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) as (W, H)
            return ref + offsets / normalizer[None, None, None, :, None, :]
        return ref[..., :2] + offsets / self.n_points * ref[..., 2:] * 0.5

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, "
                f"n_points={self.n_points}, ratio={self.ratio}, impl={self.impl!r}, reorder={self.reorder!r}")
