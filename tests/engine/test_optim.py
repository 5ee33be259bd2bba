"""vit_adapter.engine.optim: the official weight-decay exemptions and layer-wise lr decay."""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from vit_adapter.engine.optim import get_vit_adapter_param_groups, get_vit_layer_id
from conftest import REPO_ROOT

DEMO_CONFIG = os.path.join(REPO_ROOT, "configs", "demo", "mask_rcnn_vit_adapter_demo.py")


@pytest.fixture(scope="module")
def demo_model():
    cfg = LazyConfig.load(DEMO_CONFIG)
    return instantiate(cfg.model)  # ViT-Adapter (6 blocks) + FPN + Mask R-CNN heads


def _by_name(groups):
    return {n: g for g in groups for n in g["param_names"]}


def test_every_trainable_param_once(demo_model):
    groups = get_vit_adapter_param_groups(demo_model, base_lr=1e-4, weight_decay=0.05)
    names = [n for g in groups for n in g["param_names"]]
    assert len(names) == len(set(names))
    assert set(names) == {n for n, p in demo_model.named_parameters() if p.requires_grad}
    for g in groups:
        assert len(g["params"]) == len(g["param_names"])


def test_no_weight_decay_rules(demo_model):
    groups = _by_name(get_vit_adapter_param_groups(demo_model, base_lr=1e-4, weight_decay=0.05))
    params = dict(demo_model.named_parameters())
    bu = "backbone.bottom_up."
    for name in [
        bu + "pos_embed",
        bu + "level_embed",
        bu + "blocks.0.norm1.weight",
        bu + "blocks.0.gamma1",
        bu + "blocks.0.attn.qkv.bias",
        bu + "interactions.0.injector.gamma",
        bu + "interactions.0.extractor.query_norm.weight",
        bu + "spm.stem.1.weight",  # BatchNorm of the spatial prior module
        bu + "norm1.weight",
        "roi_heads.box_head.fc1.bias",
    ]:
        assert groups[name]["weight_decay"] == 0.0, name
    for name in [
        bu + "patch_embed.proj.weight",
        bu + "blocks.0.attn.qkv.weight",
        bu + "interactions.0.injector.attn.sampling_offsets.weight",
        bu + "spm.stem.0.weight",
        "roi_heads.box_head.fc1.weight",
        "backbone.fpn_lateral2.weight",
    ]:
        assert groups[name]["weight_decay"] == 0.05, name
    # The rule as a whole: decay exactly on the >= 2-D tensors other than the embeddings.
    for name, g in groups.items():
        expect = 0.0 if params[name].ndim <= 1 or name.endswith(("pos_embed", "level_embed")) else 0.05
        assert g["weight_decay"] == expect, name
    assert all(g["lr_scale"] == 1.0 for g in groups.values())


def _official_scale(name, depth, rate):
    """BEiT / official get_num_layer_for_vit with num_layers = depth + 2, on our names."""
    n = depth + 2
    short = name.replace("backbone.bottom_up.", "backbone.")
    if short in ("backbone.pos_embed", "backbone.cls_token") or short.startswith("backbone.patch_embed"):
        layer = 0
    elif short.startswith("backbone.blocks"):
        layer = int(short.split(".")[2]) + 1
    else:
        layer = n - 1
    return rate ** (n - layer - 1)


def test_layer_decay_matches_official(demo_model):
    depth, rate = 6, 0.8
    groups = get_vit_adapter_param_groups(
        demo_model, base_lr=1e-4, weight_decay=0.05, layer_decay_rate=rate, num_layers=depth
    )
    by_name = _by_name(groups)
    bu = "backbone.bottom_up."
    assert by_name[bu + "pos_embed"]["lr_scale"] == pytest.approx(rate**7)
    assert by_name[bu + "patch_embed.proj.weight"]["lr_scale"] == pytest.approx(rate**7)
    assert by_name[bu + "blocks.0.attn.qkv.weight"]["lr_scale"] == pytest.approx(rate**6)
    assert by_name[bu + "blocks.5.mlp.fc2.weight"]["lr_scale"] == pytest.approx(rate)
    assert by_name[bu + "level_embed"]["lr_scale"] == 1.0
    assert by_name[bu + "interactions.3.extra_extractors.0.ffn.fc1.weight"]["lr_scale"] == 1.0
    assert by_name["roi_heads.mask_head.predictor.weight"]["lr_scale"] == 1.0
    for name, g in by_name.items():
        assert g["lr_scale"] == pytest.approx(_official_scale(name, depth, rate)), name
        assert g["lr"] == pytest.approx(1e-4 * g["lr_scale"])
    # groups are merged per (scale, weight decay): 2 per block, embeddings, and the rest
    assert len(groups) == len({(g["lr_scale"], g["weight_decay"]) for g in groups})


def test_layer_id_only_inside_backbone():
    assert get_vit_layer_id("backbone.bottom_up.blocks.3.attn.qkv.weight", 12) == 4
    assert get_vit_layer_id("backbone.net.pos_embed", 12) == 0
    assert get_vit_layer_id("backbone.bottom_up.interactions.1.injector.gamma", 12) == 13
    assert get_vit_layer_id("roi_heads.box_head.blocks.0.weight", 12) == 13


def test_frozen_and_shared_params():
    lin = torch.nn.Linear(4, 4)
    model = torch.nn.ModuleDict({"a": lin, "b": lin, "c": torch.nn.Linear(4, 2)})
    model["c"].weight.requires_grad_(False)
    names = [n for g in get_vit_adapter_param_groups(model, 1e-3, 0.1) for n in g["param_names"]]
    assert sorted(names) == ["a.bias", "a.weight", "c.bias"]


def test_bad_layer_decay_arguments(demo_model):
    with pytest.raises(ValueError, match="num_layers"):
        get_vit_adapter_param_groups(demo_model, 1e-4, 0.05, layer_decay_rate=0.8)
    with pytest.raises(ValueError, match="layer_decay_rate"):
        get_vit_adapter_param_groups(demo_model, 1e-4, 0.05, layer_decay_rate=1.5, num_layers=6)


def test_optimizer_from_config(demo_model):
    cfg = LazyConfig.load(DEMO_CONFIG)
    cfg.optimizer.params.model = demo_model
    opt = instantiate(cfg.optimizer)
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.05}
    assert all(g["lr"] == pytest.approx(cfg.optimizer.lr) for g in opt.param_groups)
