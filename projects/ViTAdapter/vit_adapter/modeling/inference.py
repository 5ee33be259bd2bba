"""ViT-Adapter's inference path: every no-grad rewrite of the backbone, chosen
once per forward.

:meth:`vit_adapter.modeling.backbone.ViTAdapter.forward` calls
:func:`forward_vit_adapter` when :func:`applies` (no autograd, no autocast,
eval mode) and runs the training formulation
(:mod:`vit_adapter.modeling.adapter_modules`) otherwise. Both compute the same
values up to float rounding; tests/modeling/test_inference_path.py checks every piece
against the plain modules with all parameters random. The rewrites:

* in place: the forward owns its token buffers ``x`` and ``c``; each residual
  branch's last GEMM accumulates into them (:func:`linear_add_`), and the
  output stage resizes and upsamples into existing maps
  (:func:`add_resized_`, :func:`add_conv_transpose2x2_`): no new full-size
  tensor per residual (on CPU each fresh large allocation costs page faults);
* folded affines (:func:`vit_adapter.layers.affine.fold_affine`): eval-mode
  norms into the conv before them (spatial prior) or into the sums before
  them (output stage), LayerNorm affines and the injector's ``gamma`` into
  the projections next to them;
* one LayerNorm of ``c`` serves the injector's ``feat_norm`` and the
  extractor's ``query_norm`` (:func:`shared_layer_norm`);
* on CPU (:func:`reorder_projections_ok`) the projections move across the
  sampling: the injector samples before ``value_proj``, the extractors apply
  ``output_proj`` before sampling
  (:mod:`vit_adapter.layers.ms_deform_attn.reordered`).

A forward hook that keeps an intermediate tensor of this path (a block's or
an extractor's output) should keep a ``.clone()``: later steps write into it.
Maps are handled as channels-last grids ``(B, h, w, C)``, the adapter's token
layout.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from vit_adapter.layers.affine import fold_affine
from vit_adapter.layers.ms_deform_attn import select_impl
from vit_adapter.modeling.adapter_modules import deform_inputs, level_shapes

__all__ = [
    "applies",
    "reorder_projections_ok",
    "forward_vit_adapter",
    "interaction_",
    "injector_",
    "extractor_",
    "output_stage_",
    "run_folded",
    "shared_layer_norm",
    "linear_add_",
    "norm_as_affine",
    "fold_norm_into_conv",
    "linear_resize_matrix",
    "add_resized_",
    "conv_transpose2x2_rows",
    "add_conv_transpose2x2_",
    "affine_",
]


def applies(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether `model`'s forward on `x` takes this path: no autograd (it writes
    into buffers autograd might need), no autocast (it would mix the autocast
    dtype with float32 weights in in-place GEMMs) and eval mode (no dropout,
    no batch statistics), and not while tracing (a traced graph must be the
    plain formulation, whose shapes follow the input). The only place this is
    decided."""
    return (
        not torch.is_grad_enabled()
        and not torch.is_autocast_enabled(x.device.type)
        and not model.training
        and not torch.jit.is_tracing()
    )


def reorder_projections_ok(device: torch.device) -> bool:
    """Whether the deformable attention moves its projections across the
    sampling (exact rewrites trading projection MACs for wider gathers,
    written with ``embedding_bag``): on CPU, where GEMMs dominate, when the
    operator runs its embedding_bag formulation there (a forced
    ``$VIT_ADAPTER_MSDA_IMPL``, e.g. "reference", keeps the plain
    formulation, reorderings included). GPUs keep the plain formulation."""
    return device.type == "cpu" and select_impl(device) == "embedding_bag"


# --------------------------------------------------------------------------- the forward


def forward_vit_adapter(model: nn.Module, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """The (res2, res3, res4, res5) maps of ``ViTAdapter`` `model` (eval mode,
    under :func:`applies`) for a checked (B, 3, H, W) `image`."""
    injector_inputs, extractor_inputs = deform_inputs(image.shape[2], image.shape[3], image.device)
    stem, c2, c3, c4 = model.spm.forward_features(image, run_stage=run_folded)
    len2, len3 = c2.shape[1], c3.shape[1]
    c = model.adapter_tokens(c2, c3, c4)
    del c2, c3, c4
    x, H, W = model.embed(image)
    reorder = reorder_projections_ok(x.device)
    for layer, (first, last) in zip(model.interactions, model.interaction_indexes):
        x = interaction_(layer, x, c, model.blocks[first : last + 1], injector_inputs, extractor_inputs, H, W,
                         reorder)
    maps = output_stage_(model, x, c, stem, len2, len3, H, W)
    return maps if maps is not None else model.output_stage(x, c, stem, len2, len3, H, W)


def interaction_(block: nn.Module, x: torch.Tensor, c: torch.Tensor, vit_blocks: Sequence[nn.Module],
                 injector_inputs, extractor_inputs, H: int, W: int, reorder: bool) -> torch.Tensor:
    """``InteractionBlock.forward`` with ``c`` updated in place (and ``x``
    before the ViT blocks, which make new tensors): returns the new ``x``.
    `reorder`: see :func:`reorder_projections_ok`."""
    # c is unchanged between the injector and the extractor: one normalisation serves both.
    normed_c = shared_layer_norm([block.injector.feat_norm, block.extractor.query_norm], c) if reorder else None
    injector_(block.injector, x, c, injector_inputs, normed_c, reorder)
    for blk in vit_blocks:
        x = blk(x, H, W)
    query_shapes = level_shapes(H, W)
    extractor_(block.extractor, c, x, extractor_inputs, query_shapes, normed_c, reorder)
    del normed_c
    for extractor in block.extra_extractors if block.extra_extractors is not None else ():
        extractor_(extractor, c, x, extractor_inputs, query_shapes, None, reorder)
    return x


def _normed(norm: nn.Module, tokens: torch.Tensor, shared: Optional[torch.Tensor]):
    """``norm(tokens)`` as ``(tensor, affine)``: the norm applied (affine None),
    or `shared` (:func:`shared_layer_norm` of `tokens`) with the norm's own
    affine left to fold into the projection that reads it."""
    if shared is None:
        return norm(tokens), None
    d = norm.normalized_shape[-1]
    scale = shared.new_ones(d) if norm.weight is None else norm.weight
    shift = shared.new_zeros(d) if norm.bias is None else norm.bias
    return shared, (scale, shift)


def injector_(injector: nn.Module, x: torch.Tensor, c: torch.Tensor, inputs, normed_c: Optional[torch.Tensor],
              reorder: bool) -> torch.Tensor:
    """``x += gamma * attend(LN(x), LN(c))`` in place (``Injector.forward``).
    `normed_c`: :func:`shared_layer_norm` of `c`, or None. With `reorder` the
    values are sampled before ``value_proj`` (``MSDeformAttn.sample_features``)."""
    attn = injector.attn
    if reorder:
        feats, affine = _normed(injector.feat_norm, c, normed_c)
        sampled = attn.sample_features(injector.query_norm(x), inputs.reference_points, feats,
                                       inputs.spatial_shapes, feature_affine=affine)
    else:
        sampled = injector.sample(x, c, inputs)
    gamma = (injector.gamma, None)
    return linear_add_(x, sampled, *fold_affine(attn.output_proj.weight, attn.output_proj.bias, after=gamma))


def extractor_(extractor: nn.Module, c: torch.Tensor, x: torch.Tensor, inputs, query_shapes,
               normed_c: Optional[torch.Tensor], reorder: bool) -> torch.Tensor:
    """``c += attend(LN(c), LN(x))``, then ``c += ConvFFN(LN(c))`` (with_cffn),
    in place (``Extractor.forward`` in eval mode). `normed_c`: as in
    :func:`injector_`. With `reorder` ``output_proj`` is applied to the values
    before sampling (``MSDeformAttn.sample_output_projected``)."""
    proj = extractor.attn.output_proj
    if reorder:
        query, affine = _normed(extractor.query_norm, c, normed_c)
        out = extractor.attn.sample_output_projected(query, inputs.reference_points, extractor.feat_norm(x),
                                                     inputs.spatial_shapes, query_affine=affine)
        linear_add_(c, out, None, proj.bias)
    else:
        linear_add_(c, extractor.sample(c, x, inputs), proj.weight, proj.bias)
    if extractor.with_cffn:
        ffn = extractor.ffn  # eval mode: dropout and drop path are the identity
        hidden = ffn.act(ffn.dwconv(ffn.fc1(extractor.ffn_norm(c)), query_shapes))
        linear_add_(c, hidden, ffn.fc2.weight, ffn.fc2.bias)
    return c


def output_stage_(model: nn.Module, x: torch.Tensor, c: torch.Tensor, stem: torch.Tensor, len2: int, len3: int,
                  H: int, W: int) -> Optional[Tuple[torch.Tensor, ...]]:
    """``ViTAdapter.output_stage`` for output norms that are fixed affine maps
    (see :func:`norm_as_affine`), computed in the buffers this forward owns
    (the projected c1 and the adapter tokens c) with no other full-size map.
    None when the norms are not affine maps (the caller runs the plain stage)."""
    B, D = x.shape[0], x.shape[-1]
    affines = [norm_as_affine(n, D, x.device) for n in model.output_norms]
    if any(a is None for a in affines):
        return None
    # c1 = fc1(stem) without its bias (folded into norm1's shift with up's):
    # a (B, 4H, 4W, D) grid, the one new full-size tensor of this stage.
    fc1, up = model.spm.fc1, model.up
    grids = [
        model.spm._tokens(fc1, stem, bias=False).view(B, 4 * H, 4 * W, D),
        c[:, :len2].unflatten(1, (2 * H, 2 * W)),
        c[:, len2 : len2 + len3].unflatten(1, (H, W)),
        c[:, len2 + len3 :].unflatten(1, (H // 2, W // 2)),
    ]
    add_conv_transpose2x2_(grids[0], c[:, :len2], up.weight)  # reads c2 before the ViT feature is added
    biases = [b for b in (fc1.bias, up.bias) if b is not None]
    if biases:
        affines[0] = fold_affine(None, sum(biases), after=affines[0])
    if model.add_vit_feature:
        x3 = x.view(B, H, W, D)
        add_resized_(grids[0], x3, 4.0)
        add_resized_(grids[1], x3, 2.0)
        grids[2].add_(x3)
        add_resized_(grids[3], x3, 0.5)
    return tuple(affine_(g, *a).permute(0, 3, 1, 2) for g, a in zip(grids, affines))


# --------------------------------------------------------------------------- helpers


def run_folded(stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``stage(x)`` for a conv / norm / ReLU (/ pool) sequence, where each conv
    followed by a norm that is a fixed affine map runs as one conv with the
    norm folded into its weights (:func:`fold_norm_into_conv`)."""
    layers = list(stage)
    i = 0
    while i < len(layers):
        layer = layers[i]
        if isinstance(layer, nn.Conv2d) and i + 1 < len(layers):
            folded = fold_norm_into_conv(layer, layers[i + 1])
            if folded is not None:
                x = layer._conv_forward(x, *folded)
                i += 2
                continue
        x = layer(x)
        i += 1
    return x


def shared_layer_norm(norms: Sequence[nn.Module], tokens: torch.Tensor) -> Optional[torch.Tensor]:
    """LayerNorm of `tokens` without the affine, when every module in `norms` is
    a LayerNorm over the last dim with the same eps: each of them is then this
    tensor times its own affine, which the caller folds into the projection
    that follows (one normalisation pass for several norms). None otherwise."""
    d = tokens.shape[-1]
    if not all(type(n) is nn.LayerNorm and tuple(n.normalized_shape) == (d,) for n in norms):
        return None
    if len({n.eps for n in norms}) != 1:
        return None
    ones = tokens.new_ones(d)  # with weight and bias: the fast CPU kernel
    return F.layer_norm(tokens, (d,), ones, torch.zeros_like(ones), norms[0].eps)


def linear_add_(out: torch.Tensor, x: torch.Tensor, weight: Optional[torch.Tensor],
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``out += linear(x, weight, bias)`` in place (`weight` None: the
    identity), the GEMM accumulating straight into `out`: no new tensor of
    its size. `out`: contiguous (..., D_out); `x`: (..., D_in). Returns `out`."""
    flat = out.view(-1, out.shape[-1])
    if weight is None:
        flat.add_(x.reshape(flat.shape))
    else:
        flat.addmm_(x.reshape(-1, x.shape[-1]), weight.t())
    if bias is not None:
        flat.add_(bias)
    return out


def norm_as_affine(norm: nn.Module, channels: int, device=None) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``(scale, shift)`` of shape (C,) with ``norm(x) == x * scale + shift``
    per channel, when `norm` currently is such a fixed map: a BatchNorm in eval
    mode with running statistics (any flavour: BatchNorm2d, SyncBatchNorm,
    NaiveSyncBatchNorm), detectron2's FrozenBatchNorm2d, or Identity (no norm).
    None otherwise (BatchNorm in training mode, GroupNorm, LayerNorm, ...).

    Args:
        norm: the norm layer.
        channels (int): C, and device: where to put them (used for Identity,
            which has no parameters).
    """
    if isinstance(norm, nn.Identity):
        return torch.ones(channels, device=device), torch.zeros(channels, device=device)
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        if norm.training or norm.running_mean is None:
            return None
    elif not isinstance(norm, FrozenBatchNorm2d):
        return None
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


def fold_norm_into_conv(conv: nn.Conv2d, norm: nn.Module) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Weight and bias of one conv equal to ``norm(conv(x))``, or None when
    `norm` is not a fixed affine map (see :func:`norm_as_affine`)."""
    affine = norm_as_affine(norm, conv.out_channels, conv.weight.device)
    return None if affine is None else fold_affine(conv.weight, conv.bias, after=affine)


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
