"""Adapter parts: reference points, spatial prior module, ConvFFN, injector, extractor, norms."""
import pytest
import torch
from torch import nn

from vit_adapter.modeling.adapter_modules import (
    ConvFFN,
    DWConv,
    Extractor,
    Injector,
    InteractionBlock,
    SpatialPriorModule,
    build_norm,
    deform_inputs,
    get_reference_points,
)
from vit_adapter.compat import LayerNorm2d


def test_reference_points_are_pixel_centres():
    ref = get_reference_points([(2, 3), (1, 2)])
    assert ref.shape == (1, 2 * 3 + 1 * 2, 1, 2)
    # official: linspace(0.5, H - 0.5, H) / H, (x, y) order, row-major
    expected = torch.tensor(
        [[0.5 / 3, 0.25], [1.5 / 3, 0.25], [2.5 / 3, 0.25],
         [0.5 / 3, 0.75], [1.5 / 3, 0.75], [2.5 / 3, 0.75],
         [0.25, 0.5], [0.75, 0.5]]
    )
    torch.testing.assert_close(ref[0, :, 0], expected)


def test_deform_inputs_layout_non_square():
    inj, ext = deform_inputs(64, 96)
    assert inj.spatial_shapes.tolist() == [[8, 12], [4, 6], [2, 3]]
    assert inj.level_start_index.tolist() == [0, 96, 120]
    assert inj.reference_points.shape == (1, 4 * 6, 1, 2)
    assert ext.spatial_shapes.tolist() == [[4, 6]] and ext.level_start_index.tolist() == [0]
    assert ext.reference_points.shape == (1, 96 + 24 + 6, 1, 2)
    assert inj.spatial_shapes.dtype == torch.long


@pytest.mark.parametrize("hw", [(64, 96), (96, 64), (32, 32)])
def test_spatial_prior_module_shapes(hw):
    spm = SpatialPriorModule(inplanes=8, embed_dim=12, norm="BN")
    c1, c2, c3, c4 = spm(torch.randn(2, 3, *hw))
    H, W = hw
    assert c1.shape == (2, 12, H // 4, W // 4)
    assert c2.shape == (2, H // 8 * W // 8, 12)
    assert c3.shape == (2, H // 16 * W // 16, 12)
    assert c4.shape == (2, H // 32 * W // 32, 12)


def test_spatial_prior_module_layers_as_released():
    spm = SpatialPriorModule(inplanes=64, embed_dim=384, norm="BN")
    convs = [spm.stem[0], spm.stem[3], spm.stem[6], spm.conv2[0], spm.conv3[0], spm.conv4[0]]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 64, 2), (64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 256, 2)]
    assert all(c.bias is None and c.kernel_size == (3, 3) for c in convs)
    assert isinstance(spm.stem[9], nn.MaxPool2d)
    assert [isinstance(m, nn.BatchNorm2d) for m in (spm.stem[1], spm.stem[4], spm.stem[7])] == [True] * 3
    fcs = [spm.fc1, spm.fc2, spm.fc3, spm.fc4]
    assert [(f.in_channels, f.out_channels, f.bias is not None) for f in fcs] == [
        (64, 384, True), (128, 384, True), (256, 384, True), (256, 384, True)]


def test_dwconv_applies_the_conv_per_level():
    dw = DWConv(4)
    shapes = [(4, 6), (2, 3), (1, 2)]
    maps = [torch.randn(2, 4, h, w) for h, w in shapes]
    tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
    out = dw(tokens, shapes)
    expected = torch.cat([dw.dwconv(m).flatten(2).transpose(1, 2) for m in maps], 1)
    torch.testing.assert_close(out, expected)
    assert dw.dwconv.groups == 4 and dw.dwconv.bias is not None


def test_conv_ffn_formula():
    ffn = ConvFFN(8, 2)
    shapes = [(4, 6), (2, 3), (1, 2)]
    x = torch.randn(2, 24 + 6 + 2, 8)
    expected = ffn.fc2(nn.functional.gelu(ffn.dwconv(ffn.fc1(x), shapes)))
    torch.testing.assert_close(ffn(x, shapes), expected)


def _tokens(H=4, W=6, D=12, B=2):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, H * W, D, generator=g)
    c = torch.randn(B, 4 * H * W + H * W + H * W // 4, D, generator=g)
    return x, c


def test_injector_is_identity_at_init():
    inj = Injector(12, num_heads=3, n_levels=3, init_values=0.0)
    assert inj.gamma.shape == (12,) and inj.gamma.abs().max() == 0
    x, c = _tokens()
    inputs, _ = deform_inputs(64, 96)
    assert torch.equal(inj(x, c, inputs), x)


def test_injector_and_extractor_formulas():
    x, c = _tokens()
    inj_in, ext_in = deform_inputs(64, 96)
    inj = Injector(12, num_heads=3, n_levels=3, init_values=0.5)
    attn = inj.attn(inj.query_norm(x), inj_in.reference_points, inj.feat_norm(c), inj_in.spatial_shapes,
                    inj_in.level_start_index, None)
    torch.testing.assert_close(inj(x, c, inj_in), x + 0.5 * attn)

    ext = Extractor(12, num_heads=3, n_levels=1, cffn_ratio=0.25).eval()
    shapes = [(8, 12), (4, 6), (2, 3)]
    q = c + ext.attn(ext.query_norm(c), ext_in.reference_points, ext.feat_norm(x), ext_in.spatial_shapes,
                     ext_in.level_start_index, None)
    expected = q + ext.ffn(ext.ffn_norm(q), shapes)
    torch.testing.assert_close(ext(c, x, ext_in, shapes), expected)
    assert ext.ffn.fc1.out_features == 3  # D * cffn_ratio
    assert isinstance(ext.query_norm, nn.LayerNorm) and ext.query_norm.eps == 1e-6


def test_interaction_block_extra_extractors_and_checkpointing():
    def build(with_cp):
        torch.manual_seed(0)
        return InteractionBlock(12, num_heads=3, init_values=0.1, extra_extractor=True, with_cp=with_cp)

    a, b = build(False), build(True)
    assert len(a.extra_extractors) == 2
    assert InteractionBlock(12, num_heads=3).extra_extractors is None
    blocks = [nn.Linear(12, 12)]
    inj_in, ext_in = deform_inputs(64, 96)
    outs = []
    for m in (a, b):
        x, c = (t.clone().requires_grad_(True) for t in _tokens())
        xo, co = m(x, c, [lambda t, H, W: blocks[0](t)], inj_in, ext_in, 4, 6)
        ((xo ** 2).sum() + (co ** 2).sum()).backward()
        outs.append((xo, co, x.grad, c.grad))
    for u, v in zip(*outs):
        torch.testing.assert_close(u, v)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert pa.grad is not None and torch.isfinite(pa.grad).all(), name
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_build_norm():
    assert type(build_norm("SyncBN", 8)) is nn.BatchNorm2d  # single process: plain BN
    assert type(build_norm("BN", 8)) is nn.BatchNorm2d
    assert isinstance(build_norm("", 8), nn.Identity)
    assert isinstance(build_norm(None, 8), nn.Identity)
    assert isinstance(build_norm("LN", 8), LayerNorm2d)
    assert isinstance(build_norm("GN", 64), nn.GroupNorm)
    assert isinstance(build_norm(lambda c: nn.InstanceNorm2d(c), 8), nn.InstanceNorm2d)
    # same state-dict keys as the release's SyncBatchNorm
    assert set(build_norm("SyncBN", 8).state_dict()) == set(nn.SyncBatchNorm(8).state_dict())


def test_syncbn_trains_in_one_process():
    spm = SpatialPriorModule(inplanes=8, embed_dim=12, norm="SyncBN").train()
    c1, *_ = spm(torch.randn(2, 3, 32, 32))
    c1.sum().backward()
    assert spm.stem[1].num_batches_tracked.item() == 1


@pytest.mark.parametrize("backend, expected", [("nccl", "SyncBatchNorm"), ("gloo", "NaiveSyncBatchNorm")])
def test_build_norm_multi_process_choice(monkeypatch, backend, expected):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: backend)
    norm = build_norm("SyncBN", 8)
    assert type(norm).__name__ == expected
    assert set(norm.state_dict()) == set(nn.BatchNorm2d(8).state_dict())
