"""ViTAdapter / PlainViTBackbone as detectron2 backbones."""
import pytest
import torch
from detectron2.modeling import Backbone, ShapeSpec

from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS, PlainViTBackbone, ViTAdapter
from vit_adapter.modeling.simple_feature_pyramid import SimpleFeaturePyramid
from vit_adapter.modeling.vit import VisionTransformer
from conftest import REPO_ROOT

# A tiny ViT-Adapter: every mechanism of the real ones (windows with padding,
# global blocks, 4 interactions, extra extractors, ConvFFN), seconds to run.
TINY = dict(
    embed_dim=24, depth=4, num_heads=2, deform_num_heads=3, n_points=2, conv_inplane=8,
    window_size=3, window_block_indexes=[0, 2], interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
    drop_path_rate=0.0, norm="BN",
)


def tiny(**kw):
    torch.manual_seed(0)
    return ViTAdapter(**{**TINY, **kw})


@pytest.mark.parametrize("hw", [(64, 96), (96, 64), (32, 32), (64, 64)])
def test_output_shapes_and_strides(hw):
    m = tiny().eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, *hw))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, spec in m.output_shape().items():
        assert out[name].shape == (2, spec.channels, hw[0] // spec.stride, hw[1] // spec.stride)


def test_output_shape_and_padding_contract():
    m = tiny(out_features=["res3", "res5"])
    assert isinstance(m, Backbone) and isinstance(m, VisionTransformer)
    assert m.output_shape() == {"res3": ShapeSpec(channels=24, stride=8), "res5": ShapeSpec(channels=24, stride=32)}
    assert m.size_divisibility == 32
    assert m.padding_constraints == {"size_divisibility": 32, "square_size": 0}
    assert set(m(torch.randn(1, 3, 32, 64))) == {"res3", "res5"}


@pytest.mark.parametrize(
    "shape, match",
    [((1, 3, 16, 64), "at least 32"), ((1, 3, 48, 64), "multiples of 32"), ((1, 3, 64, 40), "multiples of 32"),
     ((1, 1, 64, 64), r"\(B, 3, H, W\)"), ((3, 64, 64), r"\(B, 3, H, W\)")],
)
def test_bad_image_sizes_give_clear_errors(shape, match):
    with pytest.raises(ValueError, match=match):
        tiny()(torch.randn(*shape))


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(interaction_indexes=[[0, 1], [2, 4]]), "interaction_indexes"),
     (dict(out_features=["res6"]), "out_features"),
     (dict(patch_size=8), "patch_size")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


def test_vit_arguments_pass_through_with_vit_s_defaults():
    # ViTAdapter takes every VisionTransformer argument; unset ones default to ViT-S.
    m = ViTAdapter(depth=2, window_block_indexes=[0], interaction_indexes=[[0, 0], [1, 1]], qkv_bias=False,
                   mlp_ratio=2.0, norm="BN")
    assert m.embed_dim == 384 and len(m.blocks) == 2 and m.blocks[0].attn.qkv.bias is None
    assert m.blocks[0].mlp.fc1.out_features == 768 and m.drop_path_rate == 0.2
    with pytest.raises(TypeError, match="embed_dims"):
        ViTAdapter(embed_dims=96)


def test_injectors_start_as_identity_on_the_vit():
    """gamma = 0: the ViT tokens inside ViT-Adapter equal the plain ViT's."""
    m = tiny().eval()
    assert all(blk.injector.gamma.abs().max() == 0 for blk in m.interactions)
    seen = {}
    m.blocks[-1].register_forward_hook(lambda mod, args, out: seen.setdefault("x", out))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        m(x)
        plain = VisionTransformer.forward(m, x)  # same weights, no adapter
    torch.testing.assert_close(seen["x"].transpose(1, 2).reshape(plain.shape), plain)


def test_forward_backward_finite_gradients():
    m = tiny(drop_path_rate=0.1).train()
    out = m(torch.randn(2, 3, 64, 96))
    sum((v.float() ** 2).mean() for v in out.values()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), name
    # the adapter and the ViT both learn (injector attention is gated by gamma = 0 at init)
    assert m.interactions[0].injector.gamma.grad.abs().sum() > 0
    assert m.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert m.spm.stem[0].weight.grad.abs().sum() > 0


def test_activation_checkpointing_same_outputs_and_gradients():
    a, b = tiny(init_values=0.1), tiny(init_values=0.1, with_cp=True)
    b.load_state_dict(a.state_dict())
    assert all(blk.with_cp for blk in b.blocks)
    assert all(i.injector.with_cp and i.extractor.with_cp for i in b.interactions)
    x = torch.randn(2, 3, 32, 64)
    outs = []
    for m in (a, b):
        o = m.train()(x)
        sum((v ** 2).mean() for v in o.values()).backward()
        outs.append(o)
    for k in outs[0]:
        torch.testing.assert_close(outs[0][k], outs[1][k])
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)
    # The checkpointed stem / output stage recompute their BatchNorms in the
    # backward: running statistics must still be updated exactly once.
    for (name, ba), bb in zip(a.named_buffers(), b.buffers()):
        torch.testing.assert_close(ba, bb, rtol=0, atol=0, msg=name)
    assert int(b.spm.stem[1].num_batches_tracked) == 1 and int(b.norm1.num_batches_tracked) == 1


def _official_keys(depth, n_inter, extra=True):
    """State-dict keys of the released detection ViTAdapter, enumerated from
    detection/mmdet_custom/models/backbones/{vit_adapter,adapter_modules,base/vit}.py."""
    wb = ("weight", "bias")
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"pos_embed", "level_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "up.weight", "up.bias"}
    for i in range(depth):
        keys |= {f"blocks.{i}.gamma1", f"blocks.{i}.gamma2"}
        keys |= {f"blocks.{i}.{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
                 for p in wb}
    keys |= {f"spm.stem.{i}.weight" for i in (0, 3, 6)} | {f"spm.stem.{i}.{p}" for i in (1, 4, 7) for p in bn}
    for s in (2, 3, 4):
        keys |= {f"spm.conv{s}.0.weight"} | {f"spm.conv{s}.1.{p}" for p in bn}
    keys |= {f"spm.fc{s}.{p}" for s in (1, 2, 3, 4) for p in wb}
    keys |= {f"norm{s}.{p}" for s in (1, 2, 3, 4) for p in bn}
    attn = [f"attn.{m}.{p}" for m in ("sampling_offsets", "attention_weights", "value_proj", "output_proj")
            for p in wb]
    norms = [f"{n}.{p}" for n in ("query_norm", "feat_norm") for p in wb]
    ext = attn + norms + [f"{m}.{p}" for m in ("ffn.fc1", "ffn.dwconv.dwconv", "ffn.fc2", "ffn_norm") for p in wb]
    for k in range(n_inter):
        keys |= {f"interactions.{k}.injector.{s}" for s in attn + norms + ["gamma"]}
        keys |= {f"interactions.{k}.extractor.{s}" for s in ext}
    if extra:
        keys |= {f"interactions.{n_inter - 1}.extra_extractors.{j}.{s}" for j in (0, 1) for s in ext}
    return keys


def test_state_dict_keys_are_the_official_names():
    m = tiny()
    assert set(m.state_dict()) == _official_keys(depth=4, n_inter=4)


@pytest.mark.parametrize("size", ["T", "S", "B", "L"])
def test_presets_build_with_official_names_and_shapes(size):
    p = VIT_ADAPTER_PRESETS[size]
    with torch.device("meta"):  # no memory, no init cost
        m = ViTAdapter(**p, norm="BN")
    sd = m.state_dict()
    assert set(sd) == _official_keys(depth=p["depth"], n_inter=4)
    D = p["embed_dim"]
    grid = p["pretrain_size"] // 16
    assert sd["pos_embed"].shape == (1, grid * grid + 1, D)
    v = int(D * p["deform_ratio"])
    assert sd["interactions.0.injector.attn.value_proj.weight"].shape == (v, D)
    assert sd["interactions.0.injector.attn.sampling_offsets.weight"].shape == (p["deform_num_heads"] * 3 * 4 * 2, D)
    assert sd["interactions.0.extractor.attn.sampling_offsets.weight"].shape == (p["deform_num_heads"] * 4 * 2, D)
    assert sd["interactions.0.extractor.ffn.fc1.weight"].shape == (D // 4, D)
    windowed = [i for i, blk in enumerate(m.blocks) if blk.attn.window_size == 14]
    assert [i for i in range(p["depth"]) if i not in windowed] == [
        i for i in range(p["depth"]) if i % (p["depth"] // 4) == p["depth"] // 4 - 1]


def test_plain_vit_backbone_and_simple_feature_pyramid():
    torch.manual_seed(0)
    net = PlainViTBackbone(embed_dim=16, depth=2, num_heads=2, window_size=3, window_block_indexes=[0])
    assert net.output_shape() == {"last_feat": ShapeSpec(channels=16, stride=16)}
    assert net.size_divisibility == 16
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    sfp = SimpleFeaturePyramid(net, "last_feat", 8, (4.0, 2.0, 1.0, 0.5), top_block=LastLevelMaxPool(), norm="LN")
    assert sfp.size_divisibility == 32
    out = sfp(torch.randn(2, 3, 64, 96))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    for name, spec in sfp.output_shape().items():
        # p6 is a stride-2 max-pool of p5 (kernel 1): ceil division
        assert out[name].shape == (2, 8, -(-64 // spec.stride), -(-96 // spec.stride)), name
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.randn(1, 3, 40, 64))


@pytest.mark.parametrize("config", ["mask_rcnn_vit_adapter.py", "mask_rcnn_vit_plain.py"])
def test_model_config_trains_one_step_and_predicts_on_cpu(config):
    """The real model configs (SyncBN included) in one CPU process, tiny backbone."""
    import os

    from detectron2.config import LazyConfig, instantiate
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    root = REPO_ROOT
    cfg = LazyConfig.load(os.path.join(root, "configs", "common", "models", config))
    if config == "mask_rcnn_vit_plain.py":
        cfg.model.backbone.net.update(embed_dim=24, depth=2, num_heads=2, window_size=3, window_block_indexes=[0])
    else:
        cfg.model.backbone.bottom_up.update({k: v for k, v in TINY.items() if k != "norm"})  # keep "SyncBN"
    cfg.model.roi_heads.batch_size_per_image = 32
    cfg.model.proposal_generator.post_nms_topk = (32, 8)
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    inst = Instances((64, 96))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 50.0, 40.0]]))
    inst.gt_classes = torch.tensor([3])
    mask = torch.zeros(1, 64, 96, dtype=torch.bool)
    mask[:, 10:40, 10:50] = True
    inst.gt_masks = BitMasks(mask)
    img = torch.rand(3, 64, 96) * 255
    with EventStorage():
        losses = model([{"image": img, "instances": inst, "height": 64, "width": 96}])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([{"image": img, "height": 64, "width": 96}])[0]["instances"]
    assert out.image_size == (64, 96)
