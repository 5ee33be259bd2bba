"""The release's UperNet state-dict layout (mmseg 0.20.2 ``UPerHead`` + ``FCNHead``), written
from mmseg's module definitions independently of vit_adapter.modeling.upernet.

``UPerHead(in_channels=[D] * 4, channels=C, pool_scales=(1, 2, 3, 6))``:

* ``psp_modules.{i}.1``: ConvModule(D, C, 1) per pool scale (index 0 is the pooling layer);
* ``bottleneck``: ConvModule(D + 4 C, C, 3);
* ``lateral_convs.{0,1,2}``: ConvModule(D, C, 1); ``fpn_convs.{0,1,2}``: ConvModule(C, C, 3);
* ``fpn_bottleneck``: ConvModule(4 C, C, 3); ``conv_seg``: Conv2d(C, K, 1) with bias.

``FCNHead(in_channels=D, channels=A, num_convs=1, concat_input=False)``: ``convs.0``
ConvModule(D, A, 3), ``conv_seg`` Conv2d(A, K, 1). A ConvModule with SyncBN is ``conv.weight``
(no bias) + ``bn.{weight, bias, running_mean, running_var, num_batches_tracked}``.
"""
from typing import Dict, Tuple

import torch


def _conv_module(prefix: str, cin: int, cout: int, k: int) -> Dict[str, Tuple[int, ...]]:
    out = {f"{prefix}.conv.weight": (cout, cin, k, k)}
    for name in ("weight", "bias", "running_mean", "running_var"):
        out[f"{prefix}.bn.{name}"] = (cout,)
    out[f"{prefix}.bn.num_batches_tracked"] = ()
    return out


def uper_head_shapes(d: int, channels: int, num_classes: int, pool_scales=(1, 2, 3, 6), levels: int = 4):
    """mmseg UPerHead state-dict names -> shapes, under ``decode_head.``."""
    s = {}
    for i, _ in enumerate(pool_scales):
        s.update(_conv_module(f"decode_head.psp_modules.{i}.1", d, channels, 1))
    s.update(_conv_module("decode_head.bottleneck", d + len(pool_scales) * channels, channels, 3))
    for i in range(levels - 1):
        s.update(_conv_module(f"decode_head.lateral_convs.{i}", d, channels, 1))
        s.update(_conv_module(f"decode_head.fpn_convs.{i}", channels, channels, 3))
    s.update(_conv_module("decode_head.fpn_bottleneck", levels * channels, channels, 3))
    s["decode_head.conv_seg.weight"] = (num_classes, channels, 1, 1)
    s["decode_head.conv_seg.bias"] = (num_classes,)
    return s


def fcn_head_shapes(d: int, channels: int, num_classes: int):
    """mmseg FCNHead (num_convs 1, no concat) state-dict names -> shapes, under ``auxiliary_head.``."""
    s = _conv_module("auxiliary_head.convs.0", d, channels, 3)
    s["auxiliary_head.conv_seg.weight"] = (num_classes, channels, 1, 1)
    s["auxiliary_head.conv_seg.bias"] = (num_classes,)
    return s


def random_state(shapes: Dict[str, Tuple[int, ...]], seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random tensors of the given shapes (positive running_var, integer counters)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g) * 0.1
    return out
