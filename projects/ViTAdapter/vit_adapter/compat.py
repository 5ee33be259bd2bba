"""The one place that knows how detectron2 versions differ.

Supported: detectron2 0.6 (incl. the pure-Python build of
tools/install_detectron2.py) and upstream main. Everything else in
`vit_adapter` imports version-dependent names from here and never branches on
versions itself.
"""
import contextlib
from unittest import mock

import torch
from torch import nn

import detectron2
from detectron2 import _C as _d2_C
from detectron2.modeling import Backbone

__all__ = [
    "D2_VERSION",
    "HAS_COMPILED_OPS",
    "HAS_PADDING_CONSTRAINTS",
    "HAS_D2_VIT",
    "LayerNorm2d",
    "SimpleFeaturePyramid",
    "get_norm",
    "patch_builtin_len",
]

D2_VERSION = detectron2.__version__
# The pure-Python build ships a stub `_C` (see tools/install_detectron2.py).
HAS_COMPILED_OPS = not getattr(_d2_C, "PURE_PYTHON_STUB", False)
# `Backbone.padding_constraints` (square padding etc.) exists on main only.
HAS_PADDING_CONSTRAINTS = hasattr(Backbone, "padding_constraints")

try:  # main: ViTDet's backbone lives in detectron2.
    from detectron2.modeling.backbone.vit import (  # noqa: F401
        SimpleFeaturePyramid as D2SimpleFeaturePyramid,
    )

    HAS_D2_VIT = True
except ImportError:  # 0.6
    D2SimpleFeaturePyramid = None
    HAS_D2_VIT = False


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a (N, C, H, W) map.

    detectron2 main's `get_norm("LN")`; 0.6 lacks it.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def get_norm(norm, out_channels: int):
    """detectron2's `get_norm`, plus "LN" (a channel LayerNorm) on 0.6."""
    from detectron2.layers import get_norm as d2_get_norm

    if norm == "LN":
        return LayerNorm2d(out_channels)
    return d2_get_norm(norm, out_channels)


# ViTDet's SimpleFeaturePyramid: detectron2's own on main, ours on 0.6 (same
# constructor, module names and outputs).
if HAS_D2_VIT:
    SimpleFeaturePyramid = D2SimpleFeaturePyramid
else:
    from vit_adapter.modeling.simple_feature_pyramid import SimpleFeaturePyramid  # noqa: E402


# Modules whose len(Instances) calls must stay traced values when exporting (detectron2's list).
_LEN_PATCHED_MODULES = (
    "detectron2.modeling.roi_heads.fast_rcnn",
    "detectron2.modeling.roi_heads.mask_head",
    "detectron2.modeling.roi_heads.keypoint_head",
)


def patch_builtin_len(modules=()):
    """Context manager: ``len(x)`` calls ``x.__len__()`` in detectron2's heads
    and in `modules` (names), so traced instance counts are not frozen into
    Python ints. detectron2's ``detectron2.export.torchscript_patch.patch_builtin_len``
    where ``detectron2.export`` imports (main); on 0.6 its ``__init__`` needs
    caffe2, so the same patch is applied here."""
    try:
        from detectron2.export.torchscript_patch import patch_builtin_len as d2_patch
    except ImportError:
        d2_patch = None
    if d2_patch is not None:
        return d2_patch(modules)
    return _patch_len(_LEN_PATCHED_MODULES + tuple(modules))


@contextlib.contextmanager
def _patch_len(modules):
    with contextlib.ExitStack() as stack:
        for name in modules:
            stack.enter_context(mock.patch(name + ".len", side_effect=lambda obj: obj.__len__(), create=True))
        yield
