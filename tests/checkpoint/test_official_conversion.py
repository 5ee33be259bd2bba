"""Official ViT-Adapter (mmdetection) checkpoints -> detectron2.

The fixtures are written from the official module definitions
(tests/checkpoint_fixtures.py), not from our model, so a renamed or reshaped
parameter on either side shows up here.
"""
import pytest
import torch
import torch.nn.functional as F
from checkpoint_fixtures import (
    CASCADE_CFG,
    MASK_RCNN_CFG,
    MMDET_MASK_RCNN_CONFIG_TEXT,
    TINY,
    build_tiny,
    tiny_model_cfg,
    official_backbone_shapes,
    official_detector_shapes,
    one_thread,  # noqa: F401 (fixture)
    random_state_dict,
)
from detectron2.config import instantiate
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from vit_adapter.modeling.backbone import ViTAdapter
from vit_adapter.checkpoint.checkpointer import ViTAdapterCheckpointer
from vit_adapter.checkpoint.official import (
    check_conventions,
    convert_official_state_dict,
    is_official_state_dict,
)

pytestmark = pytest.mark.usefixtures("one_thread")
NUM_CLASSES = 3


def _official(tmp_path, cascade=False, agnostic=False, meta=None, name="official.pth"):
    sd = random_state_dict(official_detector_shapes(TINY, NUM_CLASSES, cascade, agnostic))
    path = str(tmp_path / name)
    torch.save({"meta": meta or {"CLASSES": ("a", "b", "c")}, "state_dict": sd}, path)
    return path, sd


def test_fixture_names_equal_our_backbone_names():
    """Our ViTAdapter's state dict has exactly the official names and shapes."""
    ours = ViTAdapter(**TINY).state_dict()
    official = official_backbone_shapes(**TINY)
    assert sorted(ours) == sorted(official)
    assert {k: tuple(v.shape) for k, v in ours.items()} == official


def test_mask_rcnn_converts_and_loads_with_nothing_missing(tmp_path):
    path, sd = _official(tmp_path)
    model = build_tiny(num_classes=NUM_CLASSES)
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    rep = ck.last_report
    assert rep["format"] == "official_mmdet"
    assert rep["missing"] == [] and rep["unexpected"] == [] and rep["skipped_shapes"] == []
    assert len(rep["loaded"]) == len(sd) == len(model.state_dict())

    # backbone features == the official backbone weights loaded directly (strict)
    direct = ViTAdapter(**TINY).eval()
    direct.load_state_dict({k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")})
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got = model.backbone.bottom_up(x)
        want = direct(x)
        for k in want:
            assert torch.equal(got[k], want[k]), k
        # FPN == mmdet FPN computed from the neck tensors (1x1 laterals, nearest top-down,
        # 3x3 outputs, p6 = max_pool(k=1, s=2) of p5)
        lat = [F.conv2d(want[f], sd[f"neck.lateral_convs.{i}.conv.weight"], sd[f"neck.lateral_convs.{i}.conv.bias"])
               for i, f in enumerate(("res2", "res3", "res4", "res5"))]
        for i in (3, 2, 1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
        outs = [F.conv2d(t, sd[f"neck.fpn_convs.{i}.conv.weight"], sd[f"neck.fpn_convs.{i}.conv.bias"], padding=1)
                for i, t in enumerate(lat)]
        outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        fpn = model.backbone(x)
        for i, name in enumerate(("p2", "p3", "p4", "p5", "p6")):
            torch.testing.assert_close(fpn[name], outs[i], rtol=1e-5, atol=1e-5, msg=name)
        # RPN: objectness / deltas of p2 == mmdet rpn_conv -> relu -> rpn_cls / rpn_reg
        h = F.relu(F.conv2d(outs[0], sd["rpn_head.rpn_conv.weight"], sd["rpn_head.rpn_conv.bias"], padding=1))
        obj, deltas = model.proposal_generator.rpn_head([fpn["p2"]])
        torch.testing.assert_close(obj[0], F.conv2d(h, sd["rpn_head.rpn_cls.weight"], sd["rpn_head.rpn_cls.bias"]))
        torch.testing.assert_close(deltas[0], F.conv2d(h, sd["rpn_head.rpn_reg.weight"], sd["rpn_head.rpn_reg.bias"]))
        # box head: flatten(256x7x7) -> fc -> relu -> fc -> relu -> cls / reg
        rois = torch.randn(5, 256, 7, 7)
        feat = model.roi_heads.box_head(rois)
        ref = F.relu(F.linear(rois.flatten(1), sd["roi_head.bbox_head.shared_fcs.0.weight"], sd["roi_head.bbox_head.shared_fcs.0.bias"]))
        ref = F.relu(F.linear(ref, sd["roi_head.bbox_head.shared_fcs.1.weight"], sd["roi_head.bbox_head.shared_fcs.1.bias"]))
        torch.testing.assert_close(feat, ref)
        scores, reg = model.roi_heads.box_predictor(feat)
        torch.testing.assert_close(scores, F.linear(ref, sd["roi_head.bbox_head.fc_cls.weight"], sd["roi_head.bbox_head.fc_cls.bias"]))
        torch.testing.assert_close(reg, F.linear(ref, sd["roi_head.bbox_head.fc_reg.weight"], sd["roi_head.bbox_head.fc_reg.bias"]))
        # and the whole detector runs
        model([{"image": torch.rand(3, 64, 96) * 255, "height": 64, "width": 96}])


def test_unknown_official_key_fails_loudly(tmp_path):
    sd = random_state_dict(official_detector_shapes(TINY, NUM_CLASSES))
    sd["roi_head.semantic_head.conv_logits.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"roi_head\.semantic_head\.conv_logits\.weight"):
        convert_official_state_dict({"state_dict": sd})


def test_official_checkpoint_of_another_size_is_a_mismatch_report(tmp_path):
    path, _ = _official(tmp_path)
    model = build_tiny(num_classes=NUM_CLASSES, embed_dim=96, num_heads=6)
    with pytest.raises(ValueError, match=r"patch_embed\.proj\.weight: checkpoint \(48, 3, 16, 16\) vs model \(96, 3, 16, 16\)"):
        ViTAdapterCheckpointer(model).load(path)


def test_cascade_converts_and_loads_with_nothing_missing(tmp_path):
    path, sd = _official(tmp_path, cascade=True)
    model = build_tiny(CASCADE_CFG, num_classes=NUM_CLASSES)
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    rep = ck.last_report
    assert rep["missing"] == [] and rep["unexpected"] == [] and rep["skipped_shapes"] == []
    assert rep["dropped"] == [] and len(rep["loaded"]) == len(sd) == len(model.state_dict())
    after = model.state_dict()
    for s in range(3):  # every stage's mask head lands in its own head
        assert torch.equal(after[f"roi_heads.mask_head.{s}.predictor.weight"], sd[f"roi_head.mask_head.{s}.conv_logits.weight"])
        assert torch.equal(after[f"roi_heads.mask_head.{s}.mask_fcn4.bias"], sd[f"roi_head.mask_head.{s}.convs.3.conv.bias"])
        assert torch.equal(after[f"roi_heads.mask_head.{s}.deconv.weight"], sd[f"roi_head.mask_head.{s}.upsample.weight"])
    assert torch.equal(after["roi_heads.box_head.1.conv3.norm.running_var"], sd["roi_head.bbox_head.1.shared_convs.2.bn.running_var"])
    assert torch.equal(after["roi_heads.box_head.1.conv3.weight"], sd["roi_head.bbox_head.1.shared_convs.2.conv.weight"])
    assert torch.equal(after["roi_heads.box_head.2.fc1.weight"], sd["roi_head.bbox_head.2.shared_fcs.0.weight"])
    assert torch.equal(after["roi_heads.box_predictor.2.bbox_pred.weight"], sd["roi_head.bbox_head.2.fc_reg.weight"])
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255, "height": 64, "width": 96}])[0]["instances"]
    assert len(out) == len(out.pred_masks)


def test_cascade_into_detectron2_single_mask_head(tmp_path):
    """The option of one mask head (detectron2's cascade) gets one official stage; the others are listed."""
    path, sd = _official(tmp_path, cascade=True)
    cfg = tiny_model_cfg(CASCADE_CFG, num_classes=NUM_CLASSES)
    cfg.roi_heads.mask_head = cfg.roi_heads.mask_heads[0]
    cfg.roi_heads.mask_head.num_classes = NUM_CLASSES
    cfg.roi_heads.mask_heads = None
    model = instantiate(cfg).eval()
    ck = ViTAdapterCheckpointer(model)
    ck.load(path)
    rep = ck.last_report
    assert rep["missing"] == [] and rep["unexpected"] == []
    assert sorted(rep["dropped"]) == sorted(k for k in sd if k.startswith(("roi_head.mask_head.0.", "roi_head.mask_head.1.")))
    assert torch.equal(model.state_dict()["roi_heads.mask_head.predictor.weight"], sd["roi_head.mask_head.2.conv_logits.weight"])
    out0, _ = convert_official_state_dict({"state_dict": sd}, cascade_mask_stage=0)
    assert torch.equal(out0["roi_heads.mask_head.predictor.weight"], sd["roi_head.mask_head.0.conv_logits.weight"])


def test_box_regression_layout_mismatch_is_refused_with_the_reason(tmp_path):
    path, _ = _official(tmp_path, cascade=True, agnostic=True)  # mmdet's r50 cascade base: class-agnostic
    model = build_tiny(CASCADE_CFG, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError) as e:
        ViTAdapterCheckpointer(model).load(path)
    msg = str(e.value)
    assert "roi_heads.box_predictor.0.bbox_pred.weight: checkpoint (4, 1024) vs model (12, 1024)" in msg
    assert "class-specific" in msg and "cls_agnostic_bbox_reg" in msg


def test_conventions_checked_against_the_training_config():
    model = build_tiny(num_classes=NUM_CLASSES)
    report = {"num_classes": NUM_CLASSES}
    notes = check_conventions(report, {"config": MMDET_MASK_RCNN_CONFIG_TEXT}, model)
    assert any("box stage 0 deltas: weights (10.0, 10.0, 5.0, 5.0)" in n for n in notes)
    assert any("RPN deltas" in n for n in notes) and any("pixel mean" in n for n in notes)
    bad = MMDET_MASK_RCNN_CONFIG_TEXT.replace("[0.1, 0.1, 0.2, 0.2]", "[0.2, 0.2, 0.2, 0.2]")
    with pytest.raises(ValueError, match="box stage 0 deltas"):
        check_conventions(report, {"config": bad}, model)
    with pytest.raises(ValueError, match="classifies 80 classes but the config has roi_heads.num_classes=3"):
        check_conventions({"num_classes": 80}, {}, model)
    bgr = MMDET_MASK_RCNN_CONFIG_TEXT.replace("to_rgb=True", "to_rgb=False")
    with pytest.raises(ValueError, match="pixel normalisation differs"):
        check_conventions(report, {"config": bgr}, model)


def test_coco_class_order_note():
    coco = tuple(c["name"] for c in COCO_CATEGORIES if c["isthing"])
    sd = random_state_dict(official_detector_shapes(TINY, 80))
    _, rep = convert_official_state_dict({"state_dict": sd, "meta": {"CLASSES": coco}})
    assert rep["num_classes"] == 80
    assert any("same order" in n for n in rep["notes"])


def test_convert_tool_end_to_end(tmp_path, capsys):
    from vit_adapter.tools.convert_official_checkpoint import main

    path, sd = _official(tmp_path, meta={"CLASSES": ("a", "b", "c"), "config": MMDET_MASK_RCNN_CONFIG_TEXT})
    cfg = tmp_path / "tiny_cfg.py"
    cfg.write_text(
        "from detectron2.config import LazyConfig\n"
        f"model = LazyConfig.load({MASK_RCNN_CFG!r}).model\n"
        f"model.backbone.bottom_up.update({TINY!r})\n"
        f"model.roi_heads.num_classes = {NUM_CLASSES}\n"
    )
    for dst in ("converted.pth", "converted.safetensors"):
        main([path, str(tmp_path / dst), "--config", str(cfg)])
        printed = capsys.readouterr().out
        assert f"converted {len(sd)} tensors" in printed and "1 / target_stds" in printed
        model = build_tiny(num_classes=NUM_CLASSES)
        ck = ViTAdapterCheckpointer(model)
        ck.load(str(tmp_path / dst))
        assert ck.last_report["format"] == "detectron2"
        assert ck.last_report["missing"] == [] and ck.last_report["unexpected"] == []
        assert torch.equal(model.backbone.bottom_up.level_embed, sd["backbone.level_embed"])
    assert is_official_state_dict(sd)
    with pytest.raises(SystemExit, match="not an official mmdetection detector checkpoint"):
        main([str(tmp_path / "converted.pth"), str(tmp_path / "again.pth")])


def test_official_checkpoint_for_another_detector_is_refused(tmp_path):
    path, _ = _official(tmp_path, cascade=True)
    model = build_tiny(num_classes=NUM_CLASSES)  # Mask R-CNN config
    with pytest.raises(ValueError, match=r"hint: another detector than the config's.*\n(.*\n)*  not in the model: roi_heads\.box_head\.0 \(\d+ tensors\)"):
        ViTAdapterCheckpointer(model).load(path)


@pytest.mark.parametrize(
    "cfg_file,size,cascade",
    [(MASK_RCNN_CFG, s, False) for s in "TSBL"] + [(CASCADE_CFG, s, True) for s in "SB"],
)
def test_released_sizes_fit_our_configs_exactly(cfg_file, size, cascade):
    """Official T/S/B/L Mask R-CNN and S/B Cascade layouts (80 classes) fill our configs' models,
    built on the meta device (shapes only, no memory)."""
    from detectron2.config import LazyConfig, instantiate

    from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS

    cfg = LazyConfig.load(cfg_file)
    cfg.model.backbone.bottom_up.update(VIT_ADAPTER_PRESETS[size])
    with torch.device("meta"):
        target = instantiate(cfg.model).state_dict()
    shapes = official_detector_shapes({**VIT_ADAPTER_PRESETS[size], "conv_inplane": 64}, 80, cascade=cascade)
    official = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    out, report = convert_official_state_dict({"state_dict": official}, target_state_dict=target)
    assert report["missing"] == [] and report["dropped"] == [] and len(out) == len(target) == len(official)
    if cascade:  # the three released mask heads each fill one of ours
        assert {k.split(".")[2] for k in out if k.startswith("roi_heads.mask_head.")} == {"0", "1", "2"}


def test_class_rows_follow_the_dataset_order(tmp_path):
    from detectron2.data import MetadataCatalog

    from vit_adapter.tools.convert_official_checkpoint import main
    from vit_adapter.checkpoint.official import match_class_order

    path, sd = _official(tmp_path, meta={"CLASSES": ("a", "b", "c")})
    MetadataCatalog.get("test_official_conversion_cab").thing_classes = ["c", "a", "b"]
    cfg = tmp_path / "tiny_cfg.py"
    cfg.write_text(
        "from detectron2.config import LazyConfig\n"
        f"model = LazyConfig.load({MASK_RCNN_CFG!r}).model\n"
        f"model.backbone.bottom_up.update({TINY!r})\n"
        f"model.roi_heads.num_classes = {NUM_CLASSES}\n"
    )
    dst = str(tmp_path / "cab.pth")
    main([path, dst, "--config", str(cfg), "--dataset", "test_official_conversion_cab"])
    out = torch.load(dst, weights_only=True)["model"]
    perm = [2, 0, 1]  # dataset row i <- checkpoint row perm[i]
    cls_w = sd["roi_head.bbox_head.fc_cls.weight"]
    assert torch.equal(out["roi_heads.box_predictor.cls_score.weight"], torch.cat([cls_w[perm], cls_w[3:]]))
    reg_b = sd["roi_head.bbox_head.fc_reg.bias"].reshape(3, 4)
    assert torch.equal(out["roi_heads.box_predictor.bbox_pred.bias"], reg_b[perm].reshape(-1))
    assert torch.equal(out["roi_heads.mask_head.predictor.weight"], sd["roi_head.mask_head.conv_logits.weight"][perm])
    with pytest.raises(ValueError, match=r"only in the checkpoint \['b'\], only in the dataset \['z'\]"):
        match_class_order(out, ["a", "b", "c"], ["a", "z", "c"])


@pytest.mark.parametrize("size", ["s", "b", "l"])
def test_released_dinov2_mask_rcnn_layouts_fit_the_dinov2_configs(size):
    """The release's DINOv2 Mask R-CNN checkpoints (ViT with 16 x 16 patches, 37 x 37 + 1
    pos-embed) fill configs/COCO/mask_rcnn_dinov2_adapter_{s,b,l}_3x_ms.py exactly."""
    import os

    from detectron2.config import LazyConfig, instantiate

    from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS

    cfg = LazyConfig.load(os.path.join(os.path.dirname(CASCADE_CFG), "..", "..", "COCO",
                                       f"mask_rcnn_dinov2_adapter_{size}_3x_ms.py"))
    with torch.device("meta"):
        target = instantiate(cfg.model).state_dict()
    backbone = {**VIT_ADAPTER_PRESETS[size.upper()], "conv_inplane": 64, "pretrain_size": 592}
    shapes = official_detector_shapes(backbone, 80)
    assert shapes["backbone.pos_embed"] == (1, 1370, backbone["embed_dim"])
    official = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    out, report = convert_official_state_dict({"state_dict": official}, target_state_dict=target)
    assert report["missing"] == [] and report["dropped"] == [] and len(out) == len(target) == len(official)
