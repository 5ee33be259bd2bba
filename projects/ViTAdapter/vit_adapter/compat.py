"""The one place that knows how detectron2 versions differ.

Supported: detectron2 0.6 (incl. the pure-Python build of
tools/install_detectron2.py) and upstream main. Everything else in
`vit_adapter` imports version-dependent names from here and never branches on
versions itself.
"""
import bisect
import collections.abc

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
    "MAP_DATASET_FALLBACK_BROKEN",
    "fix_map_dataset_fallback",
    "LayerNorm2d",
    "SimpleFeaturePyramid",
    "get_norm",
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


def _map_dataset_fallback_broken() -> bool:
    """detectron2 0.6's `MapDataset` keeps its retry pool in a set and draws
    from it with `random.sample`, which Python >= 3.11 refuses for sets: the
    first image a mapper skips (returns None) crashes the loader with
    "TypeError: Population must be a sequence". Builds made by
    tools/install_detectron2.py are patched; other 0.6 installs are not."""
    from detectron2.data.common import MapDataset

    try:  # item 0 is skipped: the loader must fall back to item 1
        return MapDataset([0, 1], lambda x: None if x == 0 else x)[0] != 1
    except TypeError:
        return True


class _FallbackPool(collections.abc.Sequence):
    """The retry pool of `MapDataset` as an indexable set (what `random.sample`
    accepts): `add`, `discard`, `len`, `[i]`; elements kept in sorted order so
    the draws match the patched build's `sample(sorted(pool))`."""

    def __init__(self, items):
        self._items = sorted(set(items))

    def __len__(self):
        return len(self._items)

    def __getitem__(self, i):
        return self._items[i]

    def __contains__(self, x):
        j = bisect.bisect_left(self._items, x)
        return j < len(self._items) and self._items[j] == x

    def add(self, x):
        if x not in self:
            bisect.insort(self._items, x)

    def discard(self, x):
        j = bisect.bisect_left(self._items, x)
        if j < len(self._items) and self._items[j] == x:
            del self._items[j]


MAP_DATASET_FALLBACK_BROKEN = _map_dataset_fallback_broken()


def fix_map_dataset_fallback():
    """Make an unpatched detectron2 0.6 `MapDataset` retry skipped items on
    Python >= 3.11 (see `_map_dataset_fallback_broken`); a no-op elsewhere.

    Called when `vit_adapter.data.robust_mapper` is imported: that mapper is
    what returns None. Idempotent.
    """
    if not MAP_DATASET_FALLBACK_BROKEN:
        return
    from detectron2.data.common import MapDataset

    if getattr(MapDataset.__init__, "_vit_adapter_fallback_fix", False):
        return
    orig_init = MapDataset.__init__

    def __init__(self, dataset, map_func):
        orig_init(self, dataset, map_func)
        self._fallback_candidates = _FallbackPool(self._fallback_candidates)

    __init__._vit_adapter_fallback_fix = True
    MapDataset.__init__ = __init__
