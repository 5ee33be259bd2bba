"""ViT-Adapter and plain-ViT backbones for detectron2.

:class:`ViTAdapter` is the detection backbone of the official release
(``detection/mmdet_custom/models/backbones/vit_adapter.py``): a plain ViT
(:mod:`vit_adapter.modeling.vit`), a spatial prior module and 4 interaction blocks
(:mod:`vit_adapter.modeling.adapter_modules`), giving "res2".."res5" maps of D channels
at strides 4, 8, 16, 32 for an FPN. ``vit_feature="per_interaction"`` gives the
segmentation release's variant (``segmentation/mmseg_custom/models/backbones/vit_adapter.py``):
output i gets the ViT map after interaction i instead of the final one. :class:`PlainViTBackbone` is the ViT alone
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
from typing import Dict, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.modeling import Backbone
from torch import nn

from vit_adapter.layers.accumulate import add_conv_transpose2x2_, add_resized_, affine_
from vit_adapter.layers.affine import fold_affine, is_fixed_affine, norm_as_affine
from vit_adapter.layers.fast_path import fast_path_ok
from vit_adapter.layers.ms_deform_attn import MSDeformAttn
from vit_adapter.modeling.adapter_modules import (
    InteractionBlock,
    SpatialPriorModule,
    _tokens_to_map,
    build_norm,
    init_adapter_weights,
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

# Which ViT map(s) `add_vit_feature` adds to the outputs (see ViTAdapter).
VIT_FEATURE_MODES = ("last", "per_interaction")


class ViTAdapter(VisionTransformer, Backbone):
    """ViT-Adapter (Chen et al., ICLR 2023): the detection variant, or with
    ``vit_feature="per_interaction"`` the segmentation one.

    The ViT's parameters live at the top level (``patch_embed``, ``pos_embed``,
    ``blocks``) as in the official model, so ``isinstance(m, VisionTransformer)``
    holds and DeiT / official checkpoints load by name.

    One forward (:meth:`forward`). Its submodules hold their own faster
    no-grad formulations (see :mod:`vit_adapter.modeling.adapter_modules`);
    the output stage's is :meth:`output_stage`'s fast branch.
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
        vit_feature: str = "last",
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
            add_vit_feature (bool): add a ViT map (resized to each stride) to the 4 outputs.
            vit_feature (str): which ViT map: "last" (the detection release) adds
                the final one to every output; "per_interaction" (the
                segmentation release) adds the map after interaction i to
                output i (res2 <- after interaction 0, ..., res5 <- after 3),
                which needs exactly 4 interactions when add_vit_feature is on.
                Same parameters and names either way.
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
        if vit_feature not in VIT_FEATURE_MODES:
            raise ValueError(f"vit_feature must be one of {VIT_FEATURE_MODES}, got {vit_feature!r}")
        if vit_feature == "per_interaction" and add_vit_feature and len(interaction_indexes) != 4:
            raise ValueError(
                f"vit_feature='per_interaction' adds the ViT map after interaction i to output i: it needs 4 "
                f"interactions, got {len(interaction_indexes)} (or set add_vit_feature=False)"
            )
        names = ("res2", "res3", "res4", "res5")
        unknown = [f for f in out_features if f not in names]
        if unknown or not out_features:
            raise ValueError(f"out_features must be a non-empty subset of {names}, got {list(out_features)}")
        self.in_chans = self.patch_embed.proj.in_channels
        self.interaction_indexes = [list(r) for r in interaction_indexes]
        self.add_vit_feature = add_vit_feature
        self.vit_feature = vit_feature

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
        self.up.apply(init_adapter_weights)
        self.spm.apply(init_adapter_weights)
        self.interactions.apply(init_adapter_weights)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

        self.fast_path = True  # see output_stage
        self._out_features = list(out_features)
        self._out_feature_channels = {f: embed_dim for f in names}
        self._out_feature_strides = {f: 2 ** (i + 2) for i, f in enumerate(names)}

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

    def output_stage(
        self, x: Union[torch.Tensor, Sequence[torch.Tensor]], c: torch.Tensor, c1: torch.Tensor, H: int, W: int
    ) -> Tuple[torch.Tensor, ...]:
        """The four normalised output maps.

        Args:
            x: (B, H*W, D) ViT tokens on the (H, W) = 1/16 grid, added (with
                add_vit_feature, resized) to all four outputs; or a sequence of
                4 such tensors, the i-th added to output i (vit_feature
                "per_interaction": the tokens after interaction i).
            c: (B, 4HW + HW + HW/4, D) adapter tokens (1/8, 1/16, 1/32).
            c1: (B, D, 4H, 4W) the spatial prior's 1/4 map.
        Returns:
            (res2, res3, res4, res5): (B, D, 4H, 4W), (B, D, 2H, 2W), (B, D, H, W),
            (B, D, H/2, W/2), channels-last memory.
        """
        xs = _per_output(x)
        if self.folds_output_stage(xs[0]):
            return self._output_stage_folded(xs, c, c1, H, W)
        len2, len3 = 4 * H * W, H * W
        # Channels-last views of the token sequences (see _tokens_to_map).
        c2 = _tokens_to_map(c[:, :len2], 2 * H, 2 * W)
        c3 = _tokens_to_map(c[:, len2 : len2 + len3], H, W)
        c4 = _tokens_to_map(c[:, len2 + len3 :], H // 2, W // 2)
        c1 = self.up(c2) + c1
        if self.add_vit_feature:
            v1, v2, v3, v4 = (_tokens_to_map(t, H, W) for t in xs)
            c1 = c1 + F.interpolate(v1, scale_factor=4, mode="bilinear", align_corners=False)
            c2 = c2 + F.interpolate(v2, scale_factor=2, mode="bilinear", align_corners=False)
            c3 = c3 + v3
            c4 = c4 + F.interpolate(v4, scale_factor=0.5, mode="bilinear", align_corners=False)
        return self.norm1(c1), self.norm2(c2), self.norm3(c3), self.norm4(c4)

    def folds_output_stage(self, x: torch.Tensor) -> bool:
        """Whether :meth:`output_stage` takes its fast branch: ``fast_path``
        applies (:func:`~vit_adapter.layers.fast_path.fast_path_ok`) and the
        four output norms are fixed affine maps (eval BatchNorm, FrozenBN, none)."""
        return fast_path_ok(self, x) and all(is_fixed_affine(n) for n in self.output_norms)

    def _output_stage_folded(self, xs, c, c1, H: int, W: int):
        """:meth:`output_stage` (`xs`: its 4 per-output ViT token tensors) with one new map per output and no other
        full-size tensor: each output starts as a copy of its adapter map
        (channels-last grid), the ``up`` conv and the resized ViT map are
        accumulated into it by GEMMs (:mod:`vit_adapter.layers.accumulate`),
        and the norm, a fixed affine map ``(s, t)``, is applied in place with
        ``up``'s bias folded into its shift: ``norm(y + b) = y * s + (b * s + t)``.
        Inputs are left untouched. Scales, shifts and resize matrices come
        from the current weights on every call (vectors and small matrices)."""
        B, D = xs[0].shape[0], xs[0].shape[-1]
        len2, len3 = 4 * H * W, H * W
        affines = [norm_as_affine(n, D, xs[0].device) for n in self.output_norms]
        if self.up.bias is not None:
            affines[0] = fold_affine(None, self.up.bias, after=affines[0])
        views = [
            c1.permute(0, 2, 3, 1),  # (B, 4H, 4W, D)
            c[:, :len2].unflatten(1, (2 * H, 2 * W)),
            c[:, len2 : len2 + len3].unflatten(1, (H, W)),
            c[:, len2 + len3 :].unflatten(1, (H // 2, W // 2)),
        ]
        grids = [v.clone(memory_format=torch.contiguous_format) for v in views]  # the outputs' buffers
        add_conv_transpose2x2_(grids[0], c[:, :len2], self.up.weight)
        if self.add_vit_feature:
            v1, v2, v3, v4 = (t.view(B, H, W, D) for t in xs)
            add_resized_(grids[0], v1, 4.0)
            add_resized_(grids[1], v2, 2.0)
            grids[2].add_(v3)
            add_resized_(grids[3], v4, 0.5)
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
        # activations are most of what the checkpointed blocks leave); their
        # BatchNorms update running statistics once.
        use_cp = self.with_cp and torch.is_grad_enabled() and self.training
        if use_cp:
            c1, c2, c3, c4 = checkpoint_with_norms([self.spm], self.spm, x)
        else:
            c1, c2, c3, c4 = self.spm(x)
        c = self.adapter_tokens(c2, c3, c4)

        x, H, W = self.embed(x)
        vit_tokens = []  # per_interaction: the ViT tokens after each interaction
        for layer, (first, last) in zip(self.interactions, self.interaction_indexes):
            x, c = layer(x, c, self.blocks[first : last + 1], injector_inputs, extractor_inputs, H, W)
            vit_tokens.append(x)
        if self.vit_feature == "per_interaction" and self.add_vit_feature:
            xs = vit_tokens
        else:
            xs = [x] * 4

        def stage(c, c1, *xs):  # tensors as positional arguments (checkpointed)
            return self.output_stage(xs, c, c1, H, W)

        maps = checkpoint_with_norms(self.output_norms, stage, c, c1, *xs) if use_cp else stage(c, c1, *xs)
        outs = dict(zip(("res2", "res3", "res4", "res5"), maps))
        return {k: outs[k] for k in self._out_features}


def _per_output(x: Union[torch.Tensor, Sequence[torch.Tensor]]) -> Sequence[torch.Tensor]:
    """:meth:`ViTAdapter.output_stage`'s ViT tokens as 4 tensors, one per output."""
    if isinstance(x, torch.Tensor):
        return [x] * 4
    if len(x) != 4:
        raise ValueError(f"output_stage takes one ViT token tensor or 4 (one per output), got {len(x)}")
    return list(x)


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
