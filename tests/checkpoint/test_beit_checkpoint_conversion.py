"""Release BEiT-Adapter checkpoints -> detectron2 (tools/convert_official_checkpoint.py --backbone-only).

The release's backbone names are checked against its own modules by
tests/test_official_beit_equivalence.py (its state dict loads into ours with
strict=True); here files in the release's layouts are written from a random
BEiTAdapter plus the release's extra buffers (``relative_position_index``) and
head keys of its HTC++ (mmdet) and UperNet (mmseg) checkpoints.
"""
import os

import pytest
import torch
from _random_params import randomize_
from checkpoint_fixtures import one_thread  # noqa: F401 (fixture)

from vit_adapter.modeling.beit import relative_position_index
from vit_adapter.tools import convert_official_checkpoint as tool
from conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ("embed_dim=48 depth=4 num_heads=3 deform_num_heads=3 conv_inplane=16 drop_path_rate=0.0 norm=BN "
        "with_cp=False interaction_indexes=[[0,0],[1,1],[2,2],[3,3]]").split()
CONFIG = os.path.join(REPO_ROOT, "configs/COCO/mask_rcnn_beit_adapter_l_3x_ms.py")


def _opts(**extra):
    return [f"model.backbone.bottom_up.{o}" for o in TINY + [f"{k}={v}" for k, v in extra.items()]]


def _release_file(tmp_path, segmentation):
    from vit_adapter.modeling.beit_adapter import BEiTAdapter

    kw = dict(embed_dim=48, depth=4, num_heads=3, deform_num_heads=3, conv_inplane=16, norm="BN",
              interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]])
    if segmentation:
        bb = BEiTAdapter(with_cls_token=True, img_size=64, **kw)
    else:
        bb = BEiTAdapter(window_attn=True, window_size=[3, 3, 3, 6], **kw)
    randomize_(bb)
    sd = {"backbone." + k: v for k, v in bb.state_dict().items()}
    for i, blk in enumerate(bb.blocks):  # the release stores the index buffers
        grid = blk.attn.table_grid
        sd[f"backbone.blocks.{i}.attn.relative_position_index"] = relative_position_index(grid, blk.attn.with_cls)
    if segmentation:  # mmseg EncoderDecoder heads
        sd["decode_head.conv_seg.weight"] = torch.zeros(150, 512, 1, 1)
        sd["auxiliary_head.conv_seg.weight"] = torch.zeros(150, 256, 1, 1)
    else:  # HTC++: ExtraAttention + FPN neck, HTC roi head
        sd["neck.0.attn.qkv.weight"] = torch.zeros(3, 3)
        sd["neck.1.lateral_convs.0.conv.weight"] = torch.zeros(256, 48, 1, 1)
        sd["roi_head.semantic_head.conv_logits.weight"] = torch.zeros(183, 256, 1, 1)
        sd["rpn_head.rpn_conv.weight"] = torch.zeros(256, 256, 3, 3)
    path = str(tmp_path / ("upernet.pth" if segmentation else "htc.pth"))
    torch.save({"meta": {}, "state_dict": sd}, path)
    return path, bb.state_dict()


@pytest.mark.parametrize("segmentation", [False, True])
def test_backbone_only_conversion_fills_the_backbone(tmp_path, segmentation, capsys):
    src, want = _release_file(tmp_path, segmentation)
    dst = str(tmp_path / "out.pth")
    extra = dict(with_cls_token=True, window_attn=False, img_size=64) if segmentation else dict(
        window_attn="[True,True,True,True]", window_size="[3,3,3,6]")
    tool.main([src, dst, "--backbone-only", "--config", CONFIG, *_opts(**extra)])
    out = capsys.readouterr().out
    assert "not converted: " + ("auxiliary_head (1), decode_head (1)" if segmentation else "neck (2), roi_head (1), rpn_head (1)") in out
    assert "4 relative_position_index buffers dropped" in out
    model = torch.load(dst, weights_only=True)["model"]
    assert set(model) == {"backbone.bottom_up." + k for k in want}
    assert all(torch.equal(model["backbone.bottom_up." + k], v) for k, v in want.items())


def test_backbone_of_the_wrong_variant_is_refused(tmp_path):
    src, _ = _release_file(tmp_path, segmentation=True)  # has cls_token, tables with cls rows
    with pytest.raises(SystemExit, match="cls_token"):
        tool.main([src, str(tmp_path / "out.pth"), "--backbone-only", "--config", CONFIG,
                   *_opts(window_attn="[True,True,True,True]", window_size="[3,3,3,6]")])


def test_full_conversion_of_a_segmentation_checkpoint_keeps_the_heads(tmp_path):
    """Without --backbone-only, a release UperNet checkpoint converts whole (names only here:
    no --config); the derived index buffers are dropped."""
    src, _ = _release_file(tmp_path, segmentation=True)
    tool.main([src, str(tmp_path / "out.pth")])
    model = torch.load(str(tmp_path / "out.pth"), weights_only=True)["model"]
    assert {"sem_seg_head.decode_head.conv_seg.weight", "sem_seg_head.auxiliary_head.conv_seg.weight"} <= set(model)
    assert "backbone.cls_token" in model and not any("relative_position_index" in k for k in model)
