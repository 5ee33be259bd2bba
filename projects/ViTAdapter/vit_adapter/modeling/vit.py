"""Plain Vision Transformer used by ViT-Adapter's detection backbone.

The ViT of the official release (``detection/mmdet_custom/models/backbones/
base/vit.py``), rebuilt on timm layers:

* patch embedding 16x16 (``patch_embed.proj``), no cls token at run time;
* absolute position embedding of the *pre-training* grid, cls slot kept
  (``pos_embed``: 1 x (N+1) x D, zeros at init), resized bicubically to the
  input's token grid on every forward;
* per-block global or windowed (14x14, padded) attention, qkv bias, no
  relative position bias;
* LayerNorm eps 1e-6, optional layer scale (``gamma1`` / ``gamma2``, init 1),
  stochastic depth with a linear schedule, optional activation checkpointing.

Parameter names are timm / DeiT names (``blocks.N.norm1``, ``.attn.qkv``,
``.attn.proj``, ``.norm2``, ``.mlp.fc1``, ``.mlp.fc2``), so DeiT / AugReg
checkpoints load by name (DeiT lacks ``gamma1``/``gamma2``: they stay at 1).
There is no final norm (the detection ViT has none).

Window padding
--------------
When the token grid is not a multiple of the window size, windows are padded.
Two behaviours are offered (``window_padding``):

* ``"official"`` (default): what the released code does. qkv is projected on
  the *unpadded* tokens, then the qkv map is zero-padded to a multiple of the
  window and the padded keys are NOT masked: they enter the softmax with
  logit 0 and contribute value 0 (they still dilute the attention weights).
  Needed to reproduce official outputs / AP with official weights.
* ``"masked"``: padded keys are excluded from the softmax. Attention is then
  exactly windowed attention over the real tokens of each (partial) window.

Both agree when the grid is a multiple of the window size (896x896 input:
56x56 tokens); they differ otherwise (1024x1024: 64x64 tokens; 800x1333 padded
to 800x1344: 50x84 tokens).
detectron2's ViTDet does a third thing (pads ``x`` before qkv, so padded keys
carry the qkv bias); it is not offered here.
"""
from functools import partial
from typing import Callable, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from timm.layers import DropPath, Mlp, PatchEmbed, resample_abs_pos_embed, trunc_normal_
from torch import nn

__all__ = ["Attention", "Block", "VisionTransformer", "window_partition", "window_unpartition"]

WINDOW_PADDING_MODES = ("official", "masked")


def window_partition(x: torch.Tensor, window_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Zero-pad a (B, H, W, C) map to a multiple of `window_size` and cut it into windows.

    Returns:
        windows: (B * num_windows, window_size * window_size, C), batch-major,
            windows in row-major order.
        (Hp, Wp): padded height and width.
    """
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, C)
    return windows, (Hp, Wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws * ws, C) -> (B, H, W, C), padding removed."""
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // ((Hp // window_size) * (Wp // window_size))
    x = windows.view(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    return x[:, :H, :W, :]


class Attention(nn.Module):
    """Multi-head self-attention, global or in non-overlapping windows."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        window_size: int = 0,
        window_padding: str = "official",
    ):
        """
        Args:
            dim (int): token channels.
            num_heads (int): attention heads; must divide `dim`.
            qkv_bias (bool): learnable bias on q, k, v.
            attn_drop (float): dropout on the attention weights.
            proj_drop (float): dropout after the output projection.
            window_size (int): 0 for global attention, else the window side
                (tokens); grids that are not a multiple are padded.
            window_padding (str): "official" or "masked", see the module docstring.
        """
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if window_padding not in WINDOW_PADDING_MODES:
            raise ValueError(
                f"window_padding must be one of {WINDOW_PADDING_MODES}, got {window_padding!r}"
            )
        self.num_heads = num_heads
        self.window_size = window_size
        self.window_padding = window_padding
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _key_mask(self, hw, pad_hw, batch: int, device) -> torch.Tensor:
        """(B * nW, 1, 1, ws * ws) bool, True on real (unpadded) keys."""
        valid = torch.zeros(1, pad_hw[0], pad_hw[1], 1, dtype=torch.bool, device=device)
        valid[:, : hw[0], : hw[1]] = True
        valid, _ = window_partition(valid, self.window_size)  # (nW, ws*ws, 1)
        return valid.squeeze(-1).repeat(batch, 1)[:, None, None, :]

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """
        Args:
            x: (B, H * W, C) tokens, row-major over the (H, W) grid.
        Returns:
            (B, H * W, C)
        """
        B, N, C = x.shape
        qkv = self.qkv(x)  # official: project before any padding
        mask = None
        if self.window_size > 0:
            qkv, pad_hw = window_partition(qkv.view(B, H, W, 3 * C), self.window_size)
            if self.window_padding == "masked" and pad_hw != (H, W):
                mask = self._key_mask((H, W), pad_hw, B, x.device)
        b, L, _ = qkv.shape
        q, k, v = qkv.view(b, L, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        x = x.transpose(1, 2).reshape(b, L, C)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W)).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-norm transformer block: x + gamma1 * attn(norm1(x)); x + gamma2 * mlp(norm2(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        act_layer: Callable[[], nn.Module] = nn.GELU,
        window_size: int = 0,
        window_padding: str = "official",
        layer_scale: bool = True,
        with_cp: bool = False,
    ):
        """
        Args:
            dim (int): token channels.
            num_heads (int): attention heads.
            mlp_ratio (float): MLP hidden width / dim.
            qkv_bias (bool): bias on qkv.
            drop (float): dropout after the attention projection and in the MLP.
            attn_drop (float): dropout on attention weights.
            drop_path (float): stochastic depth rate of this block.
            norm_layer (callable): norm constructor, called with `dim`.
            act_layer (callable): MLP activation constructor.
            window_size (int): 0 = global attention, else window side in tokens.
            window_padding (str): "official" or "masked" (see module docstring).
            layer_scale (bool): learnable per-channel `gamma1`/`gamma2` (init 1.0,
                as the official detection ViT) on both residual branches.
            with_cp (bool): activation checkpointing of the whole block while
                gradients are needed.
        """
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            window_size=window_size,
            window_padding=window_padding,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        # Not timm's LayerScale: its parameter is `ls1.gamma`, the official
        # checkpoints use `gamma1` / `gamma2` on the block.
        self.layer_scale = layer_scale
        if layer_scale:
            self.gamma1 = nn.Parameter(torch.ones(dim))
            self.gamma2 = nn.Parameter(torch.ones(dim))

    def _forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        y = self.attn(self.norm1(x), H, W)
        x = x + self.drop_path(self.gamma1 * y if self.layer_scale else y)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(self.gamma2 * y if self.layer_scale else y)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """x: (B, H * W, C) -> (B, H * W, C)."""
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, H, W, use_reentrant=False)
        return self._forward(x, H, W)


class VisionTransformer(nn.Module):
    """Plain ViT trunk (no cls token, no head, no final norm).

    ``forward`` returns the last block's tokens as a (B, D, H/16, W/16) map;
    subclasses (the detectron2 backbones) run the blocks themselves with
    :meth:`embed` and ``self.blocks``.
    """

    def __init__(
        self,
        pretrain_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_scale: bool = True,
        window_size: int = 14,
        window_block_indexes: Sequence[int] = (),
        window_padding: str = "official",
        norm_layer: Callable[[int], nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        act_layer: Callable[[], nn.Module] = nn.GELU,
        with_cp: bool = False,
    ):
        """
        Args:
            pretrain_size (int): image side of the pre-training resolution; the
                stored `pos_embed` covers its (pretrain_size/patch_size)^2 grid
                plus the cls slot.
            patch_size (int): patch side (16 everywhere in ViT-Adapter).
            in_chans (int): input channels.
            embed_dim (int): token width D.
            depth (int): number of blocks.
            num_heads (int): attention heads per block.
            mlp_ratio (float): MLP hidden width / D.
            qkv_bias (bool): bias on qkv.
            drop_rate (float): dropout after the pos-embed, attention projection and MLP.
            attn_drop_rate (float): dropout on attention weights.
            drop_path_rate (float): stochastic depth, linearly increasing from 0
                (first block) to this value (last block).
            layer_scale (bool): `gamma1`/`gamma2` per block (official default on).
            window_size (int): window side for the windowed blocks.
            window_block_indexes (list[int]): blocks using window attention; the
                others use global attention.
            window_padding (str): "official" (default) or "masked"; see the module docstring.
            norm_layer (callable): norm constructor.
            act_layer (callable): MLP activation constructor.
            with_cp (bool): activation checkpointing of every block.
        """
        super().__init__()
        bad = [i for i in window_block_indexes if not 0 <= i < depth]
        if bad:
            raise ValueError(f"window_block_indexes {bad} out of range for depth={depth}")
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.pretrain_size = pretrain_size
        self.drop_path_rate = drop_path_rate
        self.norm_layer = norm_layer

        self.patch_embed = PatchEmbed(
            img_size=pretrain_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            output_fmt="NHWC",
            strict_img_size=False,
        )
        self.pretrain_grid = tuple(self.patch_embed.grid_size)
        num_patches = self.pretrain_grid[0] * self.pretrain_grid[1]
        # cls slot kept (unused) so DeiT / official checkpoints load unchanged.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)

        # explicit CPU: also builds under `with torch.device("meta")`
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(
            *[
                Block(
                    dim=embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[i],
                    norm_layer=norm_layer,
                    act_layer=act_layer,
                    window_size=window_size if i in window_block_indexes else 0,
                    window_padding=window_padding,
                    layer_scale=layer_scale,
                    with_cp=with_cp,
                )
                for i in range(depth)
            ]
        )
        self.blocks.apply(self._init_vit_weights)

    @staticmethod
    def _init_vit_weights(m: nn.Module):
        # timm / ViTDet init (the official detection ViT keeps PyTorch defaults;
        # pre-trained weights overwrite both).
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def get_pos_embed(self, H: int, W: int) -> torch.Tensor:
        """Pre-training pos-embed (cls slot dropped) resized bicubically to (H, W): (1, H*W, D)."""
        return resample_abs_pos_embed(
            self.pos_embed[:, 1:],
            new_size=[H, W],
            old_size=list(self.pretrain_grid),
            num_prefix_tokens=0,
            interpolation="bicubic",
            antialias=False,  # official: plain F.interpolate(bicubic, align_corners=False)
        )

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """Image (B, 3, H, W) -> tokens (B, H/16 * W/16, D) with pos-embed, and the grid (h, w)."""
        # (B, h, w, D); contiguous: timm returns a permuted view of the conv output,
        # whose transposed (B, h*w, D) layout every later op would inherit.
        x = self.patch_embed(x).contiguous()
        B, H, W, D = x.shape
        x = x.reshape(B, H * W, D)
        return self.pos_drop(x + self.get_pos_embed(H, W)), H, W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W), H and W multiples of the patch size -> (B, D, H/16, W/16)."""
        x, H, W = self.embed(x)
        for blk in self.blocks:
            x = blk(x, H, W)
        return x.transpose(1, 2).reshape(x.shape[0], -1, H, W)
