"""The inference path (vit_adapter.modeling.inference) against the training
formulation: each rewrite against the plain module, and the backbone's
no-grad forward against its autograd forward. Every comparison runs on
modules whose parameters and buffers are ALL random (tests/_random_params.py):
a bias or affine at its zero / unit init would hide a term one path forgets."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from _random_params import assert_all_random, randomize_
from test_backbone import TINY
from vit_adapter.layers.affine import fold_affine
from vit_adapter.modeling import inference
from vit_adapter.modeling.adapter_modules import Extractor, Injector, SpatialPriorModule, deform_inputs, level_shapes
from vit_adapter.modeling.backbone import ViTAdapter
from vit_adapter.modeling.inference import (
    add_conv_transpose2x2_,
    add_resized_,
    affine_,
    fold_norm_into_conv,
    linear_add_,
    linear_resize_matrix,
    norm_as_affine,
    run_folded,
)


@pytest.fixture(autouse=True)
def _default_operator(monkeypatch):
    # The reorderings run only with the default (embedding_bag) operator on CPU.
    from vit_adapter.layers.ms_deform_attn import IMPL_ENV_VAR

    monkeypatch.delenv(IMPL_ENV_VAR, raising=False)


def _random_bn(bn):
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        if bn.weight is not None:
            bn.weight.normal_()
            bn.bias.normal_()
    return bn


def _grid(t):
    """(B, C, h, w) map -> (B, h, w, C) contiguous grid."""
    return t.permute(0, 2, 3, 1).contiguous()


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
    x = torch.randn(2, 5, 3, 4)
    scale, shift = norm_as_affine(norm, 5)
    torch.testing.assert_close(x * scale.view(1, 5, 1, 1) + shift.view(1, 5, 1, 1), norm(x))


@pytest.mark.parametrize("norm", [
    nn.BatchNorm2d(5).train(),  # batch statistics: not a fixed map
    nn.BatchNorm2d(5, track_running_stats=False).eval(),
    nn.GroupNorm(1, 5),
])
def test_norm_as_affine_refuses_data_dependent_norms(norm):
    assert norm_as_affine(norm, 5) is None
    assert fold_norm_into_conv(nn.Conv2d(3, 5, 3), norm) is None


def test_fold_norm_into_conv_equals_conv_then_norm():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=True), _random_bn(nn.BatchNorm2d(6)).eval()
    x = torch.randn(2, 3, 9, 7)
    weight, bias = fold_norm_into_conv(conv, bn)
    torch.testing.assert_close(conv._conv_forward(x, weight, bias), bn(conv(x)), atol=1e-5, rtol=1e-5)


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
    got = add_resized_(_grid(dst), _grid(src), scale)
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
    with torch.no_grad():  # an inference op (writes into dst)
        got = add_conv_transpose2x2_(_grid(dst), x.flatten(2).transpose(1, 2), up.weight, chunk_elems)
    torch.testing.assert_close(got.permute(0, 3, 1, 2), want)


def test_add_conv_transpose2x2_checks_shapes():
    with pytest.raises(ValueError, match="do not match"):
        add_conv_transpose2x2_(torch.zeros(1, 4, 4, 5), torch.zeros(1, 3, 6), torch.zeros(6, 5, 2, 2))


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


@pytest.mark.parametrize("with_weight", [True, False])
def test_linear_add_accumulates_in_place(with_weight):
    out, x = torch.randn(2, 3, 5), torch.randn(2, 3, 4 if with_weight else 5)
    w, b = (torch.randn(5, 4) if with_weight else None), torch.randn(5)
    want = out + (F.linear(x, w, b) if with_weight else x + b)
    got = linear_add_(out, x, w, b)
    assert got.data_ptr() == out.data_ptr()
    torch.testing.assert_close(got, want)


def test_affine_in_place():
    x = torch.randn(2, 3, 4, 5)
    scale, shift = torch.randn(5), torch.randn(5)
    want = x * scale + shift
    out = affine_(x, scale, shift)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(out, want)


def test_spatial_prior_module_folds_eval_norms_to_the_same_values():
    spm = randomize_(SpatialPriorModule(inplanes=8, embed_dim=12, norm="BN")).eval()
    assert_all_random(spm)
    x = torch.randn(2, 3, 64, 96)
    stem, *tokens = spm.forward_features(x, run_stage=run_folded)
    got = (spm.project_c1(stem), *tokens)
    for g, w in zip(got, spm(x)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def _eval_adapter(**kw):
    torch.manual_seed(0)
    m = randomize_(ViTAdapter(**{**TINY, **kw}))  # TINY: tests/modeling/test_backbone.py (norm "BN")
    assert_all_random(m)
    return m.eval()


def test_applies_only_without_autograd_autocast_and_training():
    m, x = _eval_adapter(), torch.randn(1, 3, 32, 32)
    assert not inference.applies(m, x)  # autograd on
    with torch.no_grad():
        assert inference.applies(m, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not inference.applies(m, x)
        assert not inference.applies(m.train(), x)


@pytest.mark.parametrize("kw", [{}, {"add_vit_feature": False}, {"norm": ""}, {"norm": lambda c: nn.GroupNorm(2, c)}])
@pytest.mark.parametrize("batch,hw", [(1, (64, 64)), (2, (64, 96)), (2, (96, 32))])
def test_inference_path_equals_autograd_path(kw, batch, hw):
    # Without autograd the backbone folds its norms and works in place; with
    # autograd (same eval mode) it runs the plain modules. Same outputs.
    m = _eval_adapter(**kw)
    x = torch.randn(batch, 3, *hw)
    with torch.no_grad():
        fast = m(x)
    with torch.inference_mode():
        fast_im = m(x)
    slow = m(x)
    for k in slow:
        torch.testing.assert_close(fast[k], slow[k], atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(fast_im[k], slow[k], atol=2e-5, rtol=1e-5)
        assert fast[k].shape == slow[k].shape


def test_inference_path_is_not_taken_for_training_mode_norms():
    # BatchNorm in training mode under no_grad normalises with batch statistics
    # (and updates running stats): the generic path, same as with autograd.
    m = _eval_adapter().train()
    x = torch.randn(2, 3, 64, 64)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        a = m(x)
    after_one = {k: v.clone() for k, v in m.state_dict().items()}
    m.load_state_dict(state)
    b = m(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-5)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(after_one[k], v)


def _adapter_parts(seed=0):
    torch.manual_seed(seed)
    inj_inputs, ext_inputs = deform_inputs(64, 96)
    x = torch.randn(2, 4 * 6, 12)
    c = torch.randn(2, 8 * 12 + 4 * 6 + 2 * 3, 12)
    injector = randomize_(Injector(12, num_heads=3, n_points=2), seed=seed + 1).eval()
    extractor = randomize_(Extractor(12, num_heads=3, n_points=2), seed=seed + 2).eval()
    assert_all_random(injector), assert_all_random(extractor)
    return inj_inputs, ext_inputs, x, c, injector, extractor


def test_no_grad_injector_and_extractor_leave_their_inputs_alone():
    # The modules themselves are the training formulation: nothing in place.
    inj_inputs, ext_inputs, x, c, injector, extractor = _adapter_parts()
    x0, c0 = x.clone(), c.clone()
    with torch.no_grad():
        y = injector(x, c, inj_inputs)
        d = extractor(c, x, ext_inputs, level_shapes(4, 6))
    torch.testing.assert_close(x, x0, rtol=0, atol=0)
    torch.testing.assert_close(c, c0, rtol=0, atol=0)
    torch.testing.assert_close(y, injector(x, c, inj_inputs), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(d, extractor(c, x, ext_inputs, level_shapes(4, 6)), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("reorder", [True, False])
@pytest.mark.parametrize("shared_norm", [True, False])
def test_injector_and_extractor_in_place_equal_the_modules(reorder, shared_norm):
    # ViTAdapter's inference forward owns x and c and updates them in place.
    inj_inputs, ext_inputs, x, c, injector, extractor = _adapter_parts()
    shapes = level_shapes(4, 6)
    want_x, want_c = injector(x, c, inj_inputs), extractor(c, x, ext_inputs, shapes)
    with torch.no_grad():
        normed = inference.shared_layer_norm([injector.feat_norm], c) if shared_norm else None
        buf_x = x.clone()
        got_x = inference.injector_(injector, buf_x, c, inj_inputs, normed, reorder)
        normed = inference.shared_layer_norm([extractor.query_norm], c) if shared_norm else None
        buf_c = c.clone()
        got_c = inference.extractor_(extractor, buf_c, x, ext_inputs, shapes, normed, reorder)
    assert got_x.data_ptr() == buf_x.data_ptr() and got_c.data_ptr() == buf_c.data_ptr()
    torch.testing.assert_close(got_x, want_x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_c, want_c, atol=1e-5, rtol=1e-5)


def test_autocast_inference_runs_the_plain_modules():
    # The in-place rewrites would mix bf16 activations with float32 weights in
    # out= / in-place GEMMs; under autocast the backbone keeps the plain path.
    m = _eval_adapter()
    x = torch.randn(2, 3, 64, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            fast = m(x)
        slow = m(x)
    for k in slow:
        torch.testing.assert_close(fast[k], slow[k], rtol=0, atol=0)


def test_inference_path_shares_one_norm_of_c_and_reorders_the_projections(monkeypatch):
    # Each interaction normalises c once (injector feat_norm + extractor
    # query_norm); the injector samples the features before value_proj, the
    # extractors apply output_proj to the values before sampling.
    from vit_adapter.layers.ms_deform_attn import MSDeformAttn

    m = _eval_adapter()
    calls = {"shared": 0, "sample_features": 0, "sample_output_projected": 0}
    shared, sample_features = inference.shared_layer_norm, MSDeformAttn.sample_features
    output_projected = MSDeformAttn.sample_output_projected

    def count(name, fn):
        def wrapped(*a, **k):
            out = fn(*a, **k)
            calls[name] += out is not None
            return out
        return wrapped

    monkeypatch.setattr(inference, "shared_layer_norm", count("shared", shared))
    monkeypatch.setattr(MSDeformAttn, "sample_features", count("sample_features", sample_features))
    monkeypatch.setattr(MSDeformAttn, "sample_output_projected",
                        count("sample_output_projected", output_projected))
    with torch.no_grad():
        m(torch.randn(1, 3, 64, 64))
    n = len(m.interactions)
    # the extractors project the ViT tokens to the output width before sampling
    n_extractors = sum(1 + (0 if i.extra_extractors is None else len(i.extra_extractors)) for i in m.interactions)
    assert calls == {"shared": n, "sample_features": n, "sample_output_projected": n_extractors}


def test_shared_layer_norm_only_for_matching_layer_norms():
    shared = inference.shared_layer_norm

    c = torch.randn(2, 5, 8) * 3 + 1
    ln = nn.LayerNorm(8, eps=1e-6)
    normed = shared([ln, nn.LayerNorm(8, eps=1e-6)], c)
    torch.testing.assert_close(normed, F.layer_norm(c, (8,), eps=1e-6))
    assert shared([ln, nn.LayerNorm(8, eps=1e-5)], c) is None
    assert shared([ln, nn.GroupNorm(1, 8)], c) is None


@pytest.mark.parametrize("reorder", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_interaction_block_inference_path_with_and_without_layer_norm_affine(affine, reorder):
    # The shared LayerNorm of c folds each norm's affine (ones / zeros when it has none).
    from functools import partial

    from vit_adapter.modeling.adapter_modules import InteractionBlock
    from vit_adapter.modeling.vit import Block

    torch.manual_seed(0)
    norm = partial(nn.LayerNorm, eps=1e-6, elementwise_affine=affine)
    block = randomize_(InteractionBlock(12, num_heads=3, n_points=2, norm_layer=norm, extra_extractor=True)).eval()
    vit_blocks = [randomize_(Block(12, num_heads=2), seed=1).eval()]
    assert_all_random(block)
    inj_inputs, ext_inputs = deform_inputs(64, 96)
    x = torch.randn(2, 4 * 6, 12)
    c = torch.randn(2, 8 * 12 + 4 * 6 + 2 * 3, 12)
    want_x, want_c = block(x, c, vit_blocks, inj_inputs, ext_inputs, 4, 6)
    with torch.no_grad():
        got_c = c.clone()
        got_x = inference.interaction_(block, x.clone(), got_c, vit_blocks, inj_inputs, ext_inputs, 4, 6, reorder)
    torch.testing.assert_close(got_x, want_x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_c, want_c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("why", ["not_cpu", "impl_forced"])
def test_inference_path_without_projection_reordering(monkeypatch, why):
    # Off CPU, or with another operator formulation forced (inference.reorder_projections_ok),
    # the in-place path keeps the plain formulation: same outputs, neither reordered operator runs.
    from vit_adapter.layers.ms_deform_attn import IMPL_ENV_VAR, MSDeformAttn

    def refuse(*a, **k):
        raise AssertionError("reordered projection used")

    if why == "not_cpu":
        monkeypatch.setattr(inference, "reorder_projections_ok", lambda device: False)
    else:
        monkeypatch.setenv(IMPL_ENV_VAR, "gather")
    monkeypatch.setattr(MSDeformAttn, "sample_features", refuse)
    monkeypatch.setattr(MSDeformAttn, "sample_output_projected", refuse)
    m = _eval_adapter()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        fast = m(x)
    slow = m(x)
    for k in slow:
        torch.testing.assert_close(fast[k], slow[k], atol=2e-5, rtol=1e-5)
