"""BEiT blocks, relative position tables and their resize (vit_adapter.modeling.beit)."""
import pytest
import torch
from _random_params import randomize_
from timm.models.beit import Beit

from vit_adapter.modeling.beit import (
    BEiT,
    BEiTAttention,
    cubic_resample_matrix,
    geometric_progression_positions,
    relative_position_index,
    resize_relative_position_table,
    table_rows,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- index


@pytest.mark.parametrize("grid", [(2, 3), (3, 3)])
def test_relative_position_index_by_definition(grid):
    h, w = grid
    index = relative_position_index(grid, with_cls=True)
    rows = table_rows(grid, with_cls=True)
    pos = [(i, j) for i in range(h) for j in range(w)]
    for a, (ya, xa) in enumerate(pos):
        for b, (yb, xb) in enumerate(pos):
            assert index[a + 1, b + 1] == (ya - yb + h - 1) * (2 * w - 1) + (xa - xb + w - 1)
    assert (index[0, 1:] == rows - 3).all() and (index[1:, 0] == rows - 2).all() and index[0, 0] == rows - 1
    assert torch.equal(relative_position_index(grid, with_cls=False), index[1:, 1:])


# ----------------------------------------------------------------------------- table resize


def test_resize_is_the_identity_at_the_table_grid():
    table = torch.randn(table_rows((5, 5), True), 4)
    assert resize_relative_position_table(table, (5, 5), (5, 5), with_cls=True) is table


def test_resize_keeps_centre_and_cls_rows_exactly():
    table = torch.randn(table_rows((4, 4), True), 3, dtype=torch.float64)
    out = resize_relative_position_table(table, (4, 4), (10, 7), with_cls=True)
    assert out.shape == (table_rows((10, 7), True), 3)
    src_centre = 3 * 7 + 3  # offset (0, 0) of the 7 x 7 offset grid
    dst_centre = 9 * 13 + 6  # of the 19 x 13 grid
    assert torch.equal(out[dst_centre], table[src_centre])
    assert torch.equal(out[-3:], table[-3:])


def test_resize_to_a_smaller_grid_is_the_centred_crop():
    table = torch.randn(table_rows((5, 5), False), 2)
    out = resize_relative_position_table(table, (5, 5), (3, 2), with_cls=False)
    grid = table.reshape(9, 9, 2)
    assert torch.equal(out.reshape(5, 3, 2), grid[2:7, 3:6])


def test_geometric_positions_reach_the_target_offsets():
    pos = geometric_progression_positions(27, 79)  # BEiT 224 px table -> a 40 x 40 grid
    assert len(pos) == 27 and pos[13] == 0.0 and pos == sorted(pos)
    assert pos[14:] == [-p for p in reversed(pos[:13])]  # symmetric about 0
    assert abs(pos[-1] - 39) < 1e-2  # the outermost source offset lands on the outermost target


def test_cubic_resample_reproduces_cubic_polynomials():
    """A cubic interpolating spline is exact on cubic polynomials (inside the data range)."""
    src = geometric_progression_positions(11, 21)
    dst = [v / 3 for v in range(-27, 28)]  # inside [src[0], src[-1]]
    m = cubic_resample_matrix(src, dst)

    def poly(v):
        return 0.3 * v**3 - v**2 + 2 * v - 5

    got = m @ torch.tensor([poly(v) for v in src], dtype=torch.float64)
    want = torch.tensor([poly(v) for v in dst], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)
    assert torch.allclose(m.sum(1), torch.ones(len(dst), dtype=torch.float64))


def test_resize_equals_scipy_bicubic_spline_when_available():
    """interp2d(kind='cubic') on a grid is FITPACK's s=0 tensor spline, i.e. RectBivariateSpline."""
    interpolate = pytest.importorskip("scipy.interpolate", reason="scipy not installed (optional cross-check)")
    table = torch.randn(table_rows((7, 7), True), 2, dtype=torch.float64)
    out = resize_relative_position_table(table, (7, 7), (12, 12), with_cls=True)
    x = geometric_progression_positions(13, 23)
    t = torch.arange(-11, 12, dtype=torch.float64).numpy()
    for h in range(2):
        z = table[:-3, h].reshape(13, 13).numpy()
        ref = interpolate.RectBivariateSpline(x, x, z, kx=3, ky=3, s=0)(t, t)
        assert abs(out[:-3, h].reshape(23, 23).numpy() - ref).max() < 1e-10


def test_resize_is_differentiable():
    table = torch.randn(table_rows((3, 3), True), 2, requires_grad=True)
    resize_relative_position_table(table, (3, 3), (5, 4), with_cls=True).sum().backward()
    assert table.grad is not None and table.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- attention semantics


def test_q_v_bias_semantics_and_relative_bias():
    """Output = softmax((xWq + q_bias)(xWk)^T * scale + table[index]) (xWv + v_bias) Wo + bo."""
    torch.manual_seed(0)
    attn = randomize_(BEiTAttention(12, num_heads=3, table_grid=(2, 3), with_cls=True)).double().eval()
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    wq, wk, wv = attn.qkv.weight.chunk(3)
    q = (x @ wq.T + attn.q_bias).view(2, 7, 3, 4).transpose(1, 2)
    k = (x @ wk.T).view(2, 7, 3, 4).transpose(1, 2)  # no key bias
    v = (x @ wv.T + attn.v_bias).view(2, 7, 3, 4).transpose(1, 2)
    bias = attn.relative_position_bias_table[relative_position_index((2, 3), True).view(-1)].view(7, 7, 3)
    logits = q @ k.transpose(-2, -1) * 4**-0.5 + bias.permute(2, 0, 1)
    want = (logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 7, 12) @ attn.proj.weight.T + attn.proj.bias
    assert torch.allclose(attn(x, 2, 3), want, atol=1e-12)


def test_windowed_attention_on_a_window_multiple_is_per_window_attention():
    torch.manual_seed(0)
    windowed = randomize_(BEiTAttention(12, num_heads=3, table_grid=(2, 2), windowed=True)).double()
    x = torch.randn(1, 4 * 6, 12, dtype=torch.float64)
    out = windowed(x, 4, 6).view(1, 4, 6, 12)
    grid = x.view(1, 4, 6, 12)
    window = grid[:, 2:4, 2:4].reshape(1, 4, 12)
    # global attention over exactly that window's tokens, with the same table
    single = BEiTAttention(12, num_heads=3, table_grid=(2, 2)).double()
    single.load_state_dict(windowed.state_dict())
    assert torch.allclose(out[:, 2:4, 2:4].reshape(1, 4, 12), single(window, 2, 2), atol=1e-12)


def test_blocks_equal_timm_beit_on_its_weights():
    """Our BEiT trunk (segmentation layout) on a timm Beit's state dict gives timm's block outputs."""
    torch.manual_seed(0)
    ref = Beit(img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=3, init_values=0.1,
               use_abs_pos_emb=False, use_rel_pos_bias=True, num_classes=0)
    randomize_(ref).double().eval()
    ours = BEiT(img_size=64, embed_dim=48, depth=2, num_heads=3, init_values=0.1, with_cls_token=True).double().eval()
    sd = {k: v for k, v in ref.state_dict().items() if k.startswith(("blocks.", "patch_embed.", "cls_token"))}
    missing, unexpected = ours.load_state_dict(sd, strict=False)
    assert not missing and not unexpected
    img = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    x = torch.cat([ref.cls_token.expand(2, -1, -1), ref.patch_embed(img)], 1)
    for blk in ref.blocks:
        x = blk(x)
    tokens, H, W = ours.embed(img)
    y = torch.cat([ours.cls_tokens(2), tokens], 1)
    for blk in ours.blocks:
        y = blk(y, H, W)
    assert torch.allclose(x, y, atol=1e-10)


def test_state_dict_has_release_names_and_no_index():
    model = BEiT(img_size=64, embed_dim=48, depth=2, num_heads=3, init_values=1e-6, window_attn=True,
                 window_size=[2, 4])
    keys = set(model.state_dict())
    assert {"blocks.0.gamma_1", "blocks.0.attn.q_bias", "blocks.0.attn.v_bias",
            "blocks.1.attn.relative_position_bias_table", "blocks.0.attn.qkv.weight"} <= keys
    assert "blocks.0.attn.qkv.bias" not in keys
    assert not any("relative_position_index" in k for k in keys)
    assert model.blocks[0].attn.relative_position_bias_table.shape == (9, 3)  # window 2: (2*2-1)^2, no cls
    assert model.blocks[1].attn.relative_position_bias_table.shape == (49, 3)


def test_shared_table_equals_the_same_table_in_every_block():
    torch.manual_seed(0)
    shared = BEiT(img_size=64, embed_dim=24, depth=2, num_heads=3, with_cls_token=True,
                  use_rel_pos_bias=False, use_shared_rel_pos_bias=True).double()
    per_block = BEiT(img_size=64, embed_dim=24, depth=2, num_heads=3, with_cls_token=True).double()
    randomize_(shared)
    sd = {k: v for k, v in shared.state_dict().items() if not k.startswith("rel_pos_bias.")}
    for i in range(2):
        sd[f"blocks.{i}.attn.relative_position_bias_table"] = shared.rel_pos_bias.relative_position_bias_table
    per_block.load_state_dict(sd)
    x = torch.randn(2, 17, 24, dtype=torch.float64)
    a, b = x, x
    for blk_a, blk_b in zip(shared.blocks, per_block.blocks):
        a = blk_a(a, 4, 4, rel_pos_bias=shared.shared_bias(4, 4))
        b = blk_b(b, 4, 4)
    assert torch.allclose(a, b, atol=1e-12)


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="no window attention"):
        BEiT(embed_dim=24, depth=2, num_heads=3, with_cls_token=True, window_attn=True)
    with pytest.raises(ValueError, match="one per block"):
        BEiT(embed_dim=24, depth=2, num_heads=3, window_attn=True, window_size=[14, 14, 14])
    with pytest.raises(ValueError, match="rows"):
        resize_relative_position_table(torch.zeros(10, 2), (3, 3), (4, 4), with_cls=True)


@pytest.mark.parametrize("with_cls", [False, True])
def test_bias_at_another_grid_keeps_zero_offset_and_cls_entries(with_cls):
    """A global block on a grid other than its table's: every token's bias to itself is the
    stored zero-offset entry, and (with cls) the cls entries are the stored cls rows."""
    attn = randomize_(BEiTAttention(12, num_heads=3, table_grid=(3, 3), with_cls=with_cls))
    table = attn.relative_position_bias_table
    bias = attn.relative_bias((4, 6))
    n = 24 + int(with_cls)
    assert bias.shape == (3, n, n)
    grid = bias[:, 1:, 1:] if with_cls else bias
    centre = 2 * 5 + 2  # offset (0, 0) of the stored 5 x 5 offsets
    assert torch.equal(torch.diagonal(grid, dim1=1, dim2=2), table[centre][:, None].expand(3, 24))
    if with_cls:
        rows = table_rows((3, 3), True)
        assert torch.equal(bias[:, 0, 1:], table[rows - 3][:, None].expand(3, 24))
        assert torch.equal(bias[:, 1:, 0], table[rows - 2][:, None].expand(3, 24))
        assert torch.equal(bias[:, 0, 0], table[rows - 1])
    assert torch.equal(attn.relative_bias((3, 3)), table[attn.relative_position_index().view(-1)].view(
        n - 15, n - 15, 3).permute(2, 0, 1))
