#!/usr/bin/env python
"""Our UperNet segmentor vs the release's mmseg 0.20.2 code, on the same weights and input.

    PYTHONPATH=<mmseg 0.20.2 + mmcv 1.x sources> python tools/check_official_segmentor.py [--json out.json]

Stages mmseg 0.20.2's ``EncoderDecoder`` (``whole_inference``, ``slide_inference``)
with its ``UPerHead`` and ``FCNHead`` around OUR ViT-Adapter backbone (one module
shared by both sides, wrapped as an mmseg backbone), loads our perturbed head
weights into mmseg's heads by name (the release's key table: ``decode_head.*``,
``auxiliary_head.*``: strict, nothing missing or unexpected) and compares the
logits of whole-image and sliding-window inference (relative max error).

What this proves: the head, the whole-image resize and the slide windows / count
division equal the release's code. What it does not: the backbone. The
release's segmentation ViT-Adapter adds each interaction's ViT map to its
output (ours, the detection variant, adds the last one: docs/segmentation.md),
so the backbone is shared here instead of compared.

mmseg needs only mmcv's Python part: ``mmcv.ops`` (compiled ops, imported by
mmseg's unused losses and heads) is replaced by a stub when it cannot be
imported. A scratch environment (nothing installed into the project's)::

    pip download --no-deps --no-build-isolation mmcv==1.4.8 mmsegmentation==0.20.2   # with setuptools < 70
    # unpack mmcv-1.4.8.tar.gz's mmcv/ and the mmseg wheel into DIR; pip install --target DIR2 addict yapf platformdirs
    PYTHONPATH=DIR:DIR2 python tools/check_official_segmentor.py
"""
import argparse
import json
import sys
import types

import torch

TOLERANCE = 1e-4


def import_mmseg():
    """(EncoderDecoder, BACKBONES) from mmseg 0.20.2, with a stub ``mmcv.ops`` if needed;
    ImportError naming what is missing."""
    try:
        import mmcv
    except ImportError as e:
        raise ImportError(f"mmcv (1.x) is not importable ({e}); see this tool's docstring") from None
    try:
        import mmcv.ops  # noqa: F401
    except Exception:  # no compiled extension: the ops are not used by UPerHead / FCNHead
        stub = types.ModuleType("mmcv.ops")

        def _placeholder(name):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (torch.nn.Module,), {})

        stub.__getattr__ = _placeholder
        sys.modules["mmcv.ops"] = stub
        mmcv.ops = stub
    import mmseg
    from mmseg.models.builder import BACKBONES
    from mmseg.models.segmentors import EncoderDecoder

    if mmseg.__version__ != "0.20.2":
        raise ImportError(f"mmseg {mmseg.__version__} found, the release pins 0.20.2")
    return EncoderDecoder, BACKBONES


def _perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


def build_ours(num_classes=5):
    """A small ViT-Adapter + UperNet from configs/common/models/upernet_vit_adapter.py, perturbed."""
    import os

    from detectron2.config import LazyConfig, instantiate

    from vit_adapter import REPO_ROOT

    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs", "common", "models", "upernet_vit_adapter.py"))
    cfg.model.backbone.update(embed_dim=64, depth=4, num_heads=2, deform_num_heads=4, conv_inplane=16,
                              pretrain_size=64, drop_path_rate=0.0, norm="BN",
                              interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]])
    cfg.model.sem_seg_head.update(num_classes=num_classes, channels=32, aux_channels=16, norm="BN")
    cfg.model.update(crop_size=64, stride=43)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    _perturb(model)
    return model


def build_release(ours, EncoderDecoder, BACKBONES):
    """mmseg's EncoderDecoder with the release's head configs (upernet_r50 base + ViT-Adapter
    overrides) around our backbone, weights loaded strictly from ours."""
    from mmcv import ConfigDict

    head = ours.sem_seg_head
    d, c, a, k = ours.backbone.embed_dim, head.decode_head.conv_seg.in_channels, \
        head.auxiliary_head.conv_seg.in_channels, head.num_classes

    name = "_SharedViTAdapter"
    if name not in BACKBONES.module_dict:
        @BACKBONES.register_module(name=name)
        class _Shared(torch.nn.Module):
            def __init__(self, module=None):
                super().__init__()
                self.module = module

            def forward(self, x):
                return list(self.module(x).values())

            def init_weights(self, *args, **kwargs):
                pass

    norm = dict(type="BN", requires_grad=True)
    seg = EncoderDecoder(
        backbone=dict(type=name, module=ours.backbone),
        decode_head=dict(type="UPerHead", in_channels=[d] * 4, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                         channels=c, dropout_ratio=0.1, num_classes=k, norm_cfg=norm, align_corners=False,
                         loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
        auxiliary_head=dict(type="FCNHead", in_channels=d, in_index=2, channels=a, num_convs=1,
                            concat_input=False, dropout_ratio=0.1, num_classes=k, norm_cfg=norm,
                            align_corners=False,
                            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4)),
        test_cfg=ConfigDict(mode="slide", crop_size=tuple(ours.crop_size), stride=tuple(ours.stride)),
    ).eval()
    state = {k[len("sem_seg_head."):]: v for k, v in ours.state_dict().items() if k.startswith("sem_seg_head.")}
    result = seg.load_state_dict({**{k: v for k, v in seg.state_dict().items() if k.startswith("backbone.")},
                                  **state}, strict=True)
    return seg, result


def compare(height=96, width=160, seed=1):
    EncoderDecoder, BACKBONES = import_mmseg()
    ours = build_ours()
    release, _ = build_release(ours, EncoderDecoder, BACKBONES)
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))
    meta = [dict(ori_shape=(height, width, 3), img_shape=(height, width, 3), pad_shape=(height, width, 3),
                 flip=False)]
    out = {"input": [height, width], "crop_size": list(ours.crop_size), "stride": list(ours.stride)}
    with torch.no_grad():
        for mode, theirs, mine in (
            ("whole", release.whole_inference(x, meta, rescale=False), ours.network_scores(x)),
            ("slide", release.slide_inference(x, meta, rescale=False), ours.slide_scores(x)),
        ):
            rel = float((theirs - mine).abs().max() / theirs.abs().max())
            out[mode] = {"max_rel_error": rel, "shape": list(mine.shape), "ok": rel < TOLERANCE}
        # control: the comparison sees a change of one head weight (ours only)
        ours.sem_seg_head.decode_head.fpn_bottleneck.conv.weight.mul_(1.01)
        theirs, mine = release.whole_inference(x, meta, rescale=False), ours.network_scores(x)
        out["control_rel_error"] = float((theirs - mine).abs().max() / theirs.abs().max())
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    try:
        report = compare()
    except ImportError as e:
        sys.exit(f"check_official_segmentor.py: error: {e}")
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if not report["control_rel_error"] > TOLERANCE:
        sys.exit("check_official_segmentor.py: the control (one head weight changed) went unnoticed")
    if not (report["whole"]["ok"] and report["slide"]["ok"]):
        sys.exit(f"check_official_segmentor.py: logits differ by more than {TOLERANCE} (relative)")
    return report


if __name__ == "__main__":
    main()
