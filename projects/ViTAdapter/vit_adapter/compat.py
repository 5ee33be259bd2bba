"""The one place that knows how detectron2 versions differ.

Supported: detectron2 0.6 (incl. the pure-Python build of
tools/install_detectron2.py) and upstream main (built from source, CPU or
CUDA). Both report ``__version__ == "0.6"``, so everything here detects
features, never versions. The rest of `vit_adapter` (and the configs) import
version-dependent names from here and never branch on detectron2 themselves.
"""
import bisect
import collections.abc
import contextlib
import functools
import importlib
import os

import torch
from torch import nn

import detectron2
from detectron2 import _C as _d2_C
from detectron2.config import LazyConfig

__all__ = [
    "HAS_COMPILED_OPS",
    "map_dataset_fallback_broken",
    "fix_map_dataset_fallback",
    "LayerNorm2d",
    "D2SimpleFeaturePyramid",
    "get_model_zoo_config",
    "get_norm",
    "patch_builtin_len",
]

# The pure-Python build ships a stub `_C` (see tools/install_detectron2.py).
HAS_COMPILED_OPS = not getattr(_d2_C, "PURE_PYTHON_STUB", False)


def get_model_zoo_config(config_path: str):
    """detectron2's packaged LazyConfig `config_path`, e.g. "common/models/mask_rcnn_fpn.py".

    `detectron2.model_zoo.get_config` without `detectron2.model_zoo`: that
    module imports `pkg_resources`, which setuptools >= 81 no longer ships
    (detectron2 issue #5494). The file is read from the package's
    `model_zoo/configs/` folder (where both the wheel and the editable
    install of main, and the 0.6 build, put them).

    Returns:
        omegaconf.DictConfig: the loaded config (all its top-level keys).
    """
    root = os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs")
    path = os.path.join(root, config_path)
    if not os.path.isfile(path):
        raise RuntimeError(
            f"detectron2's model-zoo config {config_path!r} is not at {path}: this detectron2 "
            "install does not package its configs (reinstall it from a source checkout)"
        )
    return LazyConfig.load(path)


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


# ViTDet's SimpleFeaturePyramid: detectron2's own class where it exists (main),
# None on 0.6. vit_adapter.modeling.simple_feature_pyramid builds on it.
try:
    from detectron2.modeling.backbone.vit import SimpleFeaturePyramid as D2SimpleFeaturePyramid
except ImportError:  # 0.6: no detectron2.modeling.backbone.vit
    D2SimpleFeaturePyramid = None


@functools.lru_cache(maxsize=None)
def map_dataset_fallback_broken() -> bool:
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


def fix_map_dataset_fallback():
    """Make an unpatched detectron2 0.6 `MapDataset` retry skipped items on
    Python >= 3.11 (see `map_dataset_fallback_broken`); a no-op elsewhere.

    Entry points that build detectron2 train loaders call it once before
    building them (train_net.py's ``setup``; `RobustDatasetMapper` returns None
    for an image it skips). Idempotent.
    """
    if not map_dataset_fallback_broken():
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


def _traced_len(obj):
    return obj.__len__()


@contextlib.contextmanager
def _patch_len(modules):
    """Bind a module-level ``len`` = :func:`_traced_len` in each of `modules`,
    restoring what was there (usually nothing: the builtin) on exit."""
    missing = object()
    saved = []
    try:
        for name in modules:
            module = importlib.import_module(name)
            saved.append((module, module.__dict__.get("len", missing)))
            module.len = _traced_len
        yield
    finally:
        for module, old in reversed(saved):
            if old is missing:
                module.__dict__.pop("len", None)
            else:
                module.len = old
