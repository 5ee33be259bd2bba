"""vit_adapter.layers.accumulate: each GEMM formulation equals the torch op it
replaces in ViTAdapter's no-grad output stage, and writes into its target."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vit_adapter.layers.accumulate import add_conv_transpose2x2_, add_resized_, affine_, linear_resize_matrix


def _grid(t):
    """(B, C, h, w) map -> (B, h, w, C) contiguous grid."""
    return t.permute(0, 2, 3, 1).contiguous()


@pytest.mark.parametrize("n_in,scale", [(8, 4.0), (5, 2.0), (6, 0.5), (7, 0.5), (4, 1.0)])
def test_linear_resize_matrix_is_torch_interpolation(n_in, scale):
    v = torch.randn(3, n_in, dtype=torch.float64)
    want = F.interpolate(v[:, None], scale_factor=scale, mode="linear", align_corners=False)[:, 0]
    got = (linear_resize_matrix(n_in, scale, dtype=torch.float64) @ v.t()).t()
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("hw,scale", [((4, 6), 4.0), ((5, 3), 2.0), ((6, 10), 0.5), ((3, 3), 1.0)])
def test_add_resized_equals_bilinear_interpolate(hw, scale):
    torch.manual_seed(0)
    src = torch.randn(2, 7, *hw, dtype=torch.float64)
    resized = F.interpolate(src, scale_factor=scale, mode="bilinear", align_corners=False)
    dst = torch.randn_like(resized)
    want = dst + resized
    buf = _grid(dst)
    got = add_resized_(buf, _grid(src), scale)
    assert got.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(got.permute(0, 3, 1, 2), want)


def test_add_resized_checks_shapes():
    with pytest.raises(ValueError, match="is not src"):
        add_resized_(torch.zeros(1, 5, 5, 3), torch.zeros(1, 2, 2, 3), 2.0)


@pytest.mark.parametrize("chunk_elems", [1 << 20, 1])  # one chunk / one input row per chunk
def test_add_conv_transpose2x2_equals_conv_transpose(chunk_elems):
    torch.manual_seed(0)
    up = nn.ConvTranspose2d(6, 5, 2, 2).double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    dst = torch.randn(2, 5, 6, 8, dtype=torch.float64)
    want = dst + F.conv_transpose2d(x, up.weight, None, stride=2)
    with torch.no_grad():  # writes into dst
        got = add_conv_transpose2x2_(_grid(dst), x.flatten(2).transpose(1, 2), up.weight, chunk_elems)
    torch.testing.assert_close(got.permute(0, 3, 1, 2), want)


def test_add_conv_transpose2x2_checks_shapes():
    with pytest.raises(ValueError, match="do not match"):
        add_conv_transpose2x2_(torch.zeros(1, 4, 4, 5), torch.zeros(1, 3, 6), torch.zeros(6, 5, 2, 2))


def test_affine_in_place():
    x = torch.randn(2, 3, 4, 5)
    scale, shift = torch.randn(5), torch.randn(5)
    want = x * scale + shift
    out = affine_(x, scale, shift)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(out, want)
