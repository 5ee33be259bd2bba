"""UperNet head: shapes, the release's (mmseg) names and shapes, losses."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec

from vit_adapter.modeling.upernet import AdaptiveAvgPool, FCNHead, PyramidPooling, UperNetHead, UPerHead, semantic_cross_entropy
from _seg_release_layout import fcn_head_shapes, uper_head_shapes

D = 16
SHAPES = {f"res{i}": ShapeSpec(channels=D, stride=2**i) for i in range(2, 6)}


def _features(n=2, h=64, w=96):
    return {f"res{i}": torch.randn(n, D, h // 2**i, w // 2**i) for i in range(2, 6)}


def _head(**kw):
    args = dict(num_classes=5, channels=8, aux_channels=4, norm="BN")
    args.update(kw)
    return UperNetHead(SHAPES, **args)


def test_state_dict_names_and_shapes_are_the_releases():
    head = _head()
    ours = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    release = {**uper_head_shapes(D, 8, 5), **fcn_head_shapes(D, 4, 5)}
    assert ours == release


def test_eval_returns_logits_at_the_input_size():
    head = _head().eval()
    feats = _features(h=64, w=96)
    logits, losses = head(feats)
    assert logits.shape == (2, 5, 64, 96) and losses == {}
    decode = head.decode_head([feats[f] for f in head.in_features])
    assert decode.shape == (2, 5, 16, 24)  # stride 4
    assert torch.allclose(logits, F.interpolate(decode, size=(64, 96), mode="bilinear", align_corners=False))


def test_training_returns_both_losses_and_gradients():
    head = _head().train()
    targets = torch.randint(0, 5, (2, 64, 96))
    targets[:, :8] = 255
    logits, losses = head(_features(h=64, w=96), targets)
    assert logits is None and set(losses) == {"loss_sem_seg", "loss_sem_seg_aux"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())


def test_no_auxiliary_head():
    head = _head(aux_in_feature=None).train()
    _, losses = head(_features(), torch.randint(0, 5, (2, 64, 96)))
    assert set(losses) == {"loss_sem_seg"} and head.auxiliary_head is None


def test_aux_loss_weight_and_input():
    torch.manual_seed(0)
    head = _head(aux_loss_weight=0.4, dropout=0.0).train()
    feats, targets = _features(), torch.randint(0, 5, (2, 64, 96))
    _, losses = head(feats, targets)
    expected = 0.4 * semantic_cross_entropy(head.auxiliary_head(feats["res4"]), targets, 255)
    assert torch.allclose(losses["loss_sem_seg_aux"], expected)


def test_cross_entropy_normalisation_and_ignore():
    logits = torch.randn(1, 3, 4, 4)
    targets = torch.randint(0, 3, (1, 8, 8))
    targets[0, :4] = 255  # half the pixels unlabelled
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(up, targets, reduction="none", ignore_index=255)
    assert torch.allclose(semantic_cross_entropy(logits, targets, 255), per_pixel.sum() / 64)  # mmseg 0.20.2
    assert torch.allclose(semantic_cross_entropy(logits, targets, 255, avg_non_ignore=True), per_pixel.sum() / 32)
    assert semantic_cross_entropy(logits, torch.full((1, 8, 8), 255), 255) == 0  # nothing labelled: 0, not NaN


def test_pyramid_pooling_branches():
    ppm = PyramidPooling((1, 2, 3, 6), D, 4, norm="").eval()
    x = torch.randn(1, D, 12, 12)
    out = ppm(x)
    assert out.shape == (1, D + 4 * 4, 12, 12)
    assert torch.equal(out[:, :D], x)
    # scale 1: a constant map of the branch on the global mean
    branch1 = ppm[0][1](x.mean(dim=(2, 3), keepdim=True))
    assert torch.allclose(out[:, D : D + 4], branch1.expand(-1, -1, 12, 12), atol=1e-6)


def test_conv_modules_have_no_bias_when_normalised():
    head = UPerHead([D] * 4, 8, 3, norm="BN")
    assert head.bottleneck.conv.bias is None and head.conv_seg.bias is not None
    plain = FCNHead(D, 4, 3, norm="")
    assert plain.convs[0].conv.bias is not None and isinstance(plain.convs[0].bn, torch.nn.Identity)


def test_bad_arguments():
    with pytest.raises(ValueError, match="not backbone outputs"):
        UperNetHead(SHAPES, num_classes=3, in_features=["res2", "p3"])
    with pytest.raises(ValueError, match="finest first"):
        UperNetHead(SHAPES, num_classes=3, in_features=["res5", "res4", "res3", "res2"])
    with pytest.raises(ValueError, match="needs targets"):
        _head().train()(_features())


@pytest.mark.parametrize("size", [(12, 12), (13, 7), (5, 9), (2, 3)])
def test_adaptive_pool_traced_formulation_is_torchs(size):
    x = torch.randn(2, 3, *size)
    for scale in (1, 2, 3, 6):
        pool = AdaptiveAvgPool(scale)
        traced = torch.jit.trace(pool, (x,), check_trace=False)  # the matrix formulation
        torch.testing.assert_close(traced(x), F.adaptive_avg_pool2d(x, scale))
        assert "einsum" in str(traced.graph)
        other = torch.randn(1, 3, size[0] + 5, size[1] + 3)  # sizes stay dynamic in the trace
        torch.testing.assert_close(traced(other), F.adaptive_avg_pool2d(other, scale))
