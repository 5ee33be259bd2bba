"""ViTDet's simple feature pyramid (Li et al., "Exploring Plain Vision
Transformer Backbones for Object Detection", ECCV 2022).

:class:`SimpleFeaturePyramid` is detectron2's own class where it exists
(``detectron2.modeling.backbone.vit``, main), with its padding fixed, and
:class:`ViTDetSimpleFeaturePyramid`, written here, on detectron2 0.6. Module
names and padding (``size_divisibility`` and ``padding_constraints``: the
coarsest level's stride) are the same either way
(``simfp_2`` ... ``simfp_5``, ``net``), so checkpoints move between the two.
"""
import math
from typing import Dict, Optional, Sequence

import torch
from detectron2.layers import Conv2d
from detectron2.modeling import Backbone
from torch import nn

from vit_adapter.compat import D2SimpleFeaturePyramid, get_norm

__all__ = ["SimpleFeaturePyramid", "ViTDetSimpleFeaturePyramid"]


def _scale_layers(scale: float, dim: int, norm, get_norm):
    """Resampling layers for one pyramid level and their output channels."""
    if scale == 4.0:
        return [
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            get_norm(norm, dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2),
        ], dim // 4
    if scale == 2.0:
        return [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)], dim // 2
    if scale == 1.0:
        return [], dim
    if scale == 0.5:
        return [nn.MaxPool2d(kernel_size=2, stride=2)], dim
    raise ValueError(f"SimpleFeaturePyramid: scale factor {scale} not supported (use 4, 2, 1, 0.5)")


class ViTDetSimpleFeaturePyramid(Backbone):
    """Multi-scale maps "p2".."p5" (+ top block levels) from one ViT map.

    Each level: resample the stride-s input by its scale factor (4: two
    ConvTranspose 2x2 with norm + GELU between; 2: one ConvTranspose; 1:
    nothing; 0.5: max-pool), then a 1x1 conv and a 3x3 conv to
    ``out_channels``, each with ``norm``.
    """

    def __init__(
        self,
        net: Backbone,
        in_feature: str,
        out_channels: int,
        scale_factors: Sequence[float],
        top_block: Optional[nn.Module] = None,
        norm: str = "LN",
        square_pad: int = 0,
    ):
        """
        Args:
            net (Backbone): the plain backbone; must output ``in_feature``.
            in_feature (str): name of the single map of ``net`` to build from.
            out_channels (int): channels of every output map.
            scale_factors (list[float]): resampling factors of the input map,
                high to low resolution (ViTDet: 4.0, 2.0, 1.0, 0.5).
            top_block (nn.Module or None): extra levels from the last map
                (e.g. ``LastLevelMaxPool`` for "p6"); needs ``num_levels`` and
                ``in_feature`` attributes, as in detectron2's FPN.
            norm (str): norm of the convs ("LN" = channel LayerNorm, "" none).
            square_pad (int): if > 0, detectron2 main pads inputs to this square size.
        """
        super().__init__()
        if not isinstance(net, Backbone):
            raise ValueError(f"SimpleFeaturePyramid: net must be a detectron2 Backbone, got {type(net)}")
        input_shapes = net.output_shape()
        if in_feature not in input_shapes:
            raise ValueError(
                f"SimpleFeaturePyramid: net outputs {list(input_shapes)}, not in_feature={in_feature!r}"
            )
        in_stride = input_shapes[in_feature].stride
        dim = input_shapes[in_feature].channels
        strides = [int(in_stride / s) for s in scale_factors]
        for a, b in zip(strides, strides[1:]):
            if b != 2 * a:
                raise ValueError(f"SimpleFeaturePyramid: strides {strides} are not log2-contiguous")

        use_bias = norm == ""
        self.scale_factors = list(scale_factors)
        self.stages = []
        for scale, stride in zip(scale_factors, strides):
            layers, out_dim = _scale_layers(scale, dim, norm, get_norm)
            layers += [
                Conv2d(out_dim, out_channels, kernel_size=1, bias=use_bias,
                       norm=get_norm(norm, out_channels)),
                Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=use_bias,
                       norm=get_norm(norm, out_channels)),
            ]
            stage = nn.Sequential(*layers)
            self.add_module(f"simfp_{int(math.log2(stride))}", stage)
            self.stages.append(stage)

        self.net = net
        self.in_feature = in_feature
        self.top_block = top_block
        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block is not None:
            last = int(math.log2(strides[-1]))
            for s in range(last + 1, last + 1 + top_block.num_levels):
                self._out_feature_strides[f"p{s}"] = 2 ** s
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._size_divisibility = strides[-1]
        self._square_pad = square_pad

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return {"size_divisibility": self._size_divisibility, "square_size": self._square_pad}

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (B, 3, H, W) images, H and W multiples of ``size_divisibility``.
        Returns:
            {"p2": (B, out_channels, H/4, W/4), ..., "p6": (..., H/64, W/64)}.
        """
        bottom_up = self.net(x)
        feat = bottom_up[self.in_feature]
        results = [stage(feat) for stage in self.stages]
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up:
                top_in = bottom_up[self.top_block.in_feature]
            else:
                top_in = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))


if D2SimpleFeaturePyramid is not None:

    class SimpleFeaturePyramid(D2SimpleFeaturePyramid):
        """detectron2's SimpleFeaturePyramid, padding inputs to its coarsest stride.

        detectron2 main's class reports `size_divisibility` 0 (the Backbone
        default) and spells its `padding_constraints` key "size_divisiblity",
        so `ImageList.from_tensors` pads nothing and the plain ViT gets image
        sides that are not multiples of its patch size. Here both report the
        stride of the last pyramid level (as :class:`ViTDetSimpleFeaturePyramid` does).
        """

        @property
        def size_divisibility(self) -> int:
            return self._size_divisibility

        @property
        def padding_constraints(self):
            return {"size_divisibility": self._size_divisibility, "square_size": self._square_pad}

else:
    SimpleFeaturePyramid = ViTDetSimpleFeaturePyramid
