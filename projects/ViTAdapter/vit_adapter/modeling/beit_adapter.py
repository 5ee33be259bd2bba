"""BEiT-Adapter: the ViT-Adapter around a BEiT trunk, as the release ships it.

One detectron2 :class:`Backbone` for both released variants:

* detection (``detection/mmdet_custom/models/backbones/beit_adapter.py``):
  windowed BEiT blocks with per-window relative position tables (window 14,
  every 6th block 56 in the HTC++ BEiT-L configs), no cls token; the final
  ViT map is added to all four outputs;
* segmentation (``segmentation/mmseg_custom/models/backbones/beit_adapter.py``),
  ``with_cls_token=True``: a cls token runs through each interaction's BEiT
  blocks (:class:`InteractionBlockWithCls`), never through the injector or the
  extractors; global attention with tables over the img_size grid (plus the
  3 cls rows); output i gets the ViT map after interaction i. Inputs of another
  size resize the tables to their grid (:mod:`vit_adapter.modeling.beit`);
  at img_size the result is the release's.

The adapter parts are ViT-Adapter's (:mod:`vit_adapter.modeling.adapter_modules`);
state-dict names are the release's (``spm.*``, ``level_embed``,
``interactions.K.{injector,extractor,extra_extractors.J}.*``, ``up``,
``norm1..4``, ``patch_embed.proj``, ``cls_token``, ``blocks.N.*``), so a
release BEiT-Adapter backbone loads by name (its ``relative_position_index``
buffers are derived here and not stored).
"""
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling import Backbone
from torch import nn

from vit_adapter.layers.ms_deform_attn import MSDeformAttn
from vit_adapter.modeling.adapter_modules import (
    DeformInputs,
    InteractionBlock,
    SpatialPriorModule,
    build_norm,
    init_adapter_weights,
    deform_inputs,
    level_shapes,
)
from vit_adapter.modeling.beit import BEiT

__all__ = ["BEIT_ADAPTER_L_WINDOW_SIZES", "InteractionBlockWithCls", "BEiTAdapter"]

# Release HTC++ BEiT(v2)-L: every block windowed, window 14, every 6th block 56.
BEIT_ADAPTER_L_WINDOW_SIZES = [56 if i % 6 == 5 else 14 for i in range(24)]
_OUT_NAMES = ("res2", "res3", "res4", "res5")


class InteractionBlockWithCls(InteractionBlock):
    """:class:`InteractionBlock` whose ViT blocks also carry a cls token.

    Injector on the grid tokens -> [cls, grid] through the BEiT blocks -> split
    -> extractor(s) query the grid tokens. Same parameters and names as
    :class:`InteractionBlock` (the release's ``InteractionBlockWithCls``).
    """

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        cls: torch.Tensor,
        blocks: Sequence[nn.Module],
        injector_inputs: DeformInputs,
        extractor_inputs: DeformInputs,
        H: int,
        W: int,
    ):
        """
        Args:
            x: (B, H*W, D) grid tokens; c: (B, 4HW + HW + HW/4, D) adapter tokens;
            cls: (B, 1, D) cls token.
            blocks: the BEiT blocks of this interaction, called as blk(x, H, W).
            injector_inputs, extractor_inputs: from :func:`deform_inputs`.
        Returns:
            (x, c, cls), same shapes.
        """
        x = self.injector(x, c, injector_inputs)
        x = torch.cat([cls, x], dim=1)
        for blk in blocks:
            x = blk(x, H, W)
        cls, x = x[:, :1], x[:, 1:]
        query_shapes = level_shapes(H, W)
        c = self.extractor(c, x, extractor_inputs, query_shapes)
        if self.extra_extractors is not None:
            for extractor in self.extra_extractors:
                c = extractor(c, x, extractor_inputs, query_shapes)
        return x, c, cls


def _tokens_to_map(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, C) row-major tokens -> (B, C, h, w)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class BEiTAdapter(BEiT, Backbone):
    """BEiT-Adapter (Chen et al., ICLR 2023), detection or segmentation variant.

    The BEiT trunk's parameters live at the top level (``patch_embed``,
    ``blocks``, ``cls_token``) as in the release, so BEiT / BEiTv2 ImageNet
    checkpoints and release checkpoints load by name.
    """

    def __init__(
        self,
        pretrain_size: int = 224,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float = 0.0,
        use_abs_pos_emb: bool = False,
        use_rel_pos_bias: bool = True,
        use_shared_rel_pos_bias: bool = False,
        window_attn=True,
        window_size=tuple(BEIT_ADAPTER_L_WINDOW_SIZES),
        with_cls_token: bool = False,
        conv_inplane: int = 64,
        n_points: int = 4,
        deform_num_heads: int = 16,
        cffn_ratio: float = 0.25,
        deform_ratio: float = 0.5,
        with_cffn: bool = True,
        interaction_indexes: Sequence[Sequence[int]] = ((0, 5), (6, 11), (12, 17), (18, 23)),
        add_vit_feature: bool = True,
        use_extra_extractor: bool = True,
        drop_path_rate: float = 0.4,
        norm="SyncBN",
        with_cp: bool = False,
        out_features: Sequence[str] = _OUT_NAMES,
        **beit_kwargs,
    ):
        """
        Args:
            pretrain_size (int): pre-training image side (kept for the release's
                argument list; the tables' and pos_embed's grid is `img_size`'s).
            img_size (int): training image side; with the cls token the relative
                position tables cover its grid (release: 640 for ADE20K UperNet).
            patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias: BEiT shape.
            init_values (float): layer-scale init of the BEiT blocks *and* the
                injectors' gamma (the release passes one value to both).
            use_abs_pos_emb, use_rel_pos_bias, use_shared_rel_pos_bias: position
                encodings, see :class:`vit_adapter.modeling.beit.BEiT`.
            window_attn (bool or list[bool]), window_size (int or list[int]):
                per-block windowed attention (detection; defaults: the release's
                HTC++ BEiT-L layout, 14 / every 6th block 56).
            with_cls_token (bool): the segmentation variant (window_attn must be False).
            conv_inplane, n_points, deform_num_heads, cffn_ratio, deform_ratio,
                with_cffn, interaction_indexes, add_vit_feature,
                use_extra_extractor: adapter settings as
                :class:`vit_adapter.modeling.backbone.ViTAdapter`.
            drop_path_rate (float): BEiT stochastic depth (linear to this value)
                and the extractors' ConvFFN drop path.
            norm: spatial-prior and output norms ("SyncBN" as the release; BN
                when not distributed), see ``adapter_modules.build_norm``.
            with_cp (bool): activation checkpointing of the BEiT blocks, injectors
                and extractors (as the release).
            out_features (list[str]): subset of "res2".."res5".
            beit_kwargs: other :class:`vit_adapter.modeling.beit.BEiT` arguments
                (qk_scale, drop_rate, attn_drop_rate, norm_layer, in_chans).
        """
        if with_cls_token and window_attn is True:
            window_attn = False
        super().__init__(
            img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
            mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path_rate=drop_path_rate, init_values=init_values,
            use_abs_pos_emb=use_abs_pos_emb, use_rel_pos_bias=use_rel_pos_bias,
            use_shared_rel_pos_bias=use_shared_rel_pos_bias, with_cls_token=with_cls_token,
            window_attn=window_attn, window_size=window_size, with_cp=with_cp, **beit_kwargs,
        )
        if patch_size != 16:
            raise ValueError(f"BEiTAdapter's adapter levels assume patch_size 16, got {patch_size}")
        for rng in interaction_indexes:
            if len(rng) != 2 or not 0 <= rng[0] <= rng[1] < depth:
                raise ValueError(
                    f"interaction_indexes entries must be [first, last] with 0 <= first <= last < "
                    f"depth={depth}, got {[list(r) for r in interaction_indexes]}"
                )
        if with_cls_token and add_vit_feature and len(interaction_indexes) != 4:
            raise ValueError(
                "the segmentation variant adds the ViT map after interaction i to output i: it needs 4 "
                f"interactions, got {len(interaction_indexes)} (or set add_vit_feature=False)"
            )
        unknown = [f for f in out_features if f not in _OUT_NAMES]
        if unknown or not out_features:
            raise ValueError(f"out_features must be a non-empty subset of {_OUT_NAMES}, got {list(out_features)}")
        self.pretrain_size = pretrain_size
        self.in_chans = self.patch_embed.proj.in_channels
        self.interaction_indexes = [list(r) for r in interaction_indexes]
        self.add_vit_feature = add_vit_feature
        self.with_cp = with_cp

        self.level_embed = nn.Parameter(torch.zeros(3, embed_dim))
        self.spm = SpatialPriorModule(inplanes=conv_inplane, embed_dim=embed_dim, in_chans=self.in_chans, norm=norm)
        interaction = InteractionBlockWithCls if with_cls_token else InteractionBlock
        n = len(self.interaction_indexes)
        self.interactions = nn.Sequential(
            *[
                interaction(
                    dim=embed_dim, num_heads=deform_num_heads, n_points=n_points, init_values=init_values,
                    drop_path=drop_path_rate, norm_layer=self.norm_layer, with_cffn=with_cffn,
                    cffn_ratio=cffn_ratio, deform_ratio=deform_ratio,
                    extra_extractor=use_extra_extractor and i == n - 1, with_cp=with_cp,
                )
                for i in range(n)
            ]
        )
        self.up = nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2)
        self.norm1 = build_norm(norm, embed_dim)
        self.norm2 = build_norm(norm, embed_dim)
        self.norm3 = build_norm(norm, embed_dim)
        self.norm4 = build_norm(norm, embed_dim)

        # the release's order: adapter Linear / conv init, MSDeformAttn's own, then level_embed
        for module in (self.up, self.spm, self.interactions):
            module.apply(init_adapter_weights)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

        self._out_features = list(out_features)
        self._out_feature_channels = {f: embed_dim for f in _OUT_NAMES}
        self._out_feature_strides = {f: 2 ** (i + 2) for i, f in enumerate(_OUT_NAMES)}

    @property
    def size_divisibility(self) -> int:
        return 32

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"size_divisibility": 32, "square_size": 0}

    def _check_image(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"BEiTAdapter expects a (B, {self.in_chans}, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h < 32 or w < 32 or h % 32 or w % 32:
            raise ValueError(
                f"BEiTAdapter needs H and W to be multiples of 32 and at least 32 px, got {h}x{w}. "
                "Pad the image (detectron2 pads to backbone.size_divisibility = 32)."
            )

    def _blocks(self, first: int, last: int, shared_bias: Optional[torch.Tensor]) -> List:
        blocks = list(self.blocks[first : last + 1])
        if shared_bias is None:
            return blocks
        return [partial(blk, rel_pos_bias=shared_bias) for blk in blocks]

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (B, 3, H, W) image, H and W multiples of 32 (any aspect ratio).
        Returns:
            dict with "res2".."res5" (those in out_features): (B, D, H/s, W/s) for s = 4, 8, 16, 32.
        """
        self._check_image(x)
        injector_inputs, extractor_inputs = deform_inputs(x.shape[2], x.shape[3], x.device)
        c1, c2, c3, c4 = self.spm(x)
        len2, len3 = c2.shape[1], c3.shape[1]
        c = torch.cat([c2 + self.level_embed[0], c3 + self.level_embed[1], c4 + self.level_embed[2]], dim=1)

        x, H, W = self.embed(x)
        shared = self.shared_bias(H, W)
        cls = self.cls_tokens(x.shape[0]) if self.with_cls_token else None
        vit_maps = []
        for layer, (first, last) in zip(self.interactions, self.interaction_indexes):
            blocks = self._blocks(first, last, shared)
            if cls is None:
                x, c = layer(x, c, blocks, injector_inputs, extractor_inputs, H, W)
            else:
                x, c, cls = layer(x, c, cls, blocks, injector_inputs, extractor_inputs, H, W)
                vit_maps.append(_tokens_to_map(x, H, W))  # segmentation: per-interaction ViT maps
        maps = self._outputs(x, c, c1, vit_maps, len2, len3, H, W)
        outs = dict(zip(_OUT_NAMES, maps))
        return {k: outs[k] for k in self._out_features}

    def _outputs(self, x, c, c1, vit_maps, len2: int, len3: int, H: int, W: int) -> Tuple[torch.Tensor, ...]:
        """Adapter tokens split into the 1/8, 1/16, 1/32 maps, c1 = up(c2) + c1,
        (add_vit_feature) the ViT maps resized and added, then norm1..norm4."""
        c2 = _tokens_to_map(c[:, :len2], 2 * H, 2 * W)
        c3 = _tokens_to_map(c[:, len2 : len2 + len3], H, W)
        c4 = _tokens_to_map(c[:, len2 + len3 :], H // 2, W // 2)
        c1 = self.up(c2) + c1
        if self.add_vit_feature:
            x1, x2, x3, x4 = vit_maps if vit_maps else [_tokens_to_map(x, H, W)] * 4
            c1 = c1 + F.interpolate(x1, scale_factor=4, mode="bilinear", align_corners=False)
            c2 = c2 + F.interpolate(x2, scale_factor=2, mode="bilinear", align_corners=False)
            c3 = c3 + x3
            c4 = c4 + F.interpolate(x4, scale_factor=0.5, mode="bilinear", align_corners=False)
        return self.norm1(c1), self.norm2(c2), self.norm3(c3), self.norm4(c4)
