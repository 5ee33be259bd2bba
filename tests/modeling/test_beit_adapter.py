"""BEiTAdapter backbone: both variants, any input size, with_cp, detectron2 contract."""
import pytest
import torch
from _random_params import randomize_

from vit_adapter.modeling import beit as beit_module
from vit_adapter.modeling.adapter_modules import InteractionBlock
from vit_adapter.modeling.beit_adapter import BEiTAdapter, InteractionBlockWithCls

TINY = dict(embed_dim=48, depth=4, num_heads=3, deform_num_heads=3, conv_inplane=16, init_values=0.5,
            interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], drop_path_rate=0.0, norm="BN")


def detection(**kw):
    return BEiTAdapter(**{**TINY, "window_attn": True, "window_size": [3, 3, 3, 6], **kw})


def segmentation(**kw):
    return BEiTAdapter(**{**TINY, "img_size": 64, "with_cls_token": True, **kw})


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _shapes(out):
    return {k: tuple(v.shape) for k, v in out.items()}


@pytest.mark.parametrize("build", [detection, segmentation])
@pytest.mark.parametrize("hw", [(64, 96), (96, 64), (128, 160)])
def test_any_multiple_of_32(build, hw):
    torch.manual_seed(0)
    model = randomize_(build()).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *hw))
    h, w = hw
    assert _shapes(out) == {f"res{i + 2}": (1, 48, h // s, w // s) for i, s in enumerate((4, 8, 16, 32))}
    assert all(torch.isfinite(v).all() for v in out.values())


def test_segmentation_uses_the_tables_as_stored_at_img_size(monkeypatch):
    """At img_size no resize runs (the release's computation); at another size every
    block's table is resized to the input's grid, and gradients reach the stored table."""
    calls = []
    real = beit_module.resize_relative_position_table

    def spy(table, src, dst, with_cls):
        calls.append((tuple(src), tuple(dst), with_cls))
        return real(table, src, dst, with_cls)

    monkeypatch.setattr(beit_module, "resize_relative_position_table", spy)
    model = randomize_(segmentation())
    model(torch.randn(1, 3, 64, 64))
    assert calls == []
    out = model(torch.randn(1, 3, 96, 128))
    assert calls == [((4, 4), (6, 8), True)] * 4
    sum(v.sum() for v in out.values()).backward()
    assert all(b.attn.relative_position_bias_table.grad.abs().sum() > 0 for b in model.blocks)


def test_segmentation_cls_token_reaches_the_outputs_through_the_blocks_only():
    torch.manual_seed(0)
    model = randomize_(segmentation()).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = model(x)
        model.cls_token.add_(torch.randn_like(model.cls_token))  # (a constant shift would vanish in LayerNorm)
        b = model(x)
    assert any((a[k] - b[k]).abs().max() > 1e-4 for k in a)
    assert isinstance(model.interactions[0], InteractionBlockWithCls)
    assert type(detection().interactions[0]) is InteractionBlock


@pytest.mark.parametrize("build", [detection, segmentation])
def test_with_cp_same_outputs_and_grads(build):
    torch.manual_seed(0)
    plain = randomize_(build()).double().train()
    ckpt = build(with_cp=True).double().train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    outs = [m(x) for m in (plain, ckpt)]
    for k in outs[0]:
        assert torch.allclose(outs[0][k], outs[1][k], atol=1e-10)
    for m, out in zip((plain, ckpt), outs):
        sum((v * v).sum() for v in out.values()).backward()
    grads = dict(plain.named_parameters())
    for n, p in ckpt.named_parameters():
        assert torch.allclose(p.grad, grads[n].grad, atol=1e-8), n


def test_backbone_contract():
    model = segmentation(out_features=["res3", "res5"])
    shapes = model.output_shape()
    assert set(shapes) == {"res3", "res5"}
    assert (shapes["res3"].channels, shapes["res3"].stride, shapes["res5"].stride) == (48, 8, 32)
    assert model.size_divisibility == 32
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 64, 80))
    with pytest.raises(ValueError, match="out_features"):
        segmentation(out_features=["res6"])
    with pytest.raises(ValueError, match="interaction_indexes"):
        segmentation(interaction_indexes=[[0, 4]])
    with pytest.raises(ValueError, match="needs 4 interactions"):
        segmentation(interaction_indexes=[[0, 1], [2, 3]])


def test_release_names():
    keys = set(segmentation().state_dict())
    for k in ("cls_token", "level_embed", "spm.stem.0.weight", "interactions.0.injector.gamma",
              "interactions.3.extra_extractors.1.ffn.fc1.weight", "up.weight", "norm4.running_var",
              "blocks.2.attn.relative_position_bias_table", "blocks.2.gamma_2", "patch_embed.proj.weight"):
        assert k in keys, k
    assert "cls_token" not in set(detection().state_dict())


def test_inference_mode_first_then_training():
    """Cached indices / resize matrices made under inference_mode must serve a later backward."""
    model = randomize_(segmentation(img_size=32 * 5))  # a grid no other test builds first
    with torch.inference_mode():
        model.eval()(torch.randn(1, 3, 64, 96))
        model(torch.randn(1, 3, 160, 160))
    out = model.train()(torch.randn(1, 3, 64, 96))
    sum(v.sum() for v in out.values()).backward()
    out = model(torch.randn(1, 3, 160, 160))
    sum(v.sum() for v in out.values()).backward()


def test_tiny_detector_trains_one_step_with_cp():
    """The BEiT-Adapter Mask R-CNN config (tiny widths, with_cp on as configured): finite losses
    and gradients on every backbone parameter."""
    import os

    from conftest import REPO_ROOT
    from detectron2.config import LazyConfig, instantiate
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs/common/models/mask_rcnn_beit_adapter.py"))
    cfg.model.backbone.bottom_up.update({**TINY, "window_attn": [True] * 4, "window_size": [3, 3, 3, 6]})
    assert cfg.model.backbone.bottom_up.with_cp
    cfg.model.roi_heads.num_classes = 3
    cfg.model.roi_heads.batch_size_per_image = 16
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    inst = Instances((96, 128))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 70.0]]))
    inst.gt_classes = torch.tensor([1])
    from detectron2.structures import BitMasks

    masks = torch.zeros(1, 96, 128, dtype=torch.bool)
    masks[0, 10:70, 10:60] = True
    inst.gt_masks = BitMasks(masks)
    with EventStorage():
        losses = model([{"image": torch.rand(3, 96, 128) * 255, "instances": inst}])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    bb = model.backbone.bottom_up
    no_grad = [n for n, p in bb.named_parameters() if p.grad is None]
    assert not no_grad, no_grad[:5]
