"""ViT-Adapter and plain-ViT backbones for detectron2.

:class:`ViTAdapter` is the detection backbone of the official release
(``detection/mmdet_custom/models/backbones/vit_adapter.py``): a plain ViT
(:mod:`vit_adapter.modeling.vit`), a spatial prior module and 4 interaction blocks
(:mod:`vit_adapter.modeling.adapter_modules`), giving "res2".."res5" maps of D channels
at strides 4, 8, 16, 32 for an FPN. :class:`PlainViTBackbone` is the ViT alone
(the 1/16 map "last_feat", for a SimpleFeaturePyramid baseline).

Our module names are the official ones, so official checkpoints load by
name: in a detectron2 detector the backbone is ``model.backbone.bottom_up``
(``model.backbone`` is the FPN) and an official key ``backbone.<name>``
becomes ``backbone.bottom_up.<name>``. The whole official -> detectron2 key
table (backbone and heads) is :mod:`vit_adapter.checkpoint.official`; the
backbone's names are checked against the release's modules in
tests/modeling/test_backbone.py. For the plain-ViT baseline the ViT sits at
``backbone.net.<name>`` (detectron2 ViTDet's layout).
"""
import inspect
from functools import partial
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling import Backbone
from timm.layers import trunc_normal_
from torch import nn

from vit_adapter.layers.ms_deform_attn import MSDeformAttn
from vit_adapter.modeling import inference
from vit_adapter.modeling.adapter_modules import (
    InteractionBlock,
    SpatialPriorModule,
    _tokens_to_map,
    build_norm,
    checkpoint_with_norms,
    deform_inputs,
)
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


# ViTAdapter's ViT defaults: the ViT arguments of the "S" preset.
_VIT_DEFAULTS = {k: v for k, v in VIT_ADAPTER_PRESETS["S"].items()
                 if k in inspect.signature(VisionTransformer.__init__).parameters}


class ViTAdapter(VisionTransformer, Backbone):
    """ViT-Adapter (Chen et al., ICLR 2023), detection variant.

    The ViT's parameters live at the top level (``patch_embed``, ``pos_embed``,
    ``blocks``) as in the official model, so ``isinstance(m, VisionTransformer)``
    holds and DeiT / official checkpoints load by name.

    Without autograd and autocast, in eval mode, the forward takes the
    inference path (:mod:`vit_adapter.modeling.inference`): same outputs,
    intermediate token buffers updated in place (a forward hook that keeps an
    intermediate tensor should keep a ``.clone()``).
    """

    def __init__(
        self,
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
        **vit_kwargs,
    ):
        """
        Args:
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
            vit_kwargs: the ViT's arguments, see
                :class:`vit_adapter.modeling.vit.VisionTransformer` (defaults:
                ViT-S, :data:`VIT_ADAPTER_PRESETS` ``["S"]``). The adapter
                width is ``embed_dim``; the extractors' ConvFFN use the full
                ``drop_path_rate``; ``with_cp`` also checkpoints every
                injector / extractor (the released ViT-Adapter passes it to the
                ViT blocks only; its BEiT-Adapter also to the interaction
                blocks, as here: same outputs, less memory).
        """
        vit_kwargs = {**_VIT_DEFAULTS, **vit_kwargs}
        super().__init__(**vit_kwargs)
        embed_dim, depth, drop_path_rate = self.embed_dim, len(self.blocks), self.drop_path_rate
        with_cp = vit_kwargs.get("with_cp", False)
        if self.patch_size != 16:
            raise ValueError(f"ViTAdapter's adapter levels assume patch_size 16, got {self.patch_size}")
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
        self.in_chans = self.patch_embed.proj.in_channels
        self.interaction_indexes = [list(r) for r in interaction_indexes]
        self.add_vit_feature = add_vit_feature

        self.level_embed = nn.Parameter(torch.zeros(3, embed_dim))
        self.with_cp = with_cp
        self.spm = SpatialPriorModule(inplanes=conv_inplane, embed_dim=embed_dim, in_chans=self.in_chans, norm=norm)
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
        block, so it is one GEMM (D -> 4 * D) plus a pixel shuffle. Returns the
        (B, D, 2h, 2w) map (channels-last memory), equal to ``self.up(map)``.
        """
        B, _, D = tokens.shape
        d_out = self.up.out_channels
        weight = inference.conv_transpose2x2_rows(self.up.weight)  # rows (kh, kw, out)
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
    def output_norms(self):
        return (self.norm1, self.norm2, self.norm3, self.norm4)

    def adapter_tokens(self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor) -> torch.Tensor:
        """The spatial prior's (B, h_l*w_l, D) tokens of the 1/8, 1/16, 1/32
        maps, each plus its level embedding, concatenated: (B, 4n + n + n/4, D)."""
        return torch.cat([c2 + self.level_embed[0], c3 + self.level_embed[1], c4 + self.level_embed[2]], dim=1)

    def output_stage(self, x, c, stem, len2: int, len3: int, H: int, W: int) -> Tuple[torch.Tensor, ...]:
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

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (B, 3, H, W) image, H and W multiples of 32 (any aspect ratio).
        Returns:
            dict with "res2".."res5" (those in out_features): (B, D, H/s, W/s) for s = 4, 8, 16, 32.
        """
        _check_image(x, self.in_chans, 32, "ViTAdapter")
        if inference.applies(self, x):
            maps = inference.forward_vit_adapter(self, x)
        else:
            maps = self._forward(x)
        outs = dict(zip(("res2", "res3", "res4", "res5"), maps))
        return {k: outs[k] for k in self._out_features}

    def _forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The training formulation: (res2, res3, res4, res5) maps of a checked image."""
        injector_inputs, extractor_inputs = deform_inputs(x.shape[2], x.shape[3], x.device)
        # with_cp: the conv stem and the output stage are checkpointed too (their
        # activations are most of what the checkpointed blocks leave); their
        # BatchNorms update running statistics once.
        use_cp = self.with_cp and torch.is_grad_enabled() and self.training
        if use_cp:
            stem, c2, c3, c4 = checkpoint_with_norms([self.spm], self.spm.forward_features, x)
        else:
            stem, c2, c3, c4 = self.spm.forward_features(x)
        len2, len3 = c2.shape[1], c3.shape[1]
        c = self.adapter_tokens(c2, c3, c4)

        x, H, W = self.embed(x)
        for layer, (first, last) in zip(self.interactions, self.interaction_indexes):
            x, c = layer(x, c, self.blocks[first : last + 1], injector_inputs, extractor_inputs, H, W)

        stage = partial(self.output_stage, len2=len2, len3=len3, H=H, W=W)
        if use_cp:
            return checkpoint_with_norms(self.output_norms, stage, x, c, stem)
        return stage(x, c, stem)


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
