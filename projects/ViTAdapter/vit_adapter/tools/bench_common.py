"""Timing, table and model-config helpers shared by tools/benchmark.py's sections.

:func:`time_pair` alternates two callables and reports medians and the median
ratio; :func:`print_table` prints a section; the ``*_cfg`` builders load the
Mask R-CNN model configs the sections time.
"""
import os
import statistics
import time
from typing import Callable, Dict, List

import torch

from vit_adapter import REPO_ROOT

MODEL_CONFIGS = os.path.join(REPO_ROOT, "configs", "common", "models")

# --------------------------------------------------------------------------- timing


class Clock:
    """process CPU time (CPU) or synchronised wall time."""

    def __init__(self, kind: str, device: torch.device):
        self.kind = "wall" if device.type == "cuda" else kind
        self.device = device

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.process_time() if self.kind == "process" else time.perf_counter()


def time_pair(fn_a: Callable, fn_b: Callable, clock: Clock, repeats: int, warmup: int = 1) -> Dict:
    """Alternate a and b; median times and median of the per-pair ratios a/b."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = clock()
        fn_a()
        t1 = clock()
        fn_b()
        t2 = clock()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    ratios = [a / b for a, b in zip(ta, tb) if b > 0]
    return {
        "a_ms": 1e3 * statistics.median(ta),
        "b_ms": 1e3 * statistics.median(tb),
        "ratio": statistics.median(ratios) if ratios else float("nan"),
        "ratio_min": min(ratios) if ratios else float("nan"),
        "ratio_max": max(ratios) if ratios else float("nan"),
    }


def _fmt_row(cols, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cols, widths)))


def print_table(title: str, header: List[str], rows: List[List], note: str = ""):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print(f"\n== {title}")
    print(_fmt_row(header, widths))
    for r in rows:
        print(_fmt_row(r, widths))
    if note:
        print(note)


def adapter_s_msda_inputs(side: int, layer: str, device, requires_grad: bool, seed: int = 0):
    """Inputs of ViT-Adapter-S's deformable attention (d_model 384, 6 heads x 64,
    4 points) for a side x side image: realistic locations around the
    reference points, softmax-normalised weights."""
    from vit_adapter.modeling.adapter_modules import get_reference_points

    g = torch.Generator().manual_seed(seed)
    s16 = side // 16
    multi = [(2 * s16, 2 * s16), (s16, s16), (s16 // 2, s16 // 2)]
    queries, values = (([(s16, s16)], multi) if layer == "injector" else (multi, [(s16, s16)]))
    m, dh, p = 6, 64, 4
    n_levels = len(values)
    ref = get_reference_points(queries)[0, :, 0]  # (Lq, 2)
    lq = ref.shape[0]
    s = sum(h * w for h, w in values)
    shapes = torch.tensor(values)
    # Offsets of a few pixels of each level (as the trained model's), some points outside.
    offsets = torch.randn(1, lq, m, n_levels, p, 2, generator=g) * 2.0
    loc = ref[None, :, None, None, None, :] + offsets / shapes.flip(-1)[None, None, None, :, None, :]
    value = torch.randn(1, s, m, dh, generator=g)
    weights = torch.randn(1, lq, m, n_levels, p, generator=g).flatten(-2).softmax(-1).view(1, lq, m, n_levels, p)
    out = [value, shapes, loc, weights]
    out = [t.to(device) for t in out]
    if requires_grad:
        for i in (0, 2, 3):
            out[i].requires_grad_(True)
    return out


# --------------------------------------------------------------------------- model builders


def load_model_cfg(name: str):
    from detectron2.config import LazyConfig

    return LazyConfig.load(os.path.join(MODEL_CONFIGS, name))


def adapter_cfg(size: str, with_cp: bool = False):
    """Mask R-CNN ViT-Adapter-<size> config (configs/common/models/mask_rcnn_vit_adapter.py)."""
    from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS

    cfg = load_model_cfg("mask_rcnn_vit_adapter.py")
    cfg.model.backbone.bottom_up.update(VIT_ADAPTER_PRESETS[size])
    cfg.model.backbone.bottom_up.with_cp = with_cp
    return cfg


PLAIN_SIZES = {"T": (192, 3), "S": (384, 6), "B": (768, 12)}


def plain_cfg(size: str):
    """Mask R-CNN plain ViT-<size> + SimpleFeaturePyramid (configs/common/models/mask_rcnn_vit_plain.py)."""
    cfg = load_model_cfg("mask_rcnn_vit_plain.py")
    dim, heads = PLAIN_SIZES[size]
    cfg.model.backbone.net.update(embed_dim=dim, num_heads=heads)
    return cfg


def shrink_for_quick(cfg, adapter: bool):
    """Tiny widths for --quick (same code paths)."""
    tiny = dict(embed_dim=48, num_heads=2, depth=4, window_size=3)
    if adapter:
        cfg.model.backbone.bottom_up.update(
            tiny, deform_num_heads=2, conv_inplane=8, window_block_indexes=[0, 2],
            interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]])
    else:
        cfg.model.backbone.net.update(tiny, window_block_indexes=[0, 2])
    return cfg


def beit_cfg(with_cp: bool, quick: bool = False):
    """Mask R-CNN BEiT-Adapter-L config (configs/common/models/mask_rcnn_beit_adapter.py);
    --quick: tiny widths, windows 3 / 6 (same code paths)."""
    cfg = load_model_cfg("mask_rcnn_beit_adapter.py")
    cfg.model.backbone.bottom_up.with_cp = with_cp
    if quick:
        cfg.model.backbone.bottom_up.update(
            embed_dim=48, depth=4, num_heads=2, deform_num_heads=2, conv_inplane=8,
            window_attn=[True] * 4, window_size=[3, 3, 3, 6], interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]])
    return cfg
