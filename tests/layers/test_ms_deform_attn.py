"""Correctness of multi-scale deformable attention against an independent,
explicit bilinear-sampling loop written here (no grid_sample)."""
import math

import pytest
import torch

from vit_adapter.layers.ms_deform_attn import MSDeformAttn, ms_deform_attn_reference

SHAPES = [(3, 4), (2, 2), (1, 3)]  # (H_l, W_l), deliberately non-square


def slow_bilinear(value, shapes, locations, weights):
    """Loop over every query / head / level / point / corner.

    value (N, S, M, Dh); locations (N, Lq, M, L, P, 2) as (x, y) in [0, 1]
    image coordinates ((0, 0) top-left corner, (1, 1) bottom-right corner);
    weights (N, Lq, M, L, P). Pixel (i, j) of level l has its centre at
    ((j + 0.5) / W_l, (i + 0.5) / H_l) (align_corners=False); corners outside
    the map read 0 (zero padding).
    """
    N, _, M, Dh = value.shape
    _, Lq, _, L, P, _ = locations.shape
    out = torch.zeros(N, Lq, M, Dh, dtype=value.dtype)
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    for n in range(N):
        for q in range(Lq):
            for m in range(M):
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(P):
                        x = locations[n, q, m, lvl, p, 0].item() * w - 0.5
                        y = locations[n, q, m, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        fx, fy = x - x0, y - y0
                        sample = torch.zeros(Dh, dtype=value.dtype)
                        for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
                            for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    sample += wy * wx * value[n, starts[lvl] + yy * w + xx, m]
                        out[n, q, m] += weights[n, q, m, lvl, p] * sample
    return out.reshape(N, Lq, M * Dh)


def _random_inputs(N=2, Lq=5, M=2, Dh=3, P=2, shapes=SHAPES, dtype=torch.float64, lo=-0.3, hi=1.3):
    g = torch.Generator().manual_seed(0)
    S = sum(h * w for h, w in shapes)
    value = torch.randn(N, S, M, Dh, generator=g, dtype=dtype)
    # [-0.3, 1.3]: a good share of the points lie partly or fully outside the map
    loc = lo + (hi - lo) * torch.rand(N, Lq, M, len(shapes), P, 2, generator=g, dtype=dtype)
    weights = torch.rand(N, Lq, M, len(shapes), P, generator=g, dtype=dtype)
    return value, loc, weights


def test_reference_matches_slow_loop_inside_and_outside():
    value, loc, weights = _random_inputs()
    outside = ((loc < 0) | (loc > 1)).any(-1)
    assert outside.float().mean() > 0.2  # the test really covers out-of-map points
    got = ms_deform_attn_reference(value, torch.tensor(SHAPES), loc, weights)
    torch.testing.assert_close(got, slow_bilinear(value, SHAPES, loc, weights), rtol=1e-10, atol=1e-10)


def test_reference_far_outside_reads_zero_and_centres_read_pixels():
    value, loc, weights = _random_inputs(N=1, Lq=2, M=1, P=1, shapes=[(3, 4)])
    far = torch.full_like(loc, 5.0)
    assert ms_deform_attn_reference(value, [(3, 4)], far, weights).abs().max() == 0
    # query 0 samples the centre of pixel (i=1, j=2); query 1 of pixel (2, 0)
    loc[0, 0, 0, 0, 0] = torch.tensor([(2 + 0.5) / 4, (1 + 0.5) / 3])
    loc[0, 1, 0, 0, 0] = torch.tensor([(0 + 0.5) / 4, (2 + 0.5) / 3])
    ones = torch.ones_like(weights)
    got = ms_deform_attn_reference(value, [(3, 4)], loc, ones)
    torch.testing.assert_close(got[0, 0], value[0, 1 * 4 + 2, 0])
    torch.testing.assert_close(got[0, 1], value[0, 2 * 4 + 0, 0])


def _randomised_module(d_model=12, n_levels=3, n_heads=2, n_points=2, ratio=1.0):
    torch.manual_seed(1)
    attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, ratio).double()
    with torch.no_grad():  # the official init zeroes the offset / weight projections: randomise
        for p in attn.parameters():
            p.normal_(0, 0.5)
    return attn


def _module_inputs(attn, N=2, Lq=4, shapes=SHAPES, ref_dim=2):
    g = torch.Generator().manual_seed(2)
    S = sum(h * w for h, w in shapes)
    query = torch.randn(N, Lq, attn.d_model, generator=g, dtype=torch.float64)
    feat = torch.randn(N, S, attn.d_model, generator=g, dtype=torch.float64)
    ref = torch.rand(N, Lq, attn.n_levels, ref_dim, generator=g, dtype=torch.float64)
    spatial = torch.tensor(shapes, dtype=torch.long)
    start = torch.cat([spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]])
    return query, ref, feat, spatial, start


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_module_matches_slow_loop(ratio):
    attn = _randomised_module(d_model=12, ratio=ratio)
    query, ref, feat, spatial, start = _module_inputs(attn)
    N, Lq, _ = query.shape
    M, L, P = attn.n_heads, attn.n_levels, attn.n_points
    value = attn.value_proj(feat).view(N, feat.shape[1], M, -1)
    offsets = attn.sampling_offsets(query).view(N, Lq, M, L, P, 2)
    weights = attn.attention_weights(query).view(N, Lq, M, L * P).softmax(-1).view(N, Lq, M, L, P)
    wh = torch.tensor([(w, h) for h, w in SHAPES], dtype=torch.float64)
    loc = ref[:, :, None, :, None, :] + offsets / wh[None, None, None, :, None, :]
    expected = attn.output_proj(slow_bilinear(value, SHAPES, loc, weights))
    got = attn(query, ref, feat, spatial, start, None)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_module_box_reference_points_and_padding_mask():
    attn = _randomised_module()
    query, ref, feat, spatial, start = _module_inputs(attn, ref_dim=4)
    mask = torch.zeros(feat.shape[:2], dtype=torch.bool)
    mask[0, :5] = True
    N, Lq, _ = query.shape
    M, L, P = attn.n_heads, attn.n_levels, attn.n_points
    value = attn.value_proj(feat).masked_fill(mask[..., None], 0.0).view(N, feat.shape[1], M, -1)
    offsets = attn.sampling_offsets(query).view(N, Lq, M, L, P, 2)
    weights = attn.attention_weights(query).view(N, Lq, M, L * P).softmax(-1).view(N, Lq, M, L, P)
    r = ref[:, :, None, :, None, :]
    loc = r[..., :2] + offsets / P * r[..., 2:] * 0.5
    expected = attn.output_proj(slow_bilinear(value, SHAPES, loc, weights))
    torch.testing.assert_close(attn(query, ref, feat, spatial, start, mask), expected, rtol=1e-9, atol=1e-9)


def test_reference_gradcheck_float64():
    value, loc, weights = _random_inputs(N=1, Lq=3, M=2, Dh=2, P=2, shapes=[(3, 4), (2, 2)])
    inputs = tuple(t.clone().requires_grad_(True) for t in (value, loc, weights))
    assert torch.autograd.gradcheck(
        lambda v, l, w: ms_deform_attn_reference(v, [(3, 4), (2, 2)], l, w), inputs, eps=1e-6, atol=1e-6
    )


def test_module_gradcheck_float64():
    attn = _randomised_module(d_model=8, n_levels=2, n_heads=2, n_points=2)
    shapes = [(3, 4), (2, 2)]
    query, ref, feat, spatial, start = _module_inputs(attn, N=1, Lq=3, shapes=shapes)
    query.requires_grad_(True)
    feat.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda q, f: attn(q, ref, f, spatial, start, None), (query, feat), eps=1e-6, atol=1e-6
    )


def test_official_initialisation():
    attn = MSDeformAttn(d_model=32, n_levels=3, n_heads=8, n_points=4, ratio=0.5)
    assert attn.value_proj.out_features == 16 and attn.output_proj.in_features == 16
    assert attn.sampling_offsets.weight.abs().max() == 0
    assert attn.attention_weights.weight.abs().max() == 0 and attn.attention_weights.bias.abs().max() == 0
    bias = attn.sampling_offsets.bias.view(8, 3, 4, 2)
    # head 0 looks right (+x), head 2 down (+y), head 4 left, head 1 diagonal (1, 1); point p at p + 1
    for p in range(4):
        torch.testing.assert_close(bias[0, :, p], torch.tensor([[p + 1.0, 0.0]] * 3), atol=1e-6, rtol=0)
        torch.testing.assert_close(bias[2, :, p], torch.tensor([[0.0, p + 1.0]] * 3), atol=1e-6, rtol=0)
        torch.testing.assert_close(bias[4, :, p], torch.tensor([[-(p + 1.0), 0.0]] * 3), atol=1e-6, rtol=0)
        torch.testing.assert_close(bias[1, :, p], torch.tensor([[p + 1.0, p + 1.0]] * 3), atol=1e-6, rtol=0)
    assert attn.value_proj.bias.abs().max() == 0 and attn.output_proj.bias.abs().max() == 0


def _valid_call(attn):
    query = torch.randn(2, 4, attn.d_model)
    ref = torch.rand(1, 4, 1, 2)
    feat = torch.randn(2, sum(h * w for h, w in SHAPES), attn.d_model)
    spatial = torch.tensor(SHAPES, dtype=torch.long)
    start = torch.cat([spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]])
    return dict(query=query, reference_points=ref, input_flatten=feat, input_spatial_shapes=spatial,
                input_level_start_index=start, input_padding_mask=None)


def test_valid_call_broadcasts_reference_points():
    attn = MSDeformAttn(d_model=8, n_levels=3, n_heads=2, n_points=2)
    assert attn(**_valid_call(attn)).shape == (2, 4, 8)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(query=torch.randn(2, 4, 7)), "query must be"),
        (dict(query=torch.randn(4, 8)), "query must be"),
        (dict(input_flatten=torch.randn(2, 20, 8)), r"sum\(H\*W\) = 19"),
        (dict(input_flatten=torch.randn(3, 19, 8)), "batch"),
        (dict(input_spatial_shapes=torch.tensor(SHAPES, dtype=torch.float32)), "torch.long"),
        (dict(input_spatial_shapes=torch.tensor(SHAPES[:2])), "n_levels"),
        (dict(input_spatial_shapes=torch.tensor([(3, 4), (0, 2), (1, 3)])), "positive"),
        (dict(reference_points=torch.rand(1, 5, 1, 2)), "reference_points"),
        (dict(reference_points=torch.rand(1, 4, 1, 3)), "reference_points"),
        (dict(input_padding_mask=torch.zeros(2, 19)), "input_padding_mask"),
        (dict(input_level_start_index=torch.tensor([0, 12])), "input_level_start_index"),
    ],
)
def test_input_validation(change, match):
    attn = MSDeformAttn(d_model=8, n_levels=3, n_heads=2, n_points=2)
    kwargs = _valid_call(attn)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        attn(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d_model=10, n_heads=4), "divisible"),
        (dict(d_model=8, n_heads=2, ratio=0.0), "ratio"),
        (dict(d_model=8, n_heads=0), "n_heads"),
        (dict(d_model=8, n_levels=2.5), "n_levels"),
    ],
)
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MSDeformAttn(**kwargs)
