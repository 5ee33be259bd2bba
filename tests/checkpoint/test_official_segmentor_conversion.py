"""Release UperNet checkpoints (mmseg layout) -> configs/ADE20K and the demo config: 0 missing / 0 unexpected.

Release-layout state dicts are written from mmseg 0.20.2's module definitions
(tests/_seg_release_layout.py: UPerHead / FCNHead names and shapes); the backbone part
uses the ViT-Adapter names, which tests/modeling/test_backbone.py checks against the
release's modules, with the release's pos_embed cls slot.
"""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from _seg_release_layout import fcn_head_shapes, random_state, uper_head_shapes
from conftest import REPO_ROOT
from vit_adapter.checkpoint.official import (
    convert_official_segmentor_state_dict,
    is_official_segmentor_state_dict,
    is_official_state_dict,
)
from vit_adapter.tools import convert_official_checkpoint as tool

ADE = os.path.join(REPO_ROOT, "configs", "ADE20K")
DEMO = os.path.join(REPO_ROOT, "configs", "demo", "upernet_vit_adapter_demo_seg.py")
ROWS = sorted(f for f in os.listdir(ADE) if f.startswith("upernet_") and f.endswith(".py"))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: tiny tensors on a shared CPU (threads only spin)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)



def release_shapes(model, num_classes, img_size=640):
    """mmseg EncoderDecoder state-dict names -> shapes for `model`'s sizes (`img_size`: the
    BEiT-Adapter's grid, whose index buffers the release stores)."""
    bb = {"backbone." + k: tuple(v.shape) for k, v in model.backbone.state_dict().items()}
    if "backbone.pos_embed" in bb:
        pos = bb["backbone.pos_embed"]
        bb["backbone.pos_embed"] = (pos[0], pos[1] + 1, pos[2])  # the release's cls slot
    if "backbone.cls_token" in bb:  # BEiT-Adapter (segmentation): the release stores the index buffers
        n = (img_size // 16) ** 2 + 1  # grid tokens + cls
        for i in range(len(model.backbone.blocks)):
            bb[f"backbone.blocks.{i}.attn.relative_position_index"] = (n, n)
    head = model.sem_seg_head
    d = model.backbone.embed_dim
    channels = head.decode_head.conv_seg.in_channels
    aux = head.auxiliary_head.conv_seg.in_channels
    return {**bb, **uper_head_shapes(d, channels, num_classes), **fcn_head_shapes(d, aux, num_classes)}


@pytest.mark.parametrize("row", ROWS)
def test_every_release_row_converts_exactly(row):
    cfg = LazyConfig.load(os.path.join(ADE, row))
    with torch.device("meta"):
        model = instantiate(cfg.model)
        release = {k: torch.empty(s) for k, s in release_shapes(model, 150).items()}
    assert is_official_segmentor_state_dict(release) and not is_official_state_dict(release)
    out, report = convert_official_segmentor_state_dict(
        {"state_dict": release, "meta": {}}, target_state_dict=model.state_dict()
    )
    assert set(out) == set(model.state_dict())  # 0 missing, 0 unexpected
    assert report["missing"] == [] and report["dropped"] == [] and report["num_classes"] == 150
    if "beit" in row:
        assert "24 relative_position_index buffers dropped (derived from the grid)" in report["notes"]
    assert report["by_part"]["sem_seg_head.decode_head"] == len(uper_head_shapes(1, 1, 1))


# The demo config made tiny through the tool's key=value overrides (train_net.py's syntax).
TINY = ["model.backbone.embed_dim=32", "model.backbone.depth=4", "model.backbone.num_heads=2", "model.backbone.deform_num_heads=2",
        "model.backbone.interaction_indexes=[[0,0],[1,1],[2,2],[3,3]]", "model.sem_seg_head.channels=16",
        "model.sem_seg_head.aux_channels=8"]


def _demo_model(**head):
    from vit_adapter.engine.overrides import apply_overrides

    cfg = apply_overrides(LazyConfig.load(DEMO), TINY)
    cfg.model.sem_seg_head.update(head)
    return instantiate(cfg.model).eval()


def test_cli_converts_a_release_file_and_the_weights_land_by_name(tmp_path):
    model = _demo_model()
    release = random_state(release_shapes(model, 4))
    src, dst = str(tmp_path / "upernet_release.pth"), str(tmp_path / "converted.pth")
    torch.save({"meta": {"CLASSES": ["background", "circle", "square", "triangle"]}, "state_dict": release}, src)
    tool.main([src, dst, "--config", DEMO, *TINY])
    converted = torch.load(dst, weights_only=True)["model"]
    incompatible = model.load_state_dict(converted, strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    sd = model.state_dict()
    torch.testing.assert_close(sd["sem_seg_head.decode_head.psp_modules.3.1.conv.weight"],
                               release["decode_head.psp_modules.3.1.conv.weight"])
    torch.testing.assert_close(sd["sem_seg_head.auxiliary_head.convs.0.bn.running_var"],
                               release["auxiliary_head.convs.0.bn.running_var"])
    torch.testing.assert_close(sd["backbone.pos_embed"], release["backbone.pos_embed"][:, 1:])
    with torch.no_grad():  # a forward with the converted weights
        out = model([{"image": torch.rand(3, 64, 96) * 255}])[0]["sem_seg"]
    assert out.shape == (4, 64, 96) and torch.isfinite(out).all()


def test_cli_takes_overrides_and_reports_mismatches(tmp_path, capsys):
    model = _demo_model(num_classes=6)
    src = str(tmp_path / "six.pth")
    torch.save({"state_dict": random_state(release_shapes(model, 6))}, src)
    with pytest.raises(SystemExit, match="sem_seg_head.decode_head.conv_seg.weight"):
        tool.main([src, str(tmp_path / "x.pth"), "--config", DEMO, *TINY])  # the demo config has 4 classes
    tool.main([src, str(tmp_path / "y.pth"), "--config", DEMO, *TINY, "model.sem_seg_head.num_classes=6"])
    assert "classes: 6" in capsys.readouterr().out


def test_auxiliary_head_dropped_for_a_model_without_one(tmp_path):
    model = _demo_model()
    release = random_state(release_shapes(model, 4))
    no_aux = _demo_model(aux_in_feature=None)
    out, report = convert_official_segmentor_state_dict(release, target_state_dict=no_aux.state_dict())
    assert set(out) == set(no_aux.state_dict())
    assert report["dropped"] and all(k.startswith("auxiliary_head.") for k in report["dropped"])


def test_unknown_keys_are_refused():
    model = _demo_model()
    release = random_state(release_shapes(model, 4))
    release["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="neck.lateral_convs.0.conv.weight"):
        convert_official_segmentor_state_dict(release)
