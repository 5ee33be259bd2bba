"""Fixtures shared by the checkpoint tests: tiny detectors from the real configs,
and official-layout (mmdetection) state dicts written from the official module
definitions, independently of our model code.

Official names and shapes (czczup/ViT-Adapter ``detection/``, mmdetection 2.22):

* backbone: ``mmdet_custom/models/backbones/vit_adapter.py`` (ViTAdapter on
  ``base/vit.py`` TIMMVisionTransformer, ``adapter_modules.py``,
  ``ops/modules/ms_deform_attn.py``);
* neck: mmdet ``FPN`` (``lateral_convs.K`` / ``fpn_convs.K`` are ConvModules:
  ``.conv`` with bias, no norm);
* rpn_head: mmdet ``RPNHead`` (``rpn_conv`` 3x3, ``rpn_cls`` A x 1 (sigmoid),
  ``rpn_reg`` A x 4);
* roi_head: ``StandardRoIHead`` with ``Shared2FCBBoxHead`` (``shared_fcs.0/1``,
  ``fc_cls`` C+1, ``fc_reg`` 4C) and ``FCNMaskHead`` (``convs.K.conv``,
  ``upsample`` deconv, ``conv_logits`` C); ``CascadeRoIHead`` with three
  ``ConvFCBBoxHead`` (4 shared ConvModules with SyncBN: ``.conv`` without bias
  + ``.bn``, 1 shared fc) and one FCNMaskHead per stage (``mask_head.S.*``).
"""
import os
from collections.abc import MutableSequence

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASK_RCNN_CFG = os.path.join(REPO, "configs/common/models/mask_rcnn_vit_adapter.py")
CASCADE_CFG = os.path.join(REPO, "configs/common/models/cascade_mask_rcnn_vit_adapter.py")

@pytest.fixture
def one_thread():
    """Run the test on one intra-op thread (tiny tensors on a shared 2-core box: threads only spin)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# A tiny ViT-Adapter: 4 blocks of width 48, one interaction per block, 32 px pre-training grid.
TINY = dict(
    embed_dim=48,
    depth=4,
    num_heads=3,
    deform_num_heads=6,
    deform_ratio=1.0,
    drop_path_rate=0.0,
    window_block_indexes=[0, 2],
    window_size=4,
    interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
    pretrain_size=32,
    conv_inplane=16,
    norm="BN",
)


def tiny_model_cfg(cfg_file=MASK_RCNN_CFG, num_classes=3, **backbone):
    cfg = LazyConfig.load(cfg_file)
    model = cfg.model
    model.backbone.bottom_up.update({**TINY, **backbone})
    model.roi_heads.num_classes = num_classes
    # few proposals / RoIs / detections: the heads' parameters stay as released, the compute is tiny
    model.proposal_generator.pre_nms_topk = (256, 128)
    model.proposal_generator.post_nms_topk = (64, 32)
    model.roi_heads.batch_size_per_image = 32
    predictors = model.roi_heads.box_predictor if "box_predictor" in model.roi_heads else model.roi_heads.box_predictors
    for p in predictors if isinstance(predictors, MutableSequence) else [predictors]:
        p.test_topk_per_image = 10
    return model


def build_tiny(cfg_file=MASK_RCNN_CFG, num_classes=3, **backbone):
    model = instantiate(tiny_model_cfg(cfg_file, num_classes, **backbone))
    model.eval()
    return model


# --------------------------------------------------------------------------- official layout


def _bn(prefix, c, out):
    out[prefix + "weight"] = (c,)
    out[prefix + "bias"] = (c,)
    out[prefix + "running_mean"] = (c,)
    out[prefix + "running_var"] = (c,)
    out[prefix + "num_batches_tracked"] = ()


def _linear(prefix, cin, cout, out, bias=True):
    out[prefix + "weight"] = (cout, cin)
    if bias:
        out[prefix + "bias"] = (cout,)


def _conv(prefix, cin, cout, k, out, bias=True, groups=1):
    out[prefix + "weight"] = (cout, cin // groups, k, k)
    if bias:
        out[prefix + "bias"] = (cout,)


def _msdeform(prefix, d, heads, levels, points, ratio, out):
    _linear(prefix + "sampling_offsets.", d, heads * levels * points * 2, out)
    _linear(prefix + "attention_weights.", d, heads * levels * points, out)
    _linear(prefix + "value_proj.", d, int(d * ratio), out)
    _linear(prefix + "output_proj.", int(d * ratio), d, out)


def _extractor(prefix, d, heads, points, ratio, cffn_ratio, out):
    out[prefix + "query_norm.weight"] = (d,)
    out[prefix + "query_norm.bias"] = (d,)
    out[prefix + "feat_norm.weight"] = (d,)
    out[prefix + "feat_norm.bias"] = (d,)
    _msdeform(prefix + "attn.", d, heads, 1, points, ratio, out)
    h = int(d * cffn_ratio)
    _linear(prefix + "ffn.fc1.", d, h, out)
    _conv(prefix + "ffn.dwconv.dwconv.", h, h, 3, out, groups=h)
    _linear(prefix + "ffn.fc2.", h, d, out)
    out[prefix + "ffn_norm.weight"] = (d,)
    out[prefix + "ffn_norm.bias"] = (d,)


def official_backbone_shapes(
    embed_dim, depth, pretrain_size, conv_inplane=64, deform_num_heads=6, n_points=4, deform_ratio=1.0,
    cffn_ratio=0.25, num_interactions=4, patch=16, mlp_ratio=4, **_,
):
    """Official ViTAdapter state-dict names -> shapes (``backbone.`` prefix not included)."""
    d, c0, out = embed_dim, conv_inplane, {}
    g = pretrain_size // patch
    out["pos_embed"] = (1, g * g + 1, d)  # num_tokens = 1 (cls slot, unused)
    _conv("patch_embed.proj.", 3, d, patch, out)
    for i in range(depth):
        p = f"blocks.{i}."
        out[p + "gamma1"] = (d,)
        out[p + "gamma2"] = (d,)
        for n in ("norm1.", "norm2."):
            out[p + n + "weight"] = (d,)
            out[p + n + "bias"] = (d,)
        _linear(p + "attn.qkv.", d, 3 * d, out)
        _linear(p + "attn.proj.", d, d, out)
        _linear(p + "mlp.fc1.", d, int(d * mlp_ratio), out)
        _linear(p + "mlp.fc2.", int(d * mlp_ratio), d, out)
    out["level_embed"] = (3, d)
    # SpatialPriorModule: stem = conv, SyncBN, ReLU x3 + maxpool -> indexes 0/1, 3/4, 6/7
    _conv("spm.stem.0.", 3, c0, 3, out, bias=False)
    _bn("spm.stem.1.", c0, out)
    _conv("spm.stem.3.", c0, c0, 3, out, bias=False)
    _bn("spm.stem.4.", c0, out)
    _conv("spm.stem.6.", c0, c0, 3, out, bias=False)
    _bn("spm.stem.7.", c0, out)
    for name, cin, cout in (("conv2", c0, 2 * c0), ("conv3", 2 * c0, 4 * c0), ("conv4", 4 * c0, 4 * c0)):
        _conv(f"spm.{name}.0.", cin, cout, 3, out, bias=False)
        _bn(f"spm.{name}.1.", cout, out)
    for name, cin in (("fc1", c0), ("fc2", 2 * c0), ("fc3", 4 * c0), ("fc4", 4 * c0)):
        _conv(f"spm.{name}.", cin, d, 1, out)
    for k in range(num_interactions):
        p = f"interactions.{k}."
        out[p + "injector.gamma"] = (d,)
        for n in ("query_norm.", "feat_norm."):
            out[p + "injector." + n + "weight"] = (d,)
            out[p + "injector." + n + "bias"] = (d,)
        _msdeform(p + "injector.attn.", d, deform_num_heads, 3, n_points, deform_ratio, out)
        _extractor(p + "extractor.", d, deform_num_heads, n_points, deform_ratio, cffn_ratio, out)
        if k == num_interactions - 1:
            for j in range(2):
                _extractor(f"{p}extra_extractors.{j}.", d, deform_num_heads, n_points, deform_ratio, cffn_ratio, out)
    out["up.weight"] = (d, d, 2, 2)  # ConvTranspose2d(D, D, 2, 2): (in, out, k, k)
    out["up.bias"] = (d,)
    for i in range(1, 5):
        _bn(f"norm{i}.", d, out)
    return out


def official_detector_shapes(backbone, num_classes, cascade=False, cascade_class_agnostic=False):
    """Official Mask R-CNN / Cascade Mask R-CNN state-dict names -> shapes."""
    out = {"backbone." + k: v for k, v in official_backbone_shapes(**backbone).items()}
    d, c = backbone["embed_dim"], num_classes
    for k in range(4):  # FPN, in_channels [D]*4, out 256, num_outs 5 (p6 = max-pool, no params)
        _conv(f"neck.lateral_convs.{k}.conv.", d, 256, 1, out)
        _conv(f"neck.fpn_convs.{k}.conv.", 256, 256, 3, out)
    _conv("rpn_head.rpn_conv.", 256, 256, 3, out)
    _conv("rpn_head.rpn_cls.", 256, 3, 1, out)  # 3 anchors x 1 (use_sigmoid)
    _conv("rpn_head.rpn_reg.", 256, 12, 1, out)
    if not cascade:
        _linear("roi_head.bbox_head.shared_fcs.0.", 256 * 7 * 7, 1024, out)
        _linear("roi_head.bbox_head.shared_fcs.1.", 1024, 1024, out)
        _linear("roi_head.bbox_head.fc_cls.", 1024, c + 1, out)
        _linear("roi_head.bbox_head.fc_reg.", 1024, 4 * c, out)
        mask_prefixes = ["roi_head.mask_head."]
    else:
        for s in range(3):
            p = f"roi_head.bbox_head.{s}."
            for k in range(4):
                _conv(f"{p}shared_convs.{k}.conv.", 256, 256, 3, out, bias=False)  # ConvModule + SyncBN
                _bn(f"{p}shared_convs.{k}.bn.", 256, out)
            _linear(p + "shared_fcs.0.", 256 * 7 * 7, 1024, out)
            _linear(p + "fc_cls.", 1024, c + 1, out)
            _linear(p + "fc_reg.", 1024, 4 if cascade_class_agnostic else 4 * c, out)
        mask_prefixes = [f"roi_head.mask_head.{s}." for s in range(3)]
    for p in mask_prefixes:
        for k in range(4):
            _conv(f"{p}convs.{k}.conv.", 256, 256, 3, out)
        out[p + "upsample.weight"] = (256, 256, 2, 2)
        out[p + "upsample.bias"] = (256,)
        _conv(p + "conv_logits.", 256, c, 1, out)
    return out


def random_state_dict(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(shape, generator=g) * 0.05
    return sd


MMDET_MASK_RCNN_CONFIG_TEXT = """
model = dict(
    rpn_head=dict(type='RPNHead', bbox_coder=dict(type='DeltaXYWHBBoxCoder',
        target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[1.0, 1.0, 1.0, 1.0])),
    roi_head=dict(bbox_head=dict(type='Shared2FCBBoxHead', bbox_coder=dict(type='DeltaXYWHBBoxCoder',
        target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[0.1, 0.1, 0.2, 0.2]))))
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
"""
