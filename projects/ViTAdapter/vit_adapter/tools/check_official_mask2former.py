#!/usr/bin/env python
"""Check our Mask2Former head against the release's, numerically (staged).

Stages the release's ``segmentation/mmseg_custom`` (its Mask2FormerHead,
MSDeformAttnPixelDecoder, transformer layers, positional encodings, assigner)
from a checkout of czczup/ViT-Adapter on top of mmcv 1.5.0, mmdet 2.22.0 and
mmsegmentation 0.20.2 sources (the versions the release pins) that you provide
(``--mm-path``: folders holding the ``mmcv``, ``mmseg`` (and ``mmdet``)
packages, e.g. unpacked from their sdist / wheels into a scratch folder; they
are not project dependencies). Stand-ins: mmcv's compiled ``_ext`` (never
called: on CPU mmcv's MultiScaleDeformableAttention takes its pure-PyTorch
path), and ``mmseg_custom``'s package ``__init__`` files without the
backbones / segmentors / datasets (not under test).

Builds a small release head, perturbs every parameter, converts its state
dict with our key table (``vit_adapter.checkpoint.official``), loads it into
our Mask2FormerHead with ``strict=True``, and compares in float64 on random
backbone features: the pixel decoder's mask feature and multi-scale outputs,
every decoder stage's class and mask logits, and the semantic scores (the
release's ``forward_test`` before its resize vs :func:`semantic_inference`).

    python tools/check_official_mask2former.py --official /path/to/ViT-Adapter[.git] \\
        --mm-path /tmp/mm_sources

Exits 1 when a relative difference exceeds --tol.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import types

import torch

from vit_adapter.tools.check_official_backbone import _read

RELEASE_ROOT = "segmentation/mmseg_custom"
# package __init__ files replaced (the rest of the package is not under test)
INIT_OVERRIDES = {
    "mmseg_custom/__init__.py": "from .core import *  # noqa\nfrom .models import *  # noqa\n",
}
DIMS = dict(in_channels=24, dim=32, heads=4, points=2, enc_layers=2, enc_ffn=48, dec_layers=4, dec_ffn=40,
            queries=6, num_classes=5)


def _list_release_files(official: str):
    if os.path.isdir(os.path.join(official, "segmentation")):
        root = os.path.join(official, RELEASE_ROOT)
        return [os.path.relpath(os.path.join(d, f), official) for d, _, fs in os.walk(root) for f in fs
                if f.endswith(".py")]
    out = subprocess.run(["git", "-C", official, "ls-tree", "-r", "--name-only", "HEAD", RELEASE_ROOT],
                         check=True, capture_output=True, text=True).stdout.split()
    return [p for p in out if p.endswith(".py")]


def stage_release(official: str, dst: str):
    """Write the release's mmseg_custom (with the __init__ overrides) under `dst`."""
    if not os.path.exists(official):
        raise SystemExit(f"--official {official!r} does not exist")
    for src in _list_release_files(official):
        rel = os.path.relpath(src, "segmentation")
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        text = INIT_OVERRIDES.get(rel)
        if text is None:
            text = _read(official, src)
            if rel == "mmseg_custom/models/__init__.py":
                text = "\n".join(line for line in text.splitlines()
                                 if "backbones" not in line and "segmentors" not in line)
        with open(os.path.join(dst, rel), "w") as f:
            f.write(text)


def _install_ext_stand_in():
    """mmcv's compiled ``mmcv._ext``: a module whose functions raise if called."""
    def _missing(*args, **kwargs):
        raise RuntimeError("a compiled mmcv op was called in the staged comparison")

    def _attr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing

    ext = types.ModuleType("mmcv._ext")
    ext.__getattr__ = _attr
    sys.modules["mmcv._ext"] = ext


def release_head_cfg(d=DIMS):
    """The release's Mask2FormerHead config (configs/_base_/models/mask2former_beit.py) at tiny sizes."""
    dim, heads = d["dim"], d["heads"]
    return dict(
        type="Mask2FormerHead", in_channels=[d["in_channels"]] * 4, feat_channels=dim, out_channels=dim,
        in_index=[0, 1, 2, 3], num_things_classes=d["num_classes"] - 2, num_stuff_classes=2,
        num_queries=d["queries"], num_transformer_feat_level=3,
        pixel_decoder=dict(
            type="MSDeformAttnPixelDecoder", num_outs=3, norm_cfg=dict(type="GN", num_groups=8),
            act_cfg=dict(type="ReLU"),
            encoder=dict(
                type="DetrTransformerEncoder", num_layers=d["enc_layers"],
                transformerlayers=dict(
                    type="BaseTransformerLayer",
                    attn_cfgs=dict(type="MultiScaleDeformableAttention", embed_dims=dim, num_heads=heads,
                                   num_levels=3, num_points=d["points"], im2col_step=64, dropout=0.0,
                                   batch_first=False, norm_cfg=None, init_cfg=None),
                    ffn_cfgs=dict(type="FFN", embed_dims=dim, feedforward_channels=d["enc_ffn"], num_fcs=2,
                                  ffn_drop=0.0, act_cfg=dict(type="ReLU", inplace=True)),
                    operation_order=("self_attn", "norm", "ffn", "norm")),
                init_cfg=None),
            positional_encoding=dict(type="SinePositionalEncoding", num_feats=dim // 2, normalize=True),
            init_cfg=None),
        enforce_decoder_input_project=False,
        positional_encoding=dict(type="SinePositionalEncoding", num_feats=dim // 2, normalize=True),
        transformer_decoder=dict(
            type="DetrTransformerDecoder", return_intermediate=True, num_layers=d["dec_layers"],
            transformerlayers=dict(
                type="DetrTransformerDecoderLayer",
                attn_cfgs=dict(type="MultiheadAttention", embed_dims=dim, num_heads=heads, attn_drop=0.0,
                               proj_drop=0.0, dropout_layer=None, batch_first=False),
                ffn_cfgs=dict(embed_dims=dim, feedforward_channels=d["dec_ffn"], num_fcs=2,
                              act_cfg=dict(type="ReLU", inplace=True), ffn_drop=0.0, dropout_layer=None,
                              add_identity=True),
                feedforward_channels=d["dec_ffn"],
                operation_order=("cross_attn", "norm", "self_attn", "norm", "ffn", "norm")),
            init_cfg=None),
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=2.0, reduction="mean",
                      class_weight=[1.0] * d["num_classes"] + [0.1]),
        loss_mask=dict(type="CrossEntropyLoss", use_sigmoid=True, reduction="mean", loss_weight=5.0),
        loss_dice=dict(type="DiceLoss", use_sigmoid=True, activate=True, reduction="mean", naive_dice=True,
                       eps=1.0, loss_weight=5.0),
    )


def our_head(d=DIMS):
    from vit_adapter.modeling.mask2former import (HungarianMatcher, Mask2FormerHead, MaskedAttentionDecoder,
                                                  MSDeformAttnPixelDecoder, SetCriterion)

    return Mask2FormerHead(
        in_features=["res2", "res3", "res4", "res5"],
        pixel_decoder=MSDeformAttnPixelDecoder([d["in_channels"]] * 4, conv_dim=d["dim"], mask_dim=d["dim"],
                                               num_layers=d["enc_layers"], num_heads=d["heads"],
                                               num_points=d["points"], ffn_dim=d["enc_ffn"], num_groups=8),
        predictor=MaskedAttentionDecoder(d["dim"], d["num_classes"], hidden_dim=d["dim"], mask_dim=d["dim"],
                                         num_queries=d["queries"], num_heads=d["heads"], ffn_dim=d["dec_ffn"],
                                         num_layers=d["dec_layers"]),
        criterion=SetCriterion(d["num_classes"], HungarianMatcher(num_points=64), num_points=64),
        num_classes=d["num_classes"],
    )


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def run(official: str, mm_path, tol: float = 1e-4, log=print, sizes=((64, 96), (96, 64))):
    """Stage, compare; returns {name: relative max difference}."""
    from vit_adapter.checkpoint.official import convert_official_mask2former_state_dict
    from vit_adapter.modeling.mask2former import semantic_inference

    tmp = tempfile.mkdtemp(prefix="staged_mask2former_")
    stage_release(official, tmp)
    sys.path[:0] = [tmp] + list(mm_path)
    _install_ext_stand_in()
    import mmseg_custom  # noqa: F401  (registers the release's modules)
    from mmcv import ConfigDict
    from mmseg.models.builder import build_head

    torch.manual_seed(0)
    release = build_head(ConfigDict(release_head_cfg())).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in release.parameters():  # perturb everything: no parameter is a no-op
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    sd = {"decode_head." + k: v for k, v in release.state_dict().items()}
    converted, _ = convert_official_mask2former_state_dict({"state_dict": sd})
    ours = our_head().double().eval()
    head_sd = {k[len("sem_seg_head."):]: v for k, v in converted.items()}
    ours.load_state_dict(head_sd, strict=True)
    log(f"release Mask2FormerHead -> ours: {len(head_sd)} tensors loaded with strict=True")
    results = {}
    for h, w in sizes:
        feats = [torch.randn(2, DIMS["in_channels"], h // s, w // s, generator=g, dtype=torch.float64)
                 for s in (4, 8, 16, 32)]
        metas = [dict(ori_shape=(h, w, 3), img_shape=(h, w, 3), pad_shape=(h, w, 3))] * 2
        with torch.no_grad():
            r_mask, r_levels = release.pixel_decoder(feats)
            o_mask, o_levels = ours.pixel_decoder(feats)
            results[f"{h}x{w} pixel decoder mask feature"] = _rel(o_mask, r_mask)
            for i, (a, b) in enumerate(zip(o_levels, r_levels)):
                results[f"{h}x{w} pixel decoder level {i}"] = _rel(a, b)
            r_cls, r_masks = release(feats, metas)
            preds = ours.predictor(o_levels, o_mask)
            if len(preds) != len(r_cls):
                raise SystemExit(f"stage count differs: ours {len(preds)}, release {len(r_cls)}")
            for i, (p, rc, rm) in enumerate(zip(preds, r_cls, r_masks)):
                results[f"{h}x{w} stage {i} class logits"] = _rel(p["pred_logits"], rc)
                results[f"{h}x{w} stage {i} mask logits"] = _rel(p["pred_masks"], rm)
            r_sem = release.forward_test(feats, metas, None)
            o_sem = semantic_inference(preds[-1]["pred_logits"], preds[-1]["pred_masks"])
            results[f"{h}x{w} semantic scores"] = _rel(o_sem, r_sem)
    worst = max(results.values())
    for k, v in results.items():
        log(f"  {k:45s} max rel. diff {v:.2e}")
    log(f"worst {worst:.2e} (tol {tol:.0e}): " + ("OK" if worst <= tol else "FAIL"))
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", required=True, help="czczup/ViT-Adapter checkout (working tree or bare repo)")
    p.add_argument("--mm-path", nargs="+", required=True,
                   help="folders holding the mmcv 1.5.0 / mmsegmentation 0.20.2 / mmdet 2.22.0 packages")
    p.add_argument("--tol", type=float, default=1e-4)
    args = p.parse_args(argv)
    results = run(args.official, args.mm_path, args.tol)
    sys.exit(0 if max(results.values()) <= args.tol else 1)


if __name__ == "__main__":
    main()
