"""DINOv2 weights (patch 14) into the patch-16 DINOv2-Adapter configs.

The checkpoints are made here from timm's DINOv2 definitions (no download):
``timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518)``
has Meta's hub names except ``mask_token``, which the hub file adds.
"""
import os

import pytest
import timm
import torch
import torch.nn.functional as F
from checkpoint_fixtures import one_thread  # noqa: F401 (fixture)
from detectron2.config import LazyConfig, instantiate

from vit_adapter.checkpoint.checkpointer import CheckpointMismatchError, ViTAdapterCheckpointer
from vit_adapter.checkpoint.dinov2 import adapt_dinov2_state_dict, resize_patch_kernel
from vit_adapter.checkpoint.imagenet import convert_imagenet_vit_state_dict
from vit_adapter.modeling.vit import VisionTransformer
from conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = os.path.join(REPO_ROOT, "configs", "COCO", "mask_rcnn_dinov2_adapter_{}_3x_ms.py")


def _randomised(state_dict, seed=0):
    """Every tensor random (timm's init has constant gammas / zero biases: a wrong copy would pass)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.02 for k, v in state_dict.items()}


def _hub_layout(seed=0, **timm_kwargs):
    timm_vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518, **timm_kwargs)
    sd = _randomised(timm_vit.state_dict(), seed)
    sd["mask_token"] = torch.zeros(1, 384)  # Meta's hub file has it, timm drops it
    return sd


def _release_14to16(sd):
    """What the release's detection/convert_14to16.py writes (its steps, restated)."""
    out = {k.replace("ls1.gamma", "gamma1").replace("ls2.gamma", "gamma2"): v
           for k, v in sd.items() if "mask_token" not in k}
    out["patch_embed.proj.weight"] = F.interpolate(sd["patch_embed.proj.weight"], size=(16, 16), mode="bilinear",
                                                   align_corners=False)
    return out


@pytest.mark.parametrize("layout", ["hub", "release_14to16"])
def test_hub_layout_loads_into_the_s_config(tmp_path, layout):
    sd = _hub_layout()
    assert sd["patch_embed.proj.weight"].shape == (384, 3, 14, 14) and sd["pos_embed"].shape == (1, 1370, 384)
    path = str(tmp_path / "dinov2_vits14_pretrain.pth")
    torch.save(sd if layout == "hub" else _release_14to16(sd), path)
    cfg = LazyConfig.load(CONFIG.format("s"))
    cfg.model.backbone.bottom_up.norm = "BN"
    model = instantiate(cfg.model)
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    rep = ck.last_report
    assert rep["format"] == "imagenet_vit" and rep["pos_embed_resized"] is None  # 37 x 37 both sides
    dropped = ["cls_token", "mask_token", "norm.bias", "norm.weight"] if layout == "hub" else [
        "cls_token", "norm.bias", "norm.weight"]
    assert sorted(rep["dropped"]) == dropped
    assert rep["unexpected"] == []
    vit_keys = [k for k in model.state_dict() if k.startswith("backbone.bottom_up.") and
                k[len("backbone.bottom_up."):].startswith(("patch_embed.", "pos_embed", "blocks."))]
    assert len(vit_keys) == 2 + 1 + 12 * 14 and not set(vit_keys) & set(rep["missing"])
    assert set(vit_keys) <= set(rep["loaded"])
    vit = model.backbone.bottom_up
    want = F.interpolate(sd["patch_embed.proj.weight"], size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(vit.patch_embed.proj.weight, want)  # the release's convert_14to16.py
    assert torch.equal(vit.pos_embed, sd["pos_embed"])
    for i in (0, 11):
        assert torch.equal(vit.blocks[i].gamma1, sd[f"blocks.{i}.ls1.gamma"])
        assert torch.equal(vit.blocks[i].gamma2, sd[f"blocks.{i}.ls2.gamma"])
        assert torch.equal(vit.blocks[i].attn.qkv.weight, sd[f"blocks.{i}.attn.qkv.weight"])
    assert any("14x14 -> 16x16 (bilinear)" in n for n in rep["notes"]) == (layout == "hub")


def test_compare_tool_bilinear_keeps_direction_pinv_keeps_scale():
    from vit_adapter.tools.compare_patch_resize import compare, smooth_images

    k = torch.randn(16, 3, 14, 14, generator=torch.Generator().manual_seed(0)) * 0.02
    res = compare(k, smooth_images(2, 14 * 4), grid=4)
    mean_cos, _, ratio = res[("pinv", "bicubic-aa")]
    assert mean_cos > 0.999 and abs(ratio - 1) < 0.01  # FlexiViT's exact case
    mean_cos, _, ratio = res[("bilinear", "bilinear")]
    assert mean_cos > 0.95 and 1.15 < ratio < 1.4  # unscaled kernel: 256 instead of 196 pixels


def test_pinv_option_is_timms_flexivit_resample():
    from timm.layers import resample_patch_embed

    w = torch.randn(8, 3, 14, 14)
    got = resize_patch_kernel(w, (16, 16), "pinv")
    torch.testing.assert_close(got, resample_patch_embed(w, [16, 16], interpolation="bicubic", antialias=True))
    vit = VisionTransformer(pretrain_size=64, embed_dim=8, depth=1, num_heads=2)
    out, rep = convert_imagenet_vit_state_dict({"patch_embed.proj.weight": w}, vit, "pinv")
    torch.testing.assert_close(out["patch_embed.proj.weight"], got)
    with pytest.raises(ValueError, match="patch kernel resize must be one of"):
        resize_patch_kernel(w, (16, 16), "nearest")


def test_our_blocks_equal_timms_dinov2_blocks():
    """Same weights, same patch tokens: our ViT (patch 14, global attention) == timm's DINOv2."""
    torch.manual_seed(0)
    timm_vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518, depth=3).eval()
    timm_vit.load_state_dict(_randomised(timm_vit.state_dict()))
    ours = VisionTransformer(pretrain_size=518, patch_size=14, embed_dim=384, depth=3, num_heads=6).eval()
    sd, _ = convert_imagenet_vit_state_dict(timm_vit.state_dict(), ours)
    missing, unexpected = ours.load_state_dict(sd, strict=False)
    assert missing == [] and unexpected == []
    img = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        x, H, W = ours.embed(img)
        ref = timm_vit.patch_embed(img) + timm_vit.pos_embed[:, 1:]  # no cls token in the detection ViT
        torch.testing.assert_close(x, ref, atol=1e-5, rtol=1e-5)
        a, b = x, ref
        for ours_blk, timm_blk in zip(ours.blocks, timm_vit.blocks):
            a, b = ours_blk(a, H, W), timm_blk(b)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layout", ["timm_reg4", "meta_reg4", "meta_chunked"])
def test_register_and_chunked_layouts(layout):
    vit = VisionTransformer(pretrain_size=592, embed_dim=384, depth=2, num_heads=6)
    if layout == "timm_reg4":
        timm_vit = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=518, depth=2)
        sd = _randomised(timm_vit.state_dict())
        assert sd["pos_embed"].shape == (1, 1369, 384)  # no cls position
    else:
        sd = _hub_layout(depth=2)
        if layout == "meta_reg4":
            sd["register_tokens"] = torch.randn(1, 4, 384)
        else:  # DINOv2 training checkpoints: blocks.<chunk>.<index>.*
            sd = {(k.replace("blocks.", "blocks.0.", 1) if k.startswith("blocks.") else k): v for k, v in sd.items()}
    out, rep = convert_imagenet_vit_state_dict(sd, vit)
    missing, unexpected = vit.load_state_dict(out, strict=False)
    assert missing == [] and unexpected == []
    assert not {"reg_token", "register_tokens"} & set(out)
    if layout != "meta_chunked":
        assert {"cls_token", "reg_token"} <= set(rep["dropped"])
    if layout == "timm_reg4":  # the unused cls slot is zero, the grid is the checkpoint's
        assert torch.equal(vit.pos_embed[:, 0], torch.zeros(1, 384))
        assert torch.equal(vit.pos_embed[:, 1:], sd["pos_embed"])
    assert torch.equal(vit.blocks[1].gamma2, sd["blocks.1.ls2.gamma"] if layout != "meta_chunked" else sd["blocks.0.1.ls2.gamma"])


def test_vit_g_swiglu_is_refused_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match="SwiGLU MLP .*DINOv2 ViT-g.*GELU"):
        adapt_dinov2_state_dict({"blocks.0.mlp.w12.weight": torch.zeros(2, 2)}, 16)
    sd = _hub_layout(depth=1)
    sd["blocks.0.mlp.w12.weight"] = sd.pop("blocks.0.mlp.fc1.weight")
    path = str(tmp_path / "g.pth")
    torch.save(sd, path)
    cfg = LazyConfig.load(CONFIG.format("s"))
    with torch.device("meta"):
        model = instantiate(cfg.model)
    with pytest.raises(CheckpointMismatchError, match="SwiGLU"):
        ViTAdapterCheckpointer(model).load(path)


@pytest.mark.parametrize("size, rate, depth", [("s", 0.70, 12), ("b", 0.60, 12), ("l", 0.65, 24)])
def test_layer_decay_groups_of_the_dinov2_configs(size, rate, depth):
    cfg = LazyConfig.load(CONFIG.format(size))
    with torch.device("meta"):
        model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    groups = instantiate(cfg.optimizer.params)
    scale = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    bb = "backbone.bottom_up."
    assert scale[bb + "patch_embed.proj.weight"] == pytest.approx(rate ** (depth + 1))
    assert scale[bb + "pos_embed"] == pytest.approx(rate ** (depth + 1))
    for i in (0, depth // 2, depth - 1):
        assert scale[f"{bb}blocks.{i}.attn.qkv.weight"] == pytest.approx(rate ** (depth - i))
        assert scale[f"{bb}blocks.{i}.gamma1"] == pytest.approx(rate ** (depth - i))
    for name in (bb + "level_embed", bb + "spm.stem.0.weight", bb + "interactions.0.injector.gamma",
                 "backbone.fpn_lateral2.weight", "roi_heads.mask_head.predictor.weight"):
        assert scale[name] == 1.0
    assert len({round(s, 12) for s in scale.values()}) == depth + 2
