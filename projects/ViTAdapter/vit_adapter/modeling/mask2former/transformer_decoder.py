"""Mask2Former's masked-attention transformer decoder.

Learnable queries (``query_feat`` content, ``query_embed`` position) pass
``num_layers`` :class:`MaskedAttentionDecoderLayer`, layer ``i`` attending to
the pixel decoder's level ``i % 3`` (1/32, 1/16, 1/8, 1/32, ...). Before the
first layer and after every layer the queries are decoded into class logits
and mask logits (deep supervision); each mask prediction, resized to the next
layer's level and thresholded at sigmoid 0.5, restricts that layer's
cross-attention to the predicted foreground (masked attention). A query whose
predicted mask is empty at that level attends everywhere.

Parameter names (against the release's mmdet ``DetrTransformerDecoder`` +
``Mask2FormerHead``; the converter's key table spells them out):
``layers.I.{cross_attn, norm1, self_attn, norm2, ffn.fc1, ffn.fc2, norm3}``,
``decoder_norm``, ``query_feat``, ``query_embed``, ``level_embed``,
``class_embed``, ``mask_embed.{0,2,4}``.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from fvcore.nn.weight_init import c2_xavier_fill
from timm.layers import Mlp
from torch import nn

from .position_encoding import SinePositionalEncoding

__all__ = ["MaskedAttentionDecoder", "MaskedAttentionDecoderLayer", "attention_mask_from_masks"]


def attention_mask_from_masks(mask_logits: torch.Tensor, size, num_heads: int) -> torch.Tensor:
    """Cross-attention mask of the next decoder layer from mask logits.

    Args:
        mask_logits: (N, Q, h, w) mask logits.
        size: (H_l, W_l) of the level the next layer attends to.
        num_heads: attention heads (the mask is repeated per head).

    Returns:
        (N * num_heads, Q, H_l * W_l) bool, True = the query may NOT attend
        there (``sigmoid < 0.5``); a query whose mask is empty everywhere gets
        an all-False row (attends everywhere). No gradient.
    """
    m = F.interpolate(mask_logits.detach(), size=tuple(size), mode="bilinear", align_corners=False)
    blocked = m.flatten(2).sigmoid() < 0.5
    blocked = blocked & ~blocked.all(-1, keepdim=True)
    return blocked.repeat_interleave(num_heads, dim=0)


class MaskedAttentionDecoderLayer(nn.Module):
    """Post-norm decoder layer: masked cross-attention to one pixel-decoder
    level, self-attention among the queries, FFN; each with a residual and a
    LayerNorm (mmcv ``DetrTransformerDecoderLayer`` with
    ``operation_order=('cross_attn', 'norm', 'self_attn', 'norm', 'ffn', 'norm')``)."""

    def __init__(self, embed_dim: int, num_heads: int, ffn_dim: int, checkpoint_ffn: bool = False):
        super().__init__()
        self.cross_attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.self_attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.ffn = Mlp(embed_dim, ffn_dim, act_layer=nn.ReLU)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.num_heads = num_heads
        self.checkpoint_ffn = checkpoint_ffn

    def forward(self, query: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor,
                memory_pos: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """
        Args:
            query, query_pos: (N, Q, C) content and position of the queries.
            memory, memory_pos: (N, S, C) one level's tokens (level embedding
                included) and their sine position encoding.
            attn_mask: (N * num_heads, Q, S) bool, True = blocked.

        Returns:
            (N, Q, C) queries.
        """
        attended = self.cross_attn(query + query_pos, memory + memory_pos, memory,
                                   attn_mask=attn_mask, need_weights=False)[0]
        query = self.norm1(query + attended)
        q = query + query_pos
        query = self.norm2(query + self.self_attn(q, q, query, need_weights=False)[0])
        if self.checkpoint_ffn and query.requires_grad:
            ffn_out = cp.checkpoint(self.ffn, query, use_reentrant=False)
        else:
            ffn_out = self.ffn(query)
        return self.norm3(query + ffn_out)


class MaskedAttentionDecoder(nn.Module):
    """Queries -> per-layer (class, mask) predictions over the pixel decoder's
    outputs."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_dim: int = 256,
        mask_dim: int = 256,
        num_queries: int = 100,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        num_layers: int = 9,
        num_feature_levels: int = 3,
        checkpoint_ffn: bool = False,
    ):
        """
        Args:
            in_channels: channels of the pixel decoder's multi-scale outputs
                (projected by a 1x1 conv only if different from `hidden_dim`).
            num_classes: classes, without the no-object class.
            hidden_dim: query width; mask_dim: channels of the mask feature.
            num_queries, num_heads, ffn_dim, num_layers: the decoder's.
            num_feature_levels: pixel-decoder levels cycled over.
            checkpoint_ffn: activation-checkpoint each FFN (the release's ``with_cp``).
        """
        super().__init__()
        if num_classes <= 0 or num_queries <= 0 or num_layers <= 0:
            raise ValueError(
                f"MaskedAttentionDecoder: num_classes, num_queries, num_layers must be positive, got "
                f"{num_classes}, {num_queries}, {num_layers}")
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.num_feature_levels = num_feature_levels
        self.input_projs = nn.ModuleList(
            nn.Identity() if in_channels == hidden_dim else nn.Conv2d(in_channels, hidden_dim, 1)
            for _ in range(num_feature_levels)
        )
        self.position_encoding = SinePositionalEncoding(hidden_dim // 2, normalize=True)
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.layers = nn.ModuleList(
            MaskedAttentionDecoderLayer(hidden_dim, num_heads, ffn_dim, checkpoint_ffn)
            for _ in range(num_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, mask_dim),
        )
        self._reset_parameters()

    def _reset_parameters(self):
        """The release's initialisation: xavier-normal matrices in the decoder
        layers (and caffe2-xavier input projections when present)."""
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for proj in self.input_projs:
            if isinstance(proj, nn.Conv2d):
                c2_xavier_fill(proj)

    def _predict(self, query: torch.Tensor, mask_features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, Q, C) queries -> {"pred_logits": (N, Q, K + 1), "pred_masks": (N, Q, h, w)}."""
        query = self.decoder_norm(query)
        mask_embed = self.mask_embed(query)
        return {
            "pred_logits": self.class_embed(query),
            "pred_masks": torch.einsum("nqc,nchw->nqhw", mask_embed, mask_features),
        }

    def forward(self, multi_scale_features: List[torch.Tensor],
                mask_features: torch.Tensor) -> List[Dict[str, torch.Tensor]]:
        """
        Args:
            multi_scale_features: ``num_feature_levels`` maps (N, in_channels,
                H_l, W_l), low to high resolution.
            mask_features: (N, mask_dim, h, w) (1/4 of the input).

        Returns:
            ``num_layers + 1`` dicts, one before the first layer and one after
            each layer (the last is the final prediction), each with
            "pred_logits" (N, Q, num_classes + 1; no-object last) and
            "pred_masks" (N, Q, h, w) logits.
        """
        if len(multi_scale_features) != self.num_feature_levels:
            raise ValueError(
                f"MaskedAttentionDecoder: expects {self.num_feature_levels} feature levels, "
                f"got {len(multi_scale_features)}")
        n = mask_features.shape[0]
        memories, memory_pos, sizes = [], [], []
        for i, (proj, feat) in enumerate(zip(self.input_projs, multi_scale_features)):
            x = proj(feat)
            sizes.append(tuple(x.shape[-2:]))
            memory_pos.append(self.position_encoding(x).flatten(2).transpose(1, 2))
            memories.append(x.flatten(2).transpose(1, 2) + self.level_embed.weight[i][None, None])
        query = self.query_feat.weight[None].expand(n, -1, -1)
        query_pos = self.query_embed.weight[None].expand(n, -1, -1)

        predictions = [self._predict(query, mask_features)]
        for i, layer in enumerate(self.layers):
            level = i % self.num_feature_levels
            attn_mask = attention_mask_from_masks(predictions[-1]["pred_masks"], sizes[level], self.num_heads)
            query = layer(query, query_pos, memories[level], memory_pos[level], attn_mask)
            predictions.append(self._predict(query, mask_features))
        return predictions
