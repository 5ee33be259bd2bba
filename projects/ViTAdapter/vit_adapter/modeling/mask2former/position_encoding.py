"""Sine position encoding of a 2-D map (DETR's, as mmdet's
``SinePositionalEncoding`` with ``normalize=True``)."""
import math

import torch
from torch import nn

__all__ = ["SinePositionalEncoding"]


class SinePositionalEncoding(nn.Module):
    """Fixed sine / cosine encoding of the (y, x) position of every pixel.

    Channel layout (``2 * num_feats`` channels): first the y encoding, then the
    x encoding; within each, sin and cos interleaved over frequencies
    ``temperature ** (2 * (i // 2) / num_feats)``. Positions are 1..H and 1..W
    (no padding mask: every pixel is valid), normalised to ``(0, scale]``
    when ``normalize``. No parameters.
    """

    def __init__(self, num_feats: int, temperature: float = 10000.0, normalize: bool = True,
                 scale: float = 2 * math.pi, eps: float = 1e-6):
        super().__init__()
        if num_feats <= 0 or num_feats % 2:
            raise ValueError(f"SinePositionalEncoding: num_feats must be a positive even int, got {num_feats!r}")
        self.num_feats = num_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (N, C, H, W); only its shape, dtype and device are read.

        Returns:
            (N, 2 * num_feats, H, W) encoding.
        """
        n, _, h, w = x.shape
        y_embed = torch.arange(1, h + 1, device=x.device, dtype=torch.float32)[:, None].expand(h, w)
        x_embed = torch.arange(1, w + 1, device=x.device, dtype=torch.float32)[None, :].expand(h, w)
        if self.normalize:
            y_embed = y_embed / (h + self.eps) * self.scale
            x_embed = x_embed / (w + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, device=x.device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_feats)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=-1).flatten(-2)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=-1).flatten(-2)
        pos = torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1)
        return pos[None].expand(n, -1, -1, -1).to(x.dtype)
