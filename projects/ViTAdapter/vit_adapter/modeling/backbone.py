"""ViT-Adapter and plain-ViT backbones for detectron2.

:class:`ViTAdapter` is the detection backbone of the official release
(``detection/mmdet_custom/models/backbones/vit_adapter.py``): a plain ViT
(:mod:`vit_adapter.modeling.vit`), a spatial prior module and 4 interaction blocks
(:mod:`vit_adapter.modeling.adapter_modules`), giving "res2".."res5" maps of D channels
at strides 4, 8, 16, 32 for an FPN. :class:`PlainViTBackbone` is the ViT alone
(the 1/16 map "last_feat", for a SimpleFeaturePyramid baseline).

Official state-dict name -> ours
--------------------------------
Our module names are the official ones. In a detectron2 detector the
backbone is ``model.backbone.bottom_up`` (``model.backbone`` is the FPN), so
an official mmdetection key ``backbone.<name>`` becomes
``backbone.bottom_up.<name>`` with ``<name>`` unchanged:

============================================================  ==========================================
official (mmdet ``state_dict``)                                ours (detectron2 GeneralizedRCNN)
============================================================  ==========================================
backbone.patch_embed.proj.{weight,bias}                        backbone.bottom_up.patch_embed.proj.*
backbone.pos_embed (1 x (N+1) x D, cls slot unused)            backbone.bottom_up.pos_embed (same shape)
backbone.blocks.N.{gamma1,gamma2,norm1,attn.qkv,attn.proj,     backbone.bottom_up.blocks.N.* (same)
norm2,mlp.fc1,mlp.fc2}.*
backbone.level_embed (3 x D)                                   backbone.bottom_up.level_embed
backbone.spm.stem.{0,3,6} (conv) / .{1,4,7} (BN)               backbone.bottom_up.spm.stem.* (same)
backbone.spm.conv{2,3,4}.0 (conv) / .1 (BN), spm.fc{1..4}      backbone.bottom_up.spm.* (same)
backbone.interactions.K.injector.{gamma,query_norm,            backbone.bottom_up.interactions.K.injector.*
feat_norm,attn.{sampling_offsets,attention_weights,
value_proj,output_proj}}
backbone.interactions.K.extractor.{query_norm,feat_norm,       backbone.bottom_up.interactions.K.extractor.*
attn.*,ffn.fc1,ffn.dwconv.dwconv,ffn.fc2,ffn_norm}
backbone.interactions.3.extra_extractors.{0,1}.*               backbone.bottom_up.interactions.3.extra_extractors.*
backbone.up.{weight,bias} (ConvTranspose2d)                    backbone.bottom_up.up.*
backbone.norm{1,2,3,4}.* (SyncBN)                              backbone.bottom_up.norm{1,2,3,4}.* (BN keys)
neck.lateral_convs.K.conv.* (K = 0..3)                          backbone.fpn_lateral{K+2}.*
neck.fpn_convs.K.conv.*                                         backbone.fpn_output{K+2}.*
rpn_head.rpn_conv / rpn_cls / rpn_reg                           proposal_generator.rpn_head.conv / objectness_logits / anchor_deltas
roi_head.bbox_head.shared_fcs.{0,1}                            roi_heads.box_head.fc{1,2}
roi_head.bbox_head.fc_cls / fc_reg                             roi_heads.box_predictor.cls_score / bbox_pred
roi_head.mask_head.convs.K.conv (K = 0..3)                     roi_heads.mask_head.mask_fcn{K+1}
roi_head.mask_head.upsample / conv_logits                      roi_heads.mask_head.deconv / predictor
Cascade (S = stage 0..2):
roi_head.bbox_head.S.shared_convs.K.conv (K = 0..3, no bias)   roi_heads.box_head.S.conv{K+1}
roi_head.bbox_head.S.shared_convs.K.bn (mmcv ConvModule names  roi_heads.box_head.S.conv{K+1}.norm
its SyncBN "bn")
roi_head.bbox_head.S.shared_fcs.0                              roi_heads.box_head.S.fc1
roi_head.bbox_head.S.fc_cls / fc_reg                           roi_heads.box_predictor.S.cls_score / bbox_pred
roi_head.mask_head.S.* (one FCNMaskHead per stage)             roi_heads.mask_head.* (detectron2: one head)
============================================================  ==========================================

The backbone rows are checked key by key in tests/test_backbone.py
(``_official_keys`` enumerates the release's modules: ``vit_adapter.py``,
``adapter_modules.py``, ``base/vit.py``; the release sets ``cls_token = None``
and has no final ``norm`` / ``head``). Head names are mmdetection 2.x's
(RPNHead, ConvFCBBoxHead / Shared2FCBBoxHead, FCNMaskHead, FPN with ConvModule);
:mod:`vit_adapter.checkpoint.official` implements the whole table. The release's
cascade regresses per class while detectron2's CascadeROIHeads is class-agnostic
(see configs/common/models/cascade_mask_rcnn_vit_adapter.py).

Both frameworks put background last in the classifier and use the same box
delta scaling ((0.1, 0.1, 0.2, 0.2) stds == (10, 10, 5, 5) weights). The
SyncBN layers hold the same keys as BatchNorm2d (``num_batches_tracked``
included). For the plain-ViT baseline the ViT sits at
``backbone.net.<name>`` (detectron2 ViTDet's layout).
"""
from functools import partial
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from detectron2.modeling import Backbone, ShapeSpec
from timm.layers import trunc_normal_
from torch import nn

from vit_adapter.modeling.adapter_modules import (
    InteractionBlock,
    SpatialPriorModule,
    _tokens_to_map,
    checkpoint_with_norms,
    build_norm,
    deform_inputs,
)
from vit_adapter.modeling.inference import (
    add_conv_transpose2x2_,
    add_resized_,
    affine_,
    conv_transpose2x2_rows,
    in_place_ok,
    norm_as_affine,
)
from vit_adapter.layers.ms_deform_attn import MSDeformAttn
from vit_adapter.modeling.vit import VisionTransformer

__all__ = ["VIT_ADAPTER_PRESETS", "ViTAdapter", "PlainViTBackbone"]

_WINDOW_12 = [0, 1, 3, 4, 6, 7, 9, 10]  # global attention on 2, 5, 8, 11
_WINDOW_24 = [i for i in range(24) if i % 6 != 5]  # global attention on 5, 11, 17, 23
_INTERACT_12 = [[0, 2], [3, 5], [6, 8], [9, 11]]
_INTERACT_24 = [[0, 5], [6, 11], [12, 17], [18, 23]]

# The released Mask R-CNN / Cascade configs (detection/configs/mask_rcnn/*deit_adapter_{tiny,small,base}*,
# *augreg_adapter_large*). Common to all: patch 16, mlp_ratio 4, conv_inplane 64,
# n_points 4, cffn_ratio 0.25, window 14, layer scale on, init_values 0.
VIT_ADAPTER_PRESETS = {
    "T": dict(embed_dim=192, depth=12, num_heads=3, deform_num_heads=6, deform_ratio=1.0,
              drop_path_rate=0.1, window_block_indexes=_WINDOW_12,
              interaction_indexes=_INTERACT_12, pretrain_size=224),  # DeiT-T
    "S": dict(embed_dim=384, depth=12, num_heads=6, deform_num_heads=6, deform_ratio=1.0,
              drop_path_rate=0.2, window_block_indexes=_WINDOW_12,
              interaction_indexes=_INTERACT_12, pretrain_size=224),  # DeiT-S
    "B": dict(embed_dim=768, depth=12, num_heads=12, deform_num_heads=12, deform_ratio=0.5,
              drop_path_rate=0.3, window_block_indexes=_WINDOW_12,
              interaction_indexes=_INTERACT_12, pretrain_size=224),  # DeiT-B
    "L": dict(embed_dim=1024, depth=24, num_heads=16, deform_num_heads=16, deform_ratio=0.5,
              drop_path_rate=0.4, window_block_indexes=_WINDOW_24,
              interaction_indexes=_INTERACT_24, pretrain_size=384),  # AugReg-L (IN-21k), 384
}


def _check_image(x: torch.Tensor, in_chans: int, divisor: int, name: str):
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"{name} expects a (B, {in_chans}, H, W) tensor, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h < divisor or w < divisor or h % divisor or w % divisor:
        raise ValueError(
            f"{name} needs H and W to be multiples of {divisor} and at least {divisor} px, got "
            f"{h}x{w}. Pad the image (detectron2 pads to backbone.size_divisibility = {divisor})."
        )


class ViTAdapter(VisionTransformer, Backbone):
    """ViT-Adapter (Chen et al., ICLR 2023), detection variant.

    The ViT's parameters live at the top level (``patch_embed``, ``pos_embed``,
    ``blocks``) as in the official model, so ``isinstance(m, VisionTransformer)``
    holds and DeiT / official checkpoints load by name.

    Without autograd (``torch.no_grad`` / ``inference_mode``; not under
    autocast) the forward updates its intermediate token buffers in place
    (like torchvision's in-place residuals; see :mod:`vit_adapter.modeling.inference`):
    a forward hook that keeps an intermediate tensor (a block's or an
    extractor's output) should keep a ``.clone()``. Outputs are the same as
    with autograd.
    """

    def __init__(
        self,
        pretrain_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        layer_scale: bool = True,
        window_size: int = 14,
        window_block_indexes: Sequence[int] = tuple(_WINDOW_12),
        window_padding: str = "official",
        with_cp: bool = False,
        conv_inplane: int = 64,
        n_points: int = 4,
        deform_num_heads: int = 6,
        init_values: float = 0.0,
        interaction_indexes: Sequence[Sequence[int]] = tuple(_INTERACT_12),
        with_cffn: bool = True,
        cffn_ratio: float = 0.25,
        deform_ratio: float = 1.0,
        add_vit_feature: bool = True,
        use_extra_extractor: bool = True,
        norm="SyncBN",
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
    ):
        """
        Args:
            pretrain_size (int): pre-training image side (224 DeiT, 384 AugReg-L);
                sets the stored pos-embed grid.
            patch_size (int): ViT patch side (16).
            in_chans (int): image channels.
            embed_dim (int): ViT width D (also the adapter width).
            depth (int): ViT blocks.
            num_heads (int): ViT attention heads.
            mlp_ratio (float): ViT MLP ratio.
            qkv_bias (bool): ViT qkv bias.
            drop_rate (float): ViT dropout (pos-embed, attention proj, MLP).
            attn_drop_rate (float): ViT attention-weight dropout.
            drop_path_rate (float): ViT stochastic depth (linear schedule over
                blocks); the extractors' ConvFFN use this full rate.
            layer_scale (bool): ViT `gamma1`/`gamma2` (official default on).
            window_size (int): window side of the windowed blocks.
            window_block_indexes (list[int]): windowed ViT blocks (others global).
            window_padding (str): "official" (default, reproduces the release) or
                "masked"; see :mod:`vit_adapter.modeling.vit`.
            with_cp (bool): activation checkpointing of the ViT blocks and of
                every injector / extractor (the released ViT-Adapter passes
                `with_cp` to the ViT blocks only; its BEiT-Adapter also to the
                interaction blocks, as here: same outputs, less memory).
            conv_inplane (int): spatial prior module stem width.
            n_points (int): deformable-attention points per head and level.
            deform_num_heads (int): deformable-attention heads.
            init_values (float): injector gamma init (0: identity at init).
            interaction_indexes (list[[int, int]]): inclusive ViT-block range
                [first, last] of each interaction block.
            with_cffn (bool): extractors have a ConvFFN.
            cffn_ratio (float): ConvFFN hidden ratio.
            deform_ratio (float): MSDeformAttn value width ratio.
            add_vit_feature (bool): add the final ViT map (resized) to all 4 outputs.
            use_extra_extractor (bool): 2 extra extractors in the last interaction.
            norm: spatial-prior and output norms ("SyncBN" official; falls back
                to BatchNorm when not distributed, see
                :func:`vit_adapter.modeling.adapter_modules.build_norm`), "BN", any
                detectron2 norm string, or "" for none.
            out_features (list[str]): subset of "res2".."res5" to return.
        """
        super().__init__(
            pretrain_size=pretrain_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            layer_scale=layer_scale,
            window_size=window_size,
            window_block_indexes=window_block_indexes,
            window_padding=window_padding,
            with_cp=with_cp,
        )
        if patch_size != 16:
            raise ValueError(f"ViTAdapter's adapter levels assume patch_size 16, got {patch_size}")
        for rng in interaction_indexes:
            if len(rng) != 2 or not 0 <= rng[0] <= rng[1] < depth:
                raise ValueError(
                    f"interaction_indexes entries must be [first, last] with 0 <= first <= last < "
                    f"depth={depth}, got {list(interaction_indexes)}"
                )
        names = ("res2", "res3", "res4", "res5")
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(f"out_features must be a non-empty subset of {names}, got {list(out_features)}")
        self.in_chans = in_chans
        self.interaction_indexes = [list(r) for r in interaction_indexes]
        self.add_vit_feature = add_vit_feature

        self.level_embed = nn.Parameter(torch.zeros(3, embed_dim))
        self.with_cp = with_cp
        self.spm = SpatialPriorModule(inplanes=conv_inplane, embed_dim=embed_dim, in_chans=in_chans, norm=norm)
        n = len(self.interaction_indexes)
        self.interactions = nn.Sequential(
            *[
                InteractionBlock(
                    dim=embed_dim,
                    num_heads=deform_num_heads,
                    n_points=n_points,
                    init_values=init_values,
                    drop_path=drop_path_rate,
                    norm_layer=self.norm_layer,
                    with_cffn=with_cffn,
                    cffn_ratio=cffn_ratio,
                    deform_ratio=deform_ratio,
                    extra_extractor=use_extra_extractor and i == n - 1,
                    with_cp=with_cp,
                )
                for i in range(n)
            ]
        )
        self.up = nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2)
        self.norm1 = build_norm(norm, embed_dim)
        self.norm2 = build_norm(norm, embed_dim)
        self.norm3 = build_norm(norm, embed_dim)
        self.norm4 = build_norm(norm, embed_dim)

        # Official order: adapter Linear / conv init, then MSDeformAttn's own, then level_embed.
        self.up.apply(self._init_adapter_weights)
        self.spm.apply(self._init_adapter_weights)
        self.interactions.apply(self._init_adapter_weights)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

        self._out_features = list(out_features)
        self._out_feature_channels = {f: embed_dim for f in names}
        self._out_feature_strides = {f: 2 ** (i + 2) for i, f in enumerate(names)}

    @staticmethod
    def _init_adapter_weights(m: nn.Module):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _up_tokens(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``self.up`` (ConvTranspose2d, kernel 2, stride 2) on (B, h*w, D) tokens.

        A 2x2 / stride-2 transposed conv writes each input pixel's own 2x2 output
        block, so it is one GEMM (D -> 4 * D) plus a pixel shuffle; about 2x
        faster on CPU than the conv op. Returns the (B, D, 2h, 2w) map
        (channels-last memory), equal to ``self.up(map)``.
        """
        B, _, D = tokens.shape
        d_out = self.up.out_channels
        weight = conv_transpose2x2_rows(self.up.weight)  # rows (kh, kw, out)
        bias = None if self.up.bias is None else self.up.bias.repeat(4)
        y = F.linear(tokens, weight, bias).view(B, h, w, 2, 2, d_out)
        y = y.permute(0, 1, 3, 2, 4, 5).reshape(B, 2 * h, 2 * w, d_out)
        return y.permute(0, 3, 1, 2)

    @property
    def size_divisibility(self) -> int:
        return 32

    @property
    def padding_constraints(self) -> Dict[str, int]:
        # Read by detectron2 main only; 0.6 uses size_divisibility.
        return {"size_divisibility": 32, "square_size": 0}

    @property
    def _output_norms(self):
        return (self.norm1, self.norm2, self.norm3, self.norm4)

    def _output_stage(self, x, c, stem, len2: int, len3: int, H: int, W: int):
        """(B, H*W, D) ViT tokens x, (B, 4n + n + n/4, D) adapter tokens c and the
        (B, C0, 4H, 4W) stem map -> the normalised (B, D, H/s, W/s) maps for
        s = 4, 8, 16, 32 (res2..res5)."""
        c1 = self.spm.project_c1(stem)
        # Channels-last views of the token sequences (see _tokens_to_map).
        c2 = _tokens_to_map(c[:, :len2], 2 * H, 2 * W)
        c3 = _tokens_to_map(c[:, len2 : len2 + len3], H, W)
        c4 = _tokens_to_map(c[:, len2 + len3 :], H // 2, W // 2)
        c1 = self._up_tokens(c[:, :len2], 2 * H, 2 * W) + c1

        if self.add_vit_feature:
            x3 = _tokens_to_map(x, H, W)
            c1 = c1 + F.interpolate(x3, scale_factor=4, mode="bilinear", align_corners=False)
            c2 = c2 + F.interpolate(x3, scale_factor=2, mode="bilinear", align_corners=False)
            c3 = c3 + x3
            c4 = c4 + F.interpolate(x3, scale_factor=0.5, mode="bilinear", align_corners=False)
        return self.norm1(c1), self.norm2(c2), self.norm3(c3), self.norm4(c4)

    def _output_stage_inplace(self, x, c, stem, len2: int, len3: int, H: int, W: int):
        """:meth:`_output_stage` without autograd, for norms that are fixed
        affine maps (eval-mode BatchNorm): the same values, computed in place
        in the buffers this forward owns (the projected c1 and the adapter
        tokens c), with no other full-size map (see :mod:`vit_adapter.modeling.inference`).
        Returns None when the norms are not affine maps."""
        D = x.shape[-1]
        affines = [norm_as_affine(n, D, x.device) for n in self._output_norms]
        if any(a is None for a in affines):
            return None
        B = x.shape[0]
        # c1 = fc1(stem) without its bias (folded into norm1's shift with up's):
        # a (B, 4H, 4W, D) grid, the one new full-size tensor of this stage.
        fc1 = self.spm.fc1
        grid1 = self.spm._tokens(fc1, stem, bias=False).view(B, 4 * H, 4 * W, D)
        grids = [
            grid1,
            c[:, :len2].unflatten(1, (2 * H, 2 * W)),
            c[:, len2 : len2 + len3].unflatten(1, (H, W)),
            c[:, len2 + len3 :].unflatten(1, (H // 2, W // 2)),
        ]
        # up(c2) reads c2 before the ViT feature is added to it.
        add_conv_transpose2x2_(grid1, c[:, :len2], self.up.weight)
        scale1, shift1 = affines[0]
        for bias in (fc1.bias, self.up.bias):
            if bias is not None:
                shift1 = shift1 + scale1 * bias
        affines[0] = (scale1, shift1)
        if self.add_vit_feature:
            x3 = x.view(B, H, W, D)
            add_resized_(grids[0], x3, 4.0)
            add_resized_(grids[1], x3, 2.0)
            grids[2].add_(x3)
            add_resized_(grids[3], x3, 0.5)
        return tuple(affine_(g, *a).permute(0, 3, 1, 2) for g, a in zip(grids, affines))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (B, 3, H, W) image, H and W multiples of 32 (any aspect ratio).
        Returns:
            dict with "res2".."res5" (those in out_features): (B, D, H/s, W/s) for s = 4, 8, 16, 32.
        """
        _check_image(x, self.in_chans, 32, "ViTAdapter")
        injector_inputs, extractor_inputs = deform_inputs(x.shape[2], x.shape[3], x.device)

        # with_cp: the conv stem and the output stage are checkpointed too (their
        # activations are most of what the checkpointed blocks leave, ~2/3 at
        # 1024x1024); their BatchNorms update running statistics once.
        use_cp = self.with_cp and torch.is_grad_enabled() and self.training
        if use_cp:
            stem, c2, c3, c4 = checkpoint_with_norms([self.spm], self.spm.forward_features, x)
        else:
            stem, c2, c3, c4 = self.spm.forward_features(x)
        len2, len3 = c2.shape[1], c3.shape[1]
        c = torch.cat([c2 + self.level_embed[0], c3 + self.level_embed[1], c4 + self.level_embed[2]], dim=1)

        x, H, W = self.embed(x)
        # Without autograd x and c are this forward's own buffers: the
        # injectors / extractors update them in place.
        inplace = in_place_ok(x)
        for layer, (first, last) in zip(self.interactions, self.interaction_indexes):
            x, c = layer(x, c, self.blocks[first : last + 1], injector_inputs, extractor_inputs, H, W, inplace)

        stage = partial(self._output_stage, len2=len2, len3=len3, H=H, W=W)
        if use_cp:
            res = checkpoint_with_norms(self._output_norms, stage, x, c, stem)
        elif inplace:
            res = self._output_stage_inplace(x, c, stem, len2, len3, H, W) or stage(x, c, stem)
        else:
            res = stage(x, c, stem)
        outs = dict(zip(("res2", "res3", "res4", "res5"), res))
        return {k: outs[k] for k in self._out_features}


class PlainViTBackbone(VisionTransformer, Backbone):
    """The ViT alone as a detectron2 backbone: one stride-16 map "last_feat".

    Same parameters and names as the ViT inside :class:`ViTAdapter` (minus the
    adapter), for the ViTDet-style SimpleFeaturePyramid baseline. Takes every
    :class:`vit_adapter.modeling.vit.VisionTransformer` argument, plus:

    Args:
        out_feature (str): name of the output map.
    """

    def __init__(self, *args, out_feature: str = "last_feat", **kwargs):
        super().__init__(*args, **kwargs)
        self.in_chans = self.patch_embed.proj.in_channels
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: self.embed_dim}
        self._out_feature_strides = {out_feature: self.patch_size}

    @property
    def size_divisibility(self) -> int:
        return self.patch_size

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (B, 3, H, W), H and W multiples of 16 -> {out_feature: (B, D, H/16, W/16)}."""
        _check_image(x, self.in_chans, self.patch_size, "PlainViTBackbone")
        return {self._out_features[0]: super().forward(x)}
