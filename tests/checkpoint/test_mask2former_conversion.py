"""The release's segmentation Mask2Former checkpoints -> our names.

The release-layout fixture is written from the release's module definitions
(mmseg_custom Mask2FormerHead / MSDeformAttnPixelDecoder with mmcv's
BaseTransformerLayer, FFN, MultiheadAttention, ConvModule(GN) and mmdet's
DetrTransformerDecoder), not from our model: a renamed or reshaped parameter
on either side shows up here."""
import os
import subprocess
import sys

import pytest
import torch
from checkpoint_fixtures import _conv, _linear, _msdeform, official_backbone_shapes, random_state_dict, TINY
from detectron2.config import LazyConfig, instantiate

from conftest import REPO_ROOT
from vit_adapter.checkpoint.official import (
    convert_official_mask2former_state_dict,
    is_official_mask2former_state_dict,
    is_official_state_dict,
)

CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "tiny_mask2former_vit_adapter.py")
HEAD = dict(in_channels=48, dim=32, heads=4, points=2, enc_layers=2, enc_ffn=64, dec_layers=3, dec_ffn=64,
            queries=8, num_classes=3)


def _norm(prefix, c, out):
    out[prefix + "weight"] = (c,)
    out[prefix + "bias"] = (c,)


def release_mask2former_head_shapes(in_channels, dim, heads, points, enc_layers, enc_ffn, dec_layers, dec_ffn,
                                    queries, num_classes, levels=3):
    """decode_head.* of the release's Mask2FormerHead (its module tree, by hand)."""
    out = {}
    pd = "decode_head.pixel_decoder."
    for k in range(levels):  # ConvModule(1x1, bias=True, GN): conv + gn
        _conv(f"{pd}input_convs.{k}.conv.", in_channels, dim, 1, out)
        _norm(f"{pd}input_convs.{k}.gn.", dim, out)
    for j in range(enc_layers):  # BaseTransformerLayer(self_attn, norm, ffn, norm)
        layer = f"{pd}encoder.layers.{j}."
        _msdeform(layer + "attentions.0.", dim, heads, levels, points, 1.0, out)
        _linear(layer + "ffns.0.layers.0.0.", dim, enc_ffn, out)
        _linear(layer + "ffns.0.layers.1.", enc_ffn, dim, out)
        _norm(layer + "norms.0.", dim, out)
        _norm(layer + "norms.1.", dim, out)
    out[pd + "level_encoding.weight"] = (levels, dim)
    _conv(pd + "lateral_convs.0.conv.", in_channels, dim, 1, out, bias=False)
    _norm(pd + "lateral_convs.0.gn.", dim, out)
    _conv(pd + "output_convs.0.conv.", dim, dim, 3, out, bias=False)
    _norm(pd + "output_convs.0.gn.", dim, out)
    _conv(pd + "mask_feature.", dim, dim, 1, out)
    td = "decode_head.transformer_decoder."
    for i in range(dec_layers):  # DetrTransformerDecoderLayer(cross_attn, norm, self_attn, norm, ffn, norm)
        layer = f"{td}layers.{i}."
        for a in (0, 1):
            out[f"{layer}attentions.{a}.attn.in_proj_weight"] = (3 * dim, dim)
            out[f"{layer}attentions.{a}.attn.in_proj_bias"] = (3 * dim,)
            _linear(f"{layer}attentions.{a}.attn.out_proj.", dim, dim, out)
        _linear(layer + "ffns.0.layers.0.0.", dim, dec_ffn, out)
        _linear(layer + "ffns.0.layers.1.", dec_ffn, dim, out)
        for n in range(3):
            _norm(f"{layer}norms.{n}.", dim, out)
    _norm(td + "post_norm.", dim, out)
    out["decode_head.query_embed.weight"] = (queries, dim)
    out["decode_head.query_feat.weight"] = (queries, dim)
    out["decode_head.level_embed.weight"] = (levels, dim)
    _linear("decode_head.cls_embed.", dim, num_classes + 1, out)
    for m in (0, 2, 4):
        _linear(f"decode_head.mask_embed.{m}.", dim, dim, out)
    return out


def _release_checkpoint(tmp_path, extra=None):
    shapes = {f"backbone.{k}": v for k, v in official_backbone_shapes(**TINY).items()}
    shapes.update(release_mask2former_head_shapes(**HEAD))
    sd = random_state_dict(shapes)
    sd.update(extra or {})
    path = str(tmp_path / "release_mask2former.pth")
    torch.save({"meta": {"CLASSES": ("a", "b", "c")}, "state_dict": sd}, path)
    return path, sd


def _model():
    model = instantiate(LazyConfig.load(CONFIG).model)
    return model.eval()


def test_release_layout_converts_with_nothing_missing_or_unexpected(tmp_path):
    _, sd = _release_checkpoint(tmp_path, extra={"backbone.blocks.0.attn.relative_position_index": torch.zeros(3)})
    assert is_official_mask2former_state_dict(sd) and not is_official_state_dict(sd)
    model = _model()
    out, report = convert_official_mask2former_state_dict({"state_dict": sd}, target_state_dict=model.state_dict())
    assert set(out) == set(model.state_dict())  # 0 missing, 0 unexpected
    assert report["num_classes"] == 3 and report["num_converted"] == len(sd) - 1
    assert any("relative_position_index" in n for n in report["notes"])
    # tensors land where they belong (a few by hand)
    pairs = {
        "decode_head.transformer_decoder.layers.1.attentions.1.attn.in_proj_weight":
            "sem_seg_head.predictor.layers.1.self_attn.in_proj_weight",
        "decode_head.transformer_decoder.layers.2.attentions.0.attn.out_proj.bias":
            "sem_seg_head.predictor.layers.2.cross_attn.out_proj.bias",
        "decode_head.transformer_decoder.layers.0.norms.2.weight": "sem_seg_head.predictor.layers.0.norm3.weight",
        "decode_head.transformer_decoder.post_norm.bias": "sem_seg_head.predictor.decoder_norm.bias",
        "decode_head.pixel_decoder.encoder.layers.1.ffns.0.layers.1.weight":
            "sem_seg_head.pixel_decoder.encoder.layers.1.ffn.fc2.weight",
        "decode_head.pixel_decoder.encoder.layers.0.norms.1.bias": "sem_seg_head.pixel_decoder.encoder.layers.0.norm2.bias",
        "decode_head.pixel_decoder.input_convs.2.gn.weight": "sem_seg_head.pixel_decoder.input_convs.2.norm.weight",
        "decode_head.pixel_decoder.level_encoding.weight": "sem_seg_head.pixel_decoder.level_embed.weight",
        "decode_head.cls_embed.weight": "sem_seg_head.predictor.class_embed.weight",
        "decode_head.mask_embed.4.bias": "sem_seg_head.predictor.mask_embed.4.bias",
        "backbone.spm.stem.0.weight": "backbone.spm.stem.0.weight",
    }
    for release, ours in pairs.items():
        assert torch.equal(out[ours], sd[release]), release
    model.load_state_dict(out, strict=True)


def test_unknown_key_and_wrong_size_are_refused(tmp_path):
    _, sd = _release_checkpoint(tmp_path, extra={"decode_head.conv_seg.weight": torch.zeros(3, 32, 1, 1)})
    with pytest.raises(ValueError, match="decode_head.conv_seg.weight"):
        convert_official_mask2former_state_dict({"state_dict": sd})
    del sd["decode_head.conv_seg.weight"]
    sd["decode_head.query_feat.weight"] = torch.zeros(16, 32)  # 16 queries, the model has 8
    with pytest.raises(ValueError, match="query_feat"):
        convert_official_mask2former_state_dict({"state_dict": sd}, target_state_dict=_model().state_dict())


def test_convert_tool_on_release_layout_file(tmp_path):
    path, _ = _release_checkpoint(tmp_path)
    dst = str(tmp_path / "converted.pth")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "convert_official_checkpoint.py"), path, dst,
         "--config", CONFIG],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "converted" in proc.stdout
    model = _model()
    state = torch.load(dst, weights_only=True)["model"]
    assert set(state) == set(model.state_dict())
