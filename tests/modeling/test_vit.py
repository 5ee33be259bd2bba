"""The plain ViT (vit_adapter.modeling.vit): windows, pos-embed, padding modes, timm / DeiT names."""
import pytest
import torch
import torch.nn.functional as F

from vit_adapter.modeling.vit import Attention, Block, VisionTransformer, window_partition, window_unpartition


@pytest.mark.parametrize("hw", [(6, 9), (5, 7), (1, 1), (3, 3)])
def test_window_partition_round_trip(hw):
    x = torch.randn(2, *hw, 4)
    windows, pad_hw = window_partition(x, 3)
    Hp, Wp = pad_hw
    assert Hp % 3 == 0 and Wp % 3 == 0 and Hp - hw[0] < 3 and Wp - hw[1] < 3
    assert windows.shape == (2 * (Hp // 3) * (Wp // 3), 9, 4)
    # window 0 of image 0 is the top-left 3x3 block, row-major
    torch.testing.assert_close(windows[0].view(3, 3, 4)[: hw[0], : hw[1]], x[0, :3, :3])
    torch.testing.assert_close(window_unpartition(windows, 3, pad_hw, hw), x)


def test_window_partition_pads_with_zeros():
    x = torch.ones(1, 4, 4, 2)
    windows, pad_hw = window_partition(x, 3)
    assert pad_hw == (6, 6)
    assert windows.sum() == 4 * 4 * 2  # padded tokens are exactly zero


def _official_pos_embed(pos_embed, grid, H, W):
    # the release: drop the cls slot, bicubic F.interpolate, align_corners=False
    D = pos_embed.shape[-1]
    p = pos_embed[:, 1:].reshape(1, grid, grid, D).permute(0, 3, 1, 2)
    p = F.interpolate(p, size=(H, W), mode="bicubic", align_corners=False)
    return p.reshape(1, D, H * W).permute(0, 2, 1)


@pytest.mark.parametrize("pretrain_size, hw", [(224, (4, 6)), (224, (20, 9)), (224, (14, 14)), (384, (5, 3))])
def test_pos_embed_resize_matches_official(pretrain_size, hw):
    vit = VisionTransformer(pretrain_size=pretrain_size, embed_dim=8, depth=1, num_heads=2)
    grid = pretrain_size // 16
    assert vit.pos_embed.shape == (1, grid * grid + 1, 8)
    assert vit.pos_embed.abs().max() == 0  # zeros at init, as released
    with torch.no_grad():
        vit.pos_embed.normal_()
    got = vit.get_pos_embed(*hw)
    torch.testing.assert_close(got, _official_pos_embed(vit.pos_embed, grid, *hw))
    if hw == (grid, grid):  # no resize: the stored grid itself
        torch.testing.assert_close(got, vit.pos_embed[:, 1:])


def _loop_window_attention(attn, x, H, W, masked):
    """Independent windowed attention: qkv on the unpadded tokens, windows of the
    zero-padded (H, W) qkv map; padded keys are logit-0 / value-0 entries
    ("official") or excluded ("masked")."""
    B, N, C = x.shape
    ws, nh = attn.window_size, attn.num_heads
    hd = C // nh
    qkv = attn.qkv(x).view(B, H, W, 3, nh, hd)
    out = torch.zeros(B, H, W, nh, hd, dtype=x.dtype)
    for b in range(B):
        for i0 in range(0, H, ws):
            for j0 in range(0, W, ws):
                real = [(i, j) for i in range(i0, min(i0 + ws, H)) for j in range(j0, min(j0 + ws, W))]
                n_pad = ws * ws - len(real)
                q = torch.stack([qkv[b, i, j, 0] for i, j in real], 1)  # (nh, n, hd)
                k = torch.stack([qkv[b, i, j, 1] for i, j in real], 1)
                v = torch.stack([qkv[b, i, j, 2] for i, j in real], 1)
                if not masked and n_pad:
                    k = torch.cat([k, k.new_zeros(nh, n_pad, hd)], 1)
                    v = torch.cat([v, v.new_zeros(nh, n_pad, hd)], 1)
                a = ((q @ k.transpose(1, 2)) * hd**-0.5).softmax(-1) @ v
                for t, (i, j) in enumerate(real):
                    out[b, i, j] = a[:, t]
    return attn.proj(out.reshape(B, N, C))


@pytest.mark.parametrize("padding", ["official", "masked"])
@pytest.mark.parametrize("hw", [(6, 9), (5, 7)])
def test_window_attention_matches_loop(padding, hw):
    attn = Attention(12, num_heads=3, window_size=3, window_padding=padding).double().eval()
    x = torch.randn(2, hw[0] * hw[1], 12, dtype=torch.float64)
    expected = _loop_window_attention(attn, x, *hw, masked=padding == "masked")
    torch.testing.assert_close(attn(x, *hw), expected, rtol=1e-9, atol=1e-9)


def test_official_and_masked_padding_agree_only_on_multiples():
    official = Attention(12, num_heads=3, window_size=3, window_padding="official").eval()
    masked = Attention(12, num_heads=3, window_size=3, window_padding="masked").eval()
    masked.load_state_dict(official.state_dict())
    x = torch.randn(2, 6 * 9, 12)
    torch.testing.assert_close(official(x, 6, 9), masked(x, 6, 9))
    x = torch.randn(2, 5 * 7, 12)
    assert not torch.allclose(official(x, 5, 7), masked(x, 5, 7), atol=1e-4)


def test_global_attention_matches_formula():
    attn = Attention(12, num_heads=3, window_size=0).double().eval()
    x = torch.randn(2, 10, 12, dtype=torch.float64)
    q, k, v = attn.qkv(x).view(2, 10, 3, 3, 4).permute(2, 0, 3, 1, 4)
    a = ((q @ k.transpose(-1, -2)) * 4**-0.5).softmax(-1) @ v
    expected = attn.proj(a.transpose(1, 2).reshape(2, 10, 12))
    torch.testing.assert_close(attn(x, 2, 5), expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="window_padding"):
        Attention(12, num_heads=3, window_size=3, window_padding="reflect")
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, num_heads=3)
    with pytest.raises(ValueError, match="window_block_indexes"):
        VisionTransformer(embed_dim=8, depth=2, num_heads=2, window_block_indexes=[0, 2])


@pytest.fixture(scope="module")
def deit_tiny():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()  # random init, no download


def test_deit_state_dict_names_and_shapes(deit_tiny):
    sd = deit_tiny.state_dict()
    vit = VisionTransformer(pretrain_size=224, embed_dim=192, depth=12, num_heads=3,
                            window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10])
    ours = vit.state_dict()
    shared = set(sd) & set(ours)
    assert {k for k in ours if k not in sd} == {f"blocks.{i}.gamma{j}" for i in range(12) for j in (1, 2)}
    assert {k for k in sd if k not in ours} == {"cls_token", "norm.weight", "norm.bias", "head.weight", "head.bias"}
    assert all(sd[k].shape == ours[k].shape for k in shared)
    missing, unexpected = vit.load_state_dict(sd, strict=False)
    assert set(missing) == {k for k in ours if k not in sd}
    assert all(torch.equal(vit.state_dict()[k], sd[k]) for k in shared)


def test_block_equals_timm_block(deit_tiny):
    deit = deit_tiny
    block = Block(192, 3, layer_scale=False, window_size=0).eval()
    block.load_state_dict(deit.blocks[0].state_dict())
    x = torch.randn(2, 7 * 5, 192)
    torch.testing.assert_close(block(x, 7, 5), deit.blocks[0](x), rtol=1e-5, atol=1e-5)


def test_patch_embed_pos_embed_equals_timm(deit_tiny):
    deit = deit_tiny
    vit = VisionTransformer(pretrain_size=224, embed_dim=192, depth=12, num_heads=3, layer_scale=False).eval()
    vit.load_state_dict(deit.state_dict(), strict=False)
    img = torch.randn(1, 3, 224, 224)
    tokens, H, W = vit.embed(img)
    assert (H, W) == (14, 14)
    expected = deit.patch_embed(img) + deit.pos_embed[:, 1:]
    torch.testing.assert_close(tokens, expected)


def test_forward_shapes_and_checkpointing():
    torch.manual_seed(0)
    kwargs = dict(embed_dim=16, depth=3, num_heads=2, window_size=2, window_block_indexes=[0, 2])
    a = VisionTransformer(**kwargs)
    b = VisionTransformer(**kwargs, with_cp=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 48, 80)
    ya, yb = a(x), b(x)
    assert ya.shape == (2, 16, 3, 5)
    torch.testing.assert_close(ya, yb)
    (ya ** 2).sum().backward()
    (yb ** 2).sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert pa.grad is not None and torch.isfinite(pa.grad).all(), name
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)
