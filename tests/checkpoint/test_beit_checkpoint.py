"""BEiT / BEiTv2 ImageNet weights through ViTAdapterCheckpointer into BEiT-Adapter detectors.

Checkpoint files are written from timm's own ``Beit`` (the ``beit_*`` /
``beitv2_*`` layout, independent of our model code) with every tensor random,
in timm's layout and in unilm's (``{"model": ...}`` with the index buffers, or
one shared ``rel_pos_bias`` table as in pre-training checkpoints).
"""
import os

import pytest
import timm
import torch
from _random_params import randomize_
from checkpoint_fixtures import one_thread  # noqa: F401 (fixture)
from detectron2.config import LazyConfig, instantiate
from timm.models.beit import Beit

from vit_adapter.checkpoint.checkpointer import CheckpointMismatchError, ViTAdapterCheckpointer
from vit_adapter.modeling.beit import relative_position_index, resize_relative_position_table
from conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")
BB = "backbone.bottom_up."
TINY_BEIT = dict(embed_dim=48, depth=4, num_heads=3, deform_num_heads=3, conv_inplane=16,
                 interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], drop_path_rate=0.0, norm="BN", with_cp=False)


def build_beit_detector(**backbone):
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs/common/models/mask_rcnn_beit_adapter.py"))
    cfg.model.backbone.bottom_up.update({**TINY_BEIT, **backbone})
    cfg.model.roi_heads.num_classes = 3
    return instantiate(cfg.model).eval()


def timm_beit(shared=False, seed=0):
    """A random timm Beit, 4 blocks of width 48, pre-trained at 64 px (4 x 4 grid: 7 x 7 + 3 table rows)."""
    torch.manual_seed(seed)
    model = Beit(img_size=64, patch_size=16, embed_dim=48, depth=4, num_heads=3, init_values=0.1,
                 use_abs_pos_emb=False, use_rel_pos_bias=not shared, use_shared_rel_pos_bias=shared)
    return randomize_(model, seed=seed)


def _unilm(sd, depth=4, grid=(4, 4)):
    """timm names + the persistent index buffers unilm's checkpoints carry."""
    sd = dict(sd)
    index = relative_position_index(grid, with_cls=True)
    for k in [k for k in sd if k.endswith("relative_position_bias_table")]:
        sd[k[: -len("bias_table")] + "index"] = index.clone()
    return {"model": sd}


def _load(model, tmp_path, payload):
    path = str(tmp_path / "beit.pth")
    torch.save(payload, path)
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    return ck.last_report, model.state_dict()


@pytest.mark.parametrize("layout", ["timm", "unilm"])
def test_detection_variant_loads_beit(tmp_path, layout):
    """Windows 4 (the checkpoint's grid: table used as is, cls rows dropped) and 8 (resized)."""
    ref = timm_beit()
    sd = ref.state_dict()
    model = build_beit_detector(window_attn=True, window_size=[4, 4, 4, 8], init_values=1e-6)
    report, after = _load(model, tmp_path, sd if layout == "timm" else _unilm(sd))
    for i in range(4):
        b = f"blocks.{i}."
        for name in ("gamma_1", "gamma_2", "attn.q_bias", "attn.v_bias", "attn.qkv.weight", "mlp.fc2.bias"):
            assert torch.equal(after[BB + b + name], sd[b + name]), b + name
    table = sd["blocks.0.attn.relative_position_bias_table"]
    assert torch.equal(after[BB + "blocks.0.attn.relative_position_bias_table"], table[:-3])  # cls rows dropped
    big = after[BB + "blocks.3.attn.relative_position_bias_table"]
    src = sd["blocks.3.attn.relative_position_bias_table"]
    assert big.shape == (15 * 15, 3)
    assert torch.equal(big[7 * 15 + 7], src[3 * 7 + 3])  # zero offset exact
    assert torch.allclose(big, resize_relative_position_table(src, (4, 4), (8, 8), True)[:-3])
    assert not [k for k in report["missing"] if k.startswith(tuple(BB + p for p in ("blocks", "patch_embed", "rel_pos", "pos_embed")))]
    assert "cls_token" in report["dropped"] and "head.weight" in report["dropped"]
    assert any("resized" in n and "4x4 -> 8x8" in n for n in report["notes"])


def test_segmentation_variant_keeps_cls_rows_and_token(tmp_path):
    ref = timm_beit()
    sd = ref.state_dict()
    model = build_beit_detector(with_cls_token=True, window_attn=False, img_size=128, init_values=1e-6)
    report, after = _load(model, tmp_path, _unilm(sd))
    assert torch.equal(after[BB + "cls_token"], sd["cls_token"])
    for i in range(4):
        got = after[BB + f"blocks.{i}.attn.relative_position_bias_table"]
        src = sd[f"blocks.{i}.attn.relative_position_bias_table"]
        assert got.shape == (15 * 15 + 3, 3)
        assert torch.equal(got[-3:], src[-3:]) and torch.equal(got[7 * 15 + 7], src[3 * 7 + 3])
    assert not [k for k in report["missing"] if k.startswith(tuple(BB + p for p in ("blocks", "patch_embed", "cls_token")))]
    assert not any("relative_position" in k for k in report["unexpected"])


def test_shared_pretraining_table_is_copied_to_every_block(tmp_path):
    ref = timm_beit(shared=True)
    sd = ref.state_dict()
    assert "rel_pos_bias.relative_position_bias_table" in sd
    sd["mask_token"] = torch.zeros(1, 1, 48)  # a BEiT pre-training checkpoint
    model = build_beit_detector(window_attn=True, window_size=[4, 4, 4, 4])
    report, after = _load(model, tmp_path, _unilm(sd))
    shared = sd["rel_pos_bias.relative_position_bias_table"]
    for i in range(4):
        assert torch.equal(after[BB + f"blocks.{i}.attn.relative_position_bias_table"], shared[:-3])
    assert any("copied to the 4 blocks" in n for n in report["notes"])
    assert "mask_token" in report["dropped"]


def test_loaded_beit_blocks_compute_timms_function(tmp_path):
    """After loading, the segmentation trunk at the checkpoint's grid gives timm's block outputs."""
    ref = timm_beit().double().eval()
    model = build_beit_detector(with_cls_token=True, window_attn=False, img_size=64)
    _load(model, tmp_path, ref.state_dict())
    bb = model.backbone.bottom_up.double()
    img = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        x = torch.cat([ref.cls_token, ref.patch_embed(img)], 1)
        for blk in ref.blocks:
            x = blk(x)
        tokens, H, W = bb.embed(img)
        y = torch.cat([bb.cls_tokens(1), tokens], 1)
        for blk in bb.blocks:
            y = blk(y, H, W)
    assert torch.allclose(x, y, atol=1e-10)


def test_plain_vit_config_refuses_a_beit_checkpoint(tmp_path):
    from checkpoint_fixtures import build_tiny

    model = build_tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = str(tmp_path / "beit.pth")
    torch.save(_unilm(timm_beit().state_dict()), path)
    with pytest.raises(CheckpointMismatchError) as e:
        ViTAdapterCheckpointer(model).load(path)
    msg = str(e.value)
    assert "\n" not in msg and path in msg
    assert "configs/COCO/mask_rcnn_beit_adapter_l_3x_ms.py" in msg and "relative position bias" in msg
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_beit_adapter_refuses_a_vit_checkpoint_without_tables(tmp_path):
    """DeiT-style weights (qkv bias, absolute pos_embed, no tables) would leave every table at zero."""
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, embed_dim=48, depth=4,
                            num_heads=3)
    path = str(tmp_path / "deit.pth")
    torch.save({"model": vit.state_dict()}, path)
    with pytest.raises(CheckpointMismatchError, match="no position information") as e:
        ViTAdapterCheckpointer(build_beit_detector(window_attn=True, window_size=[4, 4, 4, 8])).load(path)
    assert "\n" not in str(e.value)
