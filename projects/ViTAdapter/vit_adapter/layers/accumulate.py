"""Resampling written as GEMMs that accumulate into an existing channels-last
grid ``(B, h, w, C)``: no new tensor of the output's size per term. Used by
:class:`vit_adapter.modeling.backbone.ViTAdapter`'s no-grad output stage,
each equal to the torch op it replaces (tests/layers/test_accumulate.py)."""
import torch
import torch.nn.functional as F

__all__ = ["linear_resize_matrix", "add_resized_", "conv_transpose2x2_rows", "add_conv_transpose2x2_", "affine_"]


def linear_resize_matrix(n_in: int, scale: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n_out, n_in) matrix R with ``R @ v`` equal to 1-D linear interpolation of
    `v` by `scale` (``align_corners=False``), built by interpolating the
    identity with ``F.interpolate`` itself (so the weights, border clamping and
    output size are exactly torch's). Bilinear 2-D resizing is this along each
    axis."""
    eye = torch.eye(n_in, device=device, dtype=dtype).unsqueeze(1)  # (n_in, 1, n_in)
    return F.interpolate(eye, scale_factor=scale, mode="linear", align_corners=False)[:, 0].t()


def add_resized_(dst: torch.Tensor, src: torch.Tensor, scale: float) -> torch.Tensor:
    """``dst += bilinear_resize(src, scale)`` in place, on channels-last grids.

    Equal to ``F.interpolate(map, scale_factor=scale, mode="bilinear",
    align_corners=False)`` of the corresponding (B, C, h, w) map, computed as
    two GEMMs (width, then height: accumulated into `dst`), so no resized map
    is allocated.

    Args:
        dst: (B, h_out, w_out, C) with each batch item's grid contiguous.
        src: (B, h, w, C).
        scale: resize factor (h_out = floor(h * scale)).
    Returns:
        `dst`.
    """
    b, h, w, c = src.shape
    src = src.to(dst.dtype)
    ry = linear_resize_matrix(h, scale, src.device, src.dtype)  # (h_out, h)
    rx = linear_resize_matrix(w, scale, src.device, src.dtype)  # (w_out, w)
    if tuple(dst.shape) != (b, ry.shape[0], rx.shape[0], c):
        raise ValueError(
            f"add_resized_: dst {tuple(dst.shape)} is not src {tuple(src.shape)} resized by {scale}")
    for i in range(b):
        along_w = torch.matmul(rx, src[i])  # (h, w_out, C)
        dst[i].view(ry.shape[0], -1).addmm_(ry, along_w.view(h, -1))
    return dst


def conv_transpose2x2_rows(weight: torch.Tensor) -> torch.Tensor:
    """``nn.ConvTranspose2d`` weight (C_in, C_out, 2, 2) -> the (4 * C_out, C_in)
    matrix of the stride-2 transposed conv as a GEMM per input pixel: row
    (kh, kw, c_out) gives output pixel (2i + kh, 2j + kw)'s channel c_out."""
    c_in, c_out = weight.shape[:2]
    return weight.permute(2, 3, 1, 0).reshape(4 * c_out, c_in)


def add_conv_transpose2x2_(
    dst: torch.Tensor, tokens: torch.Tensor, weight: torch.Tensor, chunk_elems: int = 1 << 20
) -> torch.Tensor:
    """``dst += conv_transpose2d(map, weight, stride=2)`` (no bias) in place.

    A 2x2 / stride-2 transposed conv writes each input pixel's own 2x2 output
    block: a GEMM (C_in -> 4 * C_out) per input pixel, added to the block. The
    GEMM runs over chunks of input rows into one reused buffer of about
    `chunk_elems` floats, so no full-size output is allocated.

    Args:
        dst: (B, 2h, 2w, C_out) contiguous.
        tokens: (B, h*w, C_in) row-major input pixels.
        weight: (C_in, C_out, 2, 2), ``nn.ConvTranspose2d.weight``.
    Returns:
        `dst`.
    """
    b, two_h, two_w, c_out = dst.shape
    h, w = two_h // 2, two_w // 2
    c_in = tokens.shape[-1]
    if tokens.shape != (b, h * w, c_in) or weight.shape != (c_in, c_out, 2, 2):
        raise ValueError(
            f"add_conv_transpose2x2_: dst {tuple(dst.shape)}, tokens {tuple(tokens.shape)} and "
            f"weight {tuple(weight.shape)} do not match")
    # GEMM output row = one input pixel's 2x2 block, rows (kh, kw, c_out).
    w_rows = conv_transpose2x2_rows(weight)
    rows = tokens.to(dst.dtype).reshape(b * h, w, c_in)
    w_rows = w_rows.to(dst.dtype)
    blocks = dst.view(b * h, 2, w, 2, c_out)  # (input row, kh, input col, kw, C)
    step = max(1, chunk_elems // (w * 4 * c_out))
    buf = dst.new_empty(min(step, b * h) * w, 4 * c_out)
    for r0 in range(0, b * h, step):
        k = min(step, b * h - r0)
        out = torch.mm(rows[r0 : r0 + k].reshape(k * w, c_in), w_rows.t(), out=buf[: k * w])
        blocks[r0 : r0 + k].add_(out.view(k, w, 2, 2, c_out).transpose(1, 2))
    return dst


def affine_(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x = x * scale + shift`` in place, per channel of a (..., C) tensor."""
    return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype), out=x)
