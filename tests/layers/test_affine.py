"""vit_adapter.layers.affine: folding per-channel affines into linear maps and
reading fixed norms as affines (the spatial prior's and the output stage's
fast branches rely on these)."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from vit_adapter.layers.affine import fold_affine, fold_norm_into_conv, is_fixed_affine, norm_as_affine


def _random_bn(bn):
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        if bn.weight is not None:
            bn.weight.normal_()
            bn.bias.normal_()
    return bn


@pytest.mark.parametrize("make", [
    lambda: _random_bn(nn.BatchNorm2d(5)).eval(),
    lambda: _random_bn(nn.BatchNorm2d(5, affine=False)).eval(),
    lambda: _random_bn(nn.SyncBatchNorm(5)).eval(),
    lambda: FrozenBatchNorm2d(5),
    lambda: nn.Identity(),
])
def test_norm_as_affine_matches_the_norm(make):
    torch.manual_seed(0)
    norm = make()
    if isinstance(norm, FrozenBatchNorm2d):
        norm.weight.normal_(), norm.bias.normal_(), norm.running_mean.normal_(), norm.running_var.uniform_(0.5, 2)
    assert is_fixed_affine(norm)
    x = torch.randn(2, 5, 3, 4)
    scale, shift = norm_as_affine(norm, 5)
    torch.testing.assert_close(x * scale.view(1, 5, 1, 1) + shift.view(1, 5, 1, 1), norm(x))


@pytest.mark.parametrize("norm", [
    nn.BatchNorm2d(5).train(),  # batch statistics: not a fixed map
    nn.BatchNorm2d(5, track_running_stats=False).eval(),
    nn.GroupNorm(1, 5),
])
def test_data_dependent_norms_are_not_fixed_affines(norm):
    assert not is_fixed_affine(norm)
    with pytest.raises(ValueError, match="not a fixed affine map"):
        norm_as_affine(norm, 5)
    with pytest.raises(ValueError, match="not a fixed affine map"):
        fold_norm_into_conv(nn.Conv2d(3, 5, 3), norm)


def test_fold_norm_into_conv_equals_conv_then_norm():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=True), _random_bn(nn.BatchNorm2d(6)).eval()
    x = torch.randn(2, 3, 9, 7)
    weight, bias = fold_norm_into_conv(conv, bn)
    got = F.conv2d(x, weight, bias, conv.stride, conv.padding)
    torch.testing.assert_close(got, bn(conv(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_fold_affine_before_and_after(bias):
    torch.manual_seed(0)
    w, b = torch.randn(5, 4, dtype=torch.float64), (torch.randn(5, dtype=torch.float64) if bias else None)
    s_in, t_in = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    s_out, t_out = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    want = F.linear(x * s_in + t_in, w, b) * s_out + t_out
    torch.testing.assert_close(F.linear(x, *fold_affine(w, b, before=(s_in, t_in), after=(s_out, t_out))), want)
    torch.testing.assert_close(F.linear(x, *fold_affine(w, b, after=(s_out, None))), F.linear(x, w, b) * s_out)
    # a conv weight, and the identity map (weight None): the composed per-channel affine
    conv = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    img = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    got = F.conv2d(img, *fold_affine(conv, b, after=(s_out, t_out)))
    torch.testing.assert_close(got, F.conv2d(img, conv, b) * s_out.view(5, 1, 1) + t_out.view(5, 1, 1))
    if bias:
        scale, shift = fold_affine(None, b, after=(s_out, t_out))
        torch.testing.assert_close(x[:, :1] * scale + shift, (x[:, :1] + b) * s_out + t_out)
