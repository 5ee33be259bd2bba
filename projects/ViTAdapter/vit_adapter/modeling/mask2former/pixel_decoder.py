"""Mask2Former's pixel decoder: a deformable-attention encoder over the three
coarsest backbone levels, then an FPN-like step down to the 1/4 mask feature.

Parameter names (against the release's mmseg_custom ``MSDeformAttnPixelDecoder``,
mmcv ``BaseTransformerLayer`` / ``ConvModule``; the converter's key table in
:mod:`vit_adapter.checkpoint.official` spells them out):
``input_convs.K`` (1x1 conv + GroupNorm), ``encoder.layers.J.{self_attn, norm1,
ffn.fc1, ffn.fc2, norm2}``, ``level_embed``, ``lateral_convs.0`` (1x1 conv +
GN), ``output_convs.0`` (3x3 conv + GN + ReLU), ``mask_feature`` (1x1 conv).
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from detectron2.layers import Conv2d
from fvcore.nn.weight_init import c2_xavier_fill
from timm.layers import Mlp
from torch import nn

from vit_adapter.layers.ms_deform_attn import MSDeformAttn

from .position_encoding import SinePositionalEncoding

__all__ = ["DeformableEncoderLayer", "MSDeformAttnPixelDecoder", "encoder_reference_points", "level_table"]


def encoder_reference_points(spatial_shapes: Sequence[Tuple[int, int]], device=None) -> torch.Tensor:
    """Pixel centres of every level, normalised to (0, 1): ((x + 0.5) / W,
    (y + 0.5) / H), levels concatenated in the given order.

    Returns:
        (sum H_l * W_l, 2) tensor of (x, y).
    """
    points = []
    for h, w in spatial_shapes:
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
    return torch.cat(points, 0)


def level_table(shapes: Sequence[Tuple[int, int]], device=None) -> torch.Tensor:
    """(L, 2) long tensor of the level sizes. While tracing (ONNX export) it is
    stacked from the traced sizes, so the graph follows the input's size."""
    if torch.jit.is_tracing():
        return torch.stack([torch.stack([torch.as_tensor(h), torch.as_tensor(w)]) for h, w in shapes]).to(
            device=device, dtype=torch.long)
    return torch.as_tensor(shapes, dtype=torch.long, device=device)


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then
    an FFN, each with a residual and a LayerNorm (mmcv ``BaseTransformerLayer``
    with ``operation_order=('self_attn', 'norm', 'ffn', 'norm')``)."""

    def __init__(self, embed_dim: int, num_heads: int, num_levels: int, num_points: int,
                 ffn_dim: int, checkpoint_ffn: bool = False):
        super().__init__()
        self.self_attn = MSDeformAttn(embed_dim, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.ffn = Mlp(embed_dim, ffn_dim, act_layer=nn.ReLU)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.checkpoint_ffn = checkpoint_ffn

    def forward(self, x: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (N, S, C) tokens of all levels; pos: (N, S, C) position + level
                encoding (added to the query, not to the values);
            reference_points: (N or 1, S, L, 2); spatial_shapes: (L, 2) long;
            level_start_index: (L,) long.

        Returns:
            (N, S, C).
        """
        x = self.norm1(x + self.self_attn(x + pos, reference_points, x, spatial_shapes, level_start_index))
        if self.checkpoint_ffn and x.requires_grad:
            ffn_out = cp.checkpoint(self.ffn, x, use_reentrant=False)
        else:
            ffn_out = self.ffn(x)
        return self.norm2(x + ffn_out)


class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder over (1/4, 1/8, 1/16, 1/32) backbone maps.

    The three coarsest levels are projected (1x1 conv + GN) to ``conv_dim``,
    encoded jointly by ``num_layers`` :class:`DeformableEncoderLayer` (sine
    position + learned level encodings), split back per level; the 1/4 map
    gets a 1x1 lateral conv plus the upsampled 1/8 output, a 3x3 conv, and a
    1x1 ``mask_feature`` projection to ``mask_dim``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        conv_dim: int = 256,
        mask_dim: int = 256,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        ffn_dim: int = 1024,
        num_groups: int = 32,
        checkpoint_ffn: bool = False,
        checkpoint_layers: bool = False,
    ):
        """
        Args:
            in_channels: channels of the (1/4, 1/8, 1/16, 1/32) inputs.
            conv_dim: width of the encoder and of the multi-scale outputs.
            mask_dim: channels of the 1/4 mask feature.
            num_layers, num_heads, num_points, ffn_dim: the encoder's.
            num_groups: GroupNorm groups of the convs.
            checkpoint_ffn: activation-checkpoint each encoder FFN (the
                release's ``with_cp``).
            checkpoint_layers: activation-checkpoint whole encoder layers (less
                memory than `checkpoint_ffn`, one more forward of the layer).
        """
        super().__init__()
        in_channels = list(in_channels)
        if len(in_channels) != 4:
            raise ValueError(
                f"MSDeformAttnPixelDecoder: expects 4 input levels (1/4..1/32), got in_channels={in_channels}")
        self.num_encoder_levels = 3
        self.checkpoint_layers = checkpoint_layers
        # from low to high resolution: 1/32, 1/16, 1/8
        self.input_convs = nn.ModuleList(
            Conv2d(c, conv_dim, kernel_size=1, bias=True, norm=nn.GroupNorm(num_groups, conv_dim))
            for c in in_channels[:0:-1]
        )
        self.position_encoding = SinePositionalEncoding(conv_dim // 2, normalize=True)
        self.level_embed = nn.Embedding(self.num_encoder_levels, conv_dim)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            DeformableEncoderLayer(conv_dim, num_heads, self.num_encoder_levels, num_points, ffn_dim,
                                   checkpoint_ffn)
            for _ in range(num_layers)
        )
        self.lateral_convs = nn.ModuleList(
            [Conv2d(in_channels[0], conv_dim, kernel_size=1, bias=False, norm=nn.GroupNorm(num_groups, conv_dim))]
        )
        self.output_convs = nn.ModuleList(
            [Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1, bias=False,
                    norm=nn.GroupNorm(num_groups, conv_dim), activation=F.relu)]
        )
        self.mask_feature = Conv2d(conv_dim, mask_dim, kernel_size=1)
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim
        self._reset_parameters()

    def _reset_parameters(self):
        """The release's initialisation: xavier-uniform input convs,
        caffe2-xavier lateral / output / mask convs, N(0, 1) level embedding,
        xavier-normal encoder matrices, then MSDeformAttn's own init."""
        for conv in self.input_convs:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        for conv in (*self.lateral_convs, *self.output_convs, self.mask_feature):
            c2_xavier_fill(conv)
        nn.init.normal_(self.level_embed.weight)
        for p in self.encoder.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for layer in self.encoder.layers:
            layer.self_attn._reset_parameters()

    def forward(self, features: List[torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """
        Args:
            features: [(N, C_0, H/4, W/4), (N, C_1, H/8, W/8), (N, C_2, H/16, W/16),
                (N, C_3, H/32, W/32)].

        Returns:
            (mask_features, multi_scale_features): (N, mask_dim, H/4, W/4), and
            [(N, conv_dim, H/32, W/32), (.., H/16, W/16), (.., H/8, W/8)]
            (low to high resolution, the transformer decoder's order).
        """
        if len(features) != 4:
            raise ValueError(f"MSDeformAttnPixelDecoder: expects 4 feature maps, got {len(features)}")
        tokens, pos_embeds, shapes = [], [], []
        for i, conv in enumerate(self.input_convs):
            feat = features[3 - i]
            x = conv(feat)
            pos = self.position_encoding(x) + self.level_embed.weight[i].view(1, -1, 1, 1)
            shapes.append(tuple(x.shape[-2:]))
            tokens.append(x.flatten(2).transpose(1, 2))
            pos_embeds.append(pos.flatten(2).transpose(1, 2))
        x = torch.cat(tokens, 1)
        pos = torch.cat(pos_embeds, 1)
        spatial_shapes = level_table(shapes, x.device)
        level_start_index = torch.cat(
            (spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]))
        reference_points = encoder_reference_points(shapes, x.device)[None, :, None, :].expand(
            1, -1, self.num_encoder_levels, 2)
        for layer in self.encoder.layers:
            if self.checkpoint_layers and x.requires_grad:
                x = cp.checkpoint(layer, x, pos, reference_points, spatial_shapes, level_start_index,
                                  use_reentrant=False)
            else:
                x = layer(x, pos, reference_points, spatial_shapes, level_start_index)

        n = x.shape[0]
        outs = [
            t.transpose(1, 2).reshape(n, -1, h, w)
            for t, (h, w) in zip(torch.split(x, [h * w for h, w in shapes], dim=1), shapes)
        ]
        lateral = self.lateral_convs[0](features[0])
        y = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        y = self.output_convs[0](y)
        return self.mask_feature(y), outs
