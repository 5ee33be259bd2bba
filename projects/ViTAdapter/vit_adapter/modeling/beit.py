"""BEiT transformer blocks with relative position bias (BEiT / BEiTv2, Bao et al.).

The trunk of the released BEiT-Adapter (``detection/.../base/beit.py`` and
``segmentation/.../base/beit.py``), written for this project. State-dict names
are the release's (and unilm's / timm's ``beit_*``): ``patch_embed.proj``,
``cls_token``, ``blocks.N.gamma_1`` / ``gamma_2``, ``blocks.N.attn.qkv.weight``
(no bias), ``blocks.N.attn.q_bias`` / ``v_bias`` (the key bias is zero),
``blocks.N.attn.relative_position_bias_table``, ``rel_pos_bias.*`` (shared
table), ``blocks.N.mlp.fc1`` / ``fc2``. The release's ``relative_position_index``
buffers are derived from the grid here (one index per grid, shared by all
blocks) and not saved.

Two layouts of the relative position table, as the release ships them:

* **windowed** (detection): attention inside non-overlapping windows of
  ``ws x ws`` tokens; the table has ``(2ws-1)^2`` rows (no cls token). The
  token map is zero-padded to a multiple of the window *before* the qkv
  projection and padded keys are not masked (the release's behaviour: padded
  tokens carry the q / v biases into the softmax).
* **global with cls** (segmentation): one cls token in front of the grid; the
  table covers the ``(h, w)`` grid of ``img_size / patch_size``:
  ``(2h-1)(2w-1) + 3`` rows, the last three being cls->token, token->cls and
  cls->cls. Inputs of another size resize the table to the input's grid with
  :func:`resize_relative_position_table` (BEiT's geometric-progression cubic
  interpolation); at ``img_size`` the table is used as stored.

A global block without cls token (``window_attn`` False in the detection
layout) uses the table of ``window_size`` the same way, resized to the input grid.
"""
import functools
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from timm.models.beit import gen_relative_position_index
from torch import nn

from vit_adapter.modeling.vit import window_partition, window_unpartition

__all__ = [
    "NUM_CLS_ENTRIES",
    "geometric_progression_positions",
    "cubic_resample_matrix",
    "resize_relative_position_table",
    "relative_position_index",
    "table_rows",
    "RelativePositionBias",
    "BEiTAttention",
    "BEiTBlock",
    "BEiT",
]

NUM_CLS_ENTRIES = 3  # cls->token, token->cls, cls->cls rows at the end of a table with cls token
Grid = Tuple[int, int]


# ----------------------------------------------------------------------------- table geometry


def table_rows(grid: Grid, with_cls: bool) -> int:
    """Rows of the relative position table of an (h, w) grid: (2h-1)(2w-1) (+3 with cls)."""
    return (2 * grid[0] - 1) * (2 * grid[1] - 1) + (NUM_CLS_ENTRIES if with_cls else 0)


def relative_position_index(grid: Grid, with_cls: bool, device=None) -> torch.Tensor:
    """(N, N) long index into the table for the tokens of an (h, w) grid, N = h*w (+1 with cls).

    Token order: [cls,] then the grid row-major. Entry (i, j) is
    ``(dy + h - 1) * (2w - 1) + (dx + w - 1)`` for dy, dx = position i - position j;
    with cls, row / column 0 point to the three cls rows (timm's / unilm's layout).
    """
    index = gen_relative_position_index(tuple(grid), device=device)
    return index if with_cls else index[1:, 1:].contiguous()


def geometric_progression_positions(src: int, dst: int) -> List[float]:
    """BEiT's sample positions for resizing one axis of a relative position table.

    A table axis of ``src`` offsets (-(src//2) .. src//2) is placed on the
    offsets of a ``dst``-long axis with gaps growing geometrically from the centre
    (1, q, q^2, ...), q found by bisection on [1.01, 1.5] so that the outermost
    position is about dst // 2 (unilm's ``run_class_finetuning.py``, used by the
    release's loader). Returns the ``src`` positions, increasing, centre 0.
    """
    def geometric_sum(r: float, n: int) -> float:
        return (1.0 - r**n) / (1.0 - r)

    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if geometric_sum(q, src // 2) > dst // 2:
            right = q
        else:
            left = q
    dis, cur = [], 1.0
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return [-d for d in reversed(dis)] + [0.0] + dis


def _bspline_basis(knots: torch.Tensor, x: torch.Tensor, degree: int) -> torch.Tensor:
    """(len(x), len(knots) - degree - 1) values of the B-spline basis at x (Cox-de Boor)."""
    t = knots
    basis = ((t[:-1] <= x[:, None]) & (x[:, None] < t[1:])).to(t.dtype)
    last = int(torch.nonzero(t[:-1] < t[1:]).max())  # x == the last knot: last real interval
    basis[x == t[-1], last] = 1.0
    for d in range(1, degree + 1):
        n = len(t) - d - 1
        lo, hi = t[:n], t[d : d + n]
        lo1, hi1 = t[1 : n + 1], t[d + 1 : d + 1 + n]
        left = torch.where(hi > lo, (x[:, None] - lo) / (hi - lo).clamp_min(1e-300), torch.zeros_like(lo))
        right = torch.where(hi1 > lo1, (hi1 - x[:, None]) / (hi1 - lo1).clamp_min(1e-300), torch.zeros_like(lo))
        basis = left * basis[:, :n] + right * basis[:, 1 : n + 1]
    return basis


@functools.lru_cache(maxsize=64)
def _cubic_resample_matrix_cached(src: Tuple[float, ...], dst: Tuple[float, ...]) -> torch.Tensor:
    x = torch.tensor(src, dtype=torch.float64)
    n = len(src)
    if n < 4:
        raise ValueError(f"cubic interpolation needs at least 4 source positions, got {n}")
    # not-a-knot cubic interpolating spline = FITPACK's s=0 knots (what scipy interp2d(kind='cubic')
    # fits on a regular grid): boundary knots repeated 4 times, interior knots at x[2:-2].
    knots = torch.cat([x[:1].repeat(4), x[2:-2], x[-1:].repeat(4)])
    # FITPACK clamps evaluation points to the data range (no extrapolation).
    t = torch.tensor(dst, dtype=torch.float64).clamp(x[0], x[-1])
    collocation = _bspline_basis(knots, x, 3)  # (n, n)
    evaluation = _bspline_basis(knots, t, 3)  # (m, n)
    m = torch.linalg.solve(collocation.T, evaluation.T).T.contiguous()  # (m, n)
    # an interpolating spline returns the data at the data points: make those rows exact
    hit = (t[:, None] == x[None, :]).to(m.dtype)
    rows = hit.sum(1) > 0
    m[rows] = hit[rows]
    return m


def cubic_resample_matrix(src: Sequence[float], dst: Sequence[float]) -> torch.Tensor:
    """(len(dst), len(src)) float64 matrix M: the cubic spline through values at `src`,
    evaluated at `dst`, is ``M @ values`` (not-a-knot ends; `dst` clamped to the range of `src`)."""
    with torch.inference_mode(False), torch.device("cpu"):  # cached: a normal CPU tensor whatever the context
        return _cubic_resample_matrix_cached(tuple(float(v) for v in src), tuple(float(v) for v in dst))


def _axis_matrix(src_len: int, dst_len: int) -> Optional[torch.Tensor]:
    """(dst_len, src_len) resampling of one table axis; None for the identity."""
    if src_len == dst_len:
        return None
    if dst_len < src_len:  # a smaller grid: its offsets are a centred subset of the table's
        with torch.inference_mode(False), torch.device("cpu"):
            m = torch.zeros(dst_len, src_len, dtype=torch.float64)
            start = (src_len - dst_len) // 2
            m[torch.arange(dst_len), start + torch.arange(dst_len)] = 1.0
        return m
    t = dst_len // 2
    return cubic_resample_matrix(geometric_progression_positions(src_len, dst_len), range(-t, t + 1))


def resize_relative_position_table(
    table: torch.Tensor, src_grid: Grid, dst_grid: Grid, with_cls: bool
) -> torch.Tensor:
    """Resize a (rows, heads) relative position table from an (h, w) grid to another.

    Each axis of the (2h-1) x (2w-1) offset grid is resampled separately:

    * larger: BEiT's geometric-progression cubic interpolation
      (:func:`geometric_progression_positions`; the tensor-product not-a-knot
      cubic spline that ``scipy.interpolate.interp2d(kind='cubic')`` fits, as in
      the release's loader, without SciPy; square grids give the release's table);
    * smaller: the centred crop (the smaller grid's offsets exist in the table);
    * equal: unchanged.

    The zero-offset entry is kept exactly; the three cls rows (``with_cls``)
    are carried over unchanged. Differentiable (a linear map of the table).
    """
    sy, sx = 2 * src_grid[0] - 1, 2 * src_grid[1] - 1
    dy, dx = 2 * dst_grid[0] - 1, 2 * dst_grid[1] - 1
    extra = NUM_CLS_ENTRIES if with_cls else 0
    if table.shape[0] != sy * sx + extra:
        raise ValueError(
            f"relative position table has {table.shape[0]} rows, expected {sy * sx + extra} for a "
            f"{src_grid[0]}x{src_grid[1]} grid{' with cls token' if with_cls else ''}"
        )
    if (sy, sx) == (dy, dx):
        return table
    grid = table[: sy * sx].reshape(sy, sx, -1)
    my, mx = _axis_matrix(sy, dy), _axis_matrix(sx, dx)
    if my is not None:
        grid = torch.einsum("ys,sxh->yxh", my.to(grid), grid)
    if mx is not None:
        grid = torch.einsum("xs,ysh->yxh", mx.to(grid), grid)
    return torch.cat([grid.reshape(dy * dx, -1), table[sy * sx :]], dim=0)


_INDEX_CACHE: dict = {}


def _cached_index(grid: Grid, with_cls: bool, device) -> torch.Tensor:
    """:func:`relative_position_index` shared by every block of one grid and device (an
    (N, N) long index: 20 MB for a 40 x 40 grid with cls, built once, not per block)."""
    key = (grid, with_cls, torch.device(device))
    index = _INDEX_CACHE.get(key)
    if index is None:
        if len(_INDEX_CACHE) >= 16:
            _INDEX_CACHE.clear()
        with torch.inference_mode(False):  # a normal tensor: it is saved for backward later
            index = _INDEX_CACHE[key] = relative_position_index(grid, with_cls, device=device)
    return index


class _RelativeTable(nn.Module):
    """Owns ``relative_position_bias_table`` for a `table_grid` and turns it into
    the (heads, N, N) attention bias of any grid. The index into the table is
    derived from the grid (shared across blocks, not a buffer: not saved)."""

    def _init_table(self, table_grid: Grid, num_heads: int, with_cls: bool):
        self.table_grid = tuple(table_grid)
        self.with_cls = with_cls
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_rows(self.table_grid, with_cls), num_heads))

    def relative_position_index(self, grid: Optional[Grid] = None) -> torch.Tensor:
        """(N, N) index of an (h, w) grid (default: the table's grid) on the table's device."""
        grid = self.table_grid if grid is None else (int(grid[0]), int(grid[1]))
        return _cached_index(grid, self.with_cls, self.relative_position_bias_table.device)

    def relative_bias(self, grid: Grid) -> torch.Tensor:
        """(heads, N, N) bias for the tokens of an (h, w) grid (N = h*w, +1 with cls)."""
        grid = (int(grid[0]), int(grid[1]))
        table = self.relative_position_bias_table
        if grid != self.table_grid:
            table = resize_relative_position_table(table, self.table_grid, grid, self.with_cls)
        index = self.relative_position_index(grid)
        n = index.shape[0]
        return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)


class RelativePositionBias(_RelativeTable):
    """A relative position table shared by all blocks (``rel_pos_bias`` in BEiT checkpoints)."""

    def __init__(self, table_grid: Grid, num_heads: int, with_cls: bool):
        """
        Args:
            table_grid ((int, int)): grid (or window) the table is stored for.
            num_heads (int): attention heads.
            with_cls (bool): the table has the three cls rows.
        """
        super().__init__()
        self._init_table(table_grid, num_heads, with_cls)

    def forward(self, grid: Grid) -> torch.Tensor:
        """(h, w) grid -> (heads, N, N) attention bias."""
        return self.relative_bias(grid)


class BEiTAttention(_RelativeTable):
    """BEiT multi-head attention: qkv without bias plus ``q_bias`` / ``v_bias``
    (key bias zero), optional per-block relative position bias, global or windowed."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        table_grid: Optional[Grid] = None,
        with_cls: bool = False,
        windowed: bool = False,
    ):
        """
        Args:
            dim (int): token width.
            num_heads (int): attention heads; must divide `dim`.
            qkv_bias (bool): learnable ``q_bias`` and ``v_bias``.
            qk_scale (float): logit scale (default head_dim ** -0.5).
            attn_drop, proj_drop (float): dropout on attention weights / after ``proj``.
            table_grid ((int, int) or None): grid of this block's relative
                position table (the window when `windowed`); None: no table.
            with_cls (bool): the token sequence starts with a cls token (global only).
            windowed (bool): attention inside windows of ``table_grid`` tokens.
        """
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if windowed and (table_grid is None or with_cls):
            raise ValueError("windowed BEiT attention needs a window size and no cls token")
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.windowed = windowed
        self.window_size = table_grid[0] if windowed else 0
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.has_table = table_grid is not None
        if self.has_table:
            self._init_table(table_grid, num_heads, with_cls)
        else:
            self.with_cls = with_cls
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _attend(self, x: torch.Tensor, grid: Grid, rel_pos_bias: Optional[torch.Tensor]) -> torch.Tensor:
        """(b, N, C) tokens of one (h, w) grid or window (+ cls) -> (b, N, C), before ``proj``."""
        b, n, c = x.shape
        qkv = self.qkv(x)
        if self.q_bias is not None:
            qkv = qkv + torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_bias(grid) if self.has_table else None
        if rel_pos_bias is not None:
            bias = rel_pos_bias if bias is None else bias + rel_pos_bias
        if bias is not None:
            bias = bias.unsqueeze(0).to(q.dtype)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )
        return x.transpose(1, 2).reshape(b, n, c)

    def forward(self, x: torch.Tensor, H: int, W: int, rel_pos_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, [1 +] H*W, C) tokens ([cls,] then the (H, W) grid row-major).
            rel_pos_bias: optional shared (heads, N, N) bias (N per attention call).
        Returns:
            (B, [1 +] H*W, C)
        """
        if self.windowed:
            B, N, C = x.shape
            # the release pads the tokens (not qkv) and does not mask the padded keys
            windows, pad_hw = window_partition(x.reshape(B, H, W, C), self.window_size)
            y = self._attend(windows, (self.window_size, self.window_size), rel_pos_bias)
            y = window_unpartition(y, self.window_size, pad_hw, (H, W)).reshape(B, N, C)
        else:
            y = self._attend(x, (H, W), rel_pos_bias)
        return self.proj_drop(self.proj(y))


class BEiTBlock(nn.Module):
    """Pre-norm block: x + gamma_1 * attn(norm1(x)); x + gamma_2 * mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: Optional[float] = None,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        act_layer: Callable[[], nn.Module] = nn.GELU,
        table_grid: Optional[Grid] = None,
        with_cls: bool = False,
        windowed: bool = False,
        with_cp: bool = False,
    ):
        """
        Args:
            dim, num_heads, mlp_ratio, qkv_bias, qk_scale: attention / MLP shape.
            drop, attn_drop, drop_path (float): dropout, attention dropout, stochastic depth.
            init_values (float or None): layer-scale init of ``gamma_1`` /
                ``gamma_2``; None: no layer scale.
            norm_layer, act_layer: constructors.
            table_grid, with_cls, windowed: see :class:`BEiTAttention`.
            with_cp (bool): activation checkpointing while gradients are needed.
        """
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = norm_layer(dim)
        self.attn = BEiTAttention(
            dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop,
            table_grid=table_grid, with_cls=with_cls, windowed=windowed,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        if init_values is not None:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values)))
        else:
            self.gamma_1 = self.gamma_2 = None

    def _forward(self, x: torch.Tensor, H: int, W: int, rel_pos_bias: Optional[torch.Tensor]) -> torch.Tensor:
        y = self.attn(self.norm1(x), H, W, rel_pos_bias)
        x = x + self.drop_path(y if self.gamma_1 is None else self.gamma_1 * y)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y if self.gamma_2 is None else self.gamma_2 * y)

    def forward(self, x: torch.Tensor, H: int, W: int, rel_pos_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, [1 +] H*W, C) -> same shape."""
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, H, W, rel_pos_bias, use_reentrant=False)
        return self._forward(x, H, W, rel_pos_bias)


def _per_block(value, depth: int, name: str) -> list:
    values = list(value) if isinstance(value, Sequence) else [value] * depth
    if len(values) != depth:
        raise ValueError(f"{name} has {len(values)} entries, expected one per block (depth={depth})")
    return values


class BEiT(nn.Module):
    """BEiT trunk (no head, no final norm): patch embedding, [cls token,] blocks.

    Subclasses (:class:`vit_adapter.modeling.beit_adapter.BEiTAdapter`) run the
    blocks themselves with :meth:`embed`, :meth:`shared_bias` and ``self.blocks``.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        init_values: Optional[float] = None,
        use_abs_pos_emb: bool = False,
        use_rel_pos_bias: bool = True,
        use_shared_rel_pos_bias: bool = False,
        with_cls_token: bool = False,
        window_attn: Union[bool, Sequence[bool]] = False,
        window_size: Union[int, Sequence[int]] = 14,
        with_cp: bool = False,
    ):
        """
        Args:
            img_size (int): training image side; with a cls token the tables cover
                its (img_size / patch_size)^2 grid (the release's ``patch_shape``).
            patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio: ViT shape.
            qkv_bias (bool): ``q_bias`` / ``v_bias``.
            qk_scale (float): attention logit scale (default head_dim ** -0.5).
            drop_rate, attn_drop_rate (float): dropout.
            drop_path_rate (float): stochastic depth, linear from 0 to this value.
            norm_layer (callable): token norm (LayerNorm eps 1e-6).
            init_values (float or None): layer scale ``gamma_1`` / ``gamma_2`` init.
            use_abs_pos_emb (bool): absolute position embedding (``pos_embed``) of
                the img_size grid, resized bicubically to the input grid.
            use_rel_pos_bias (bool): a relative position table in every block.
            use_shared_rel_pos_bias (bool): one table ``rel_pos_bias`` for all blocks.
            with_cls_token (bool): the segmentation layout (cls token, global
                attention, tables with cls rows over the img_size grid).
            window_attn (bool or list[bool]): windowed attention per block
                (detection layout only).
            window_size (int or list[int]): window side per block; without cls
                token the blocks' tables cover their window.
            with_cp (bool): activation checkpointing of every block.
        """
        super().__init__()
        window_attn = _per_block(window_attn, depth, "window_attn")
        if with_cls_token and any(window_attn):
            raise ValueError("BEiT with a cls token (segmentation layout) has no window attention: set window_attn=False")
        # with a cls token the tables cover the img_size grid: window_size is not used
        window_size = [None] * depth if with_cls_token else _per_block(window_size, depth, "window_size")
        if use_shared_rel_pos_bias and not with_cls_token and len(set(window_size)) > 1:
            raise ValueError(f"a shared relative position table needs one window size, got {sorted(set(window_size))}")
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.drop_path_rate = drop_path_rate
        self.norm_layer = norm_layer
        self.with_cls_token = with_cls_token
        self.window_attn = window_attn
        self.window_size = window_size

        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            output_fmt="NHWC", strict_img_size=False,
        )
        self.img_grid = tuple(self.patch_embed.grid_size)
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            trunc_normal_(self.cls_token, std=0.02)
        num_prefix = 1 if with_cls_token else 0
        if use_abs_pos_emb:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_prefix + self.img_grid[0] * self.img_grid[1], embed_dim))
            trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        self.pos_drop = nn.Dropout(drop_rate)

        def table_grid(i):
            return self.img_grid if with_cls_token else (window_size[i], window_size[i])

        if use_shared_rel_pos_bias:
            self.rel_pos_bias = RelativePositionBias(table_grid(0), num_heads, with_cls_token)
        else:
            self.rel_pos_bias = None
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            [
                BEiTBlock(
                    embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                    drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], init_values=init_values,
                    norm_layer=norm_layer, table_grid=table_grid(i) if use_rel_pos_bias else None,
                    with_cls=with_cls_token, windowed=window_attn[i], with_cp=with_cp,
                )
                for i in range(depth)
            ]
        )
        self.blocks.apply(self._init_block_weights)

    @staticmethod
    def _init_block_weights(m: nn.Module):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def get_num_layers(self) -> int:
        return len(self.blocks)

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """Image (B, 3, H, W) -> grid tokens (B, H/16 * W/16, D) (plus the grid part of
        ``pos_embed``, resized bicubically, when used) and the grid (h, w)."""
        x = self.patch_embed(x).contiguous()
        B, H, W, D = x.shape
        x = x.reshape(B, H * W, D)
        if self.pos_embed is not None:
            grid = self.pos_embed[:, 1:] if self.with_cls_token else self.pos_embed
            if (H, W) != self.img_grid:
                grid = grid.reshape(1, *self.img_grid, D).permute(0, 3, 1, 2)
                grid = F.interpolate(grid, size=(H, W), mode="bicubic", align_corners=False)
                grid = grid.flatten(2).transpose(1, 2)
            x = x + grid
        return self.pos_drop(x), H, W

    def cls_tokens(self, batch: int) -> torch.Tensor:
        """(B, 1, D) cls token (plus its ``pos_embed`` slot when used)."""
        cls = self.cls_token.expand(batch, -1, -1)
        return cls if self.pos_embed is None else cls + self.pos_embed[:, :1]

    def shared_bias(self, H: int, W: int) -> Optional[torch.Tensor]:
        """The shared table's (heads, N, N) bias for an (H, W) grid (its window in the
        windowed layout), or None without ``use_shared_rel_pos_bias``."""
        if self.rel_pos_bias is None:
            return None
        grid = (H, W) if self.with_cls_token or not self.window_attn[0] else self.rel_pos_bias.table_grid
        return self.rel_pos_bias(grid)
