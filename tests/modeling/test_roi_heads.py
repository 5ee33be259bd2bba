"""ClassSpecificCascadeROIHeads: mmdetection's class-specific cascade on detectron2."""
import math
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from vit_adapter.modeling.roi_heads import ClassSpecificCascadeROIHeads, average_mask_probs
from conftest import REPO_ROOT

CONFIG = os.path.join(REPO_ROOT,
                      "configs", "common", "models", "cascade_mask_rcnn_vit_adapter.py")
TINY = dict(embed_dim=24, depth=4, num_heads=2, deform_num_heads=3, n_points=2, conv_inplane=8, window_size=3,
            window_block_indexes=[0, 2], interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], norm="BN")
NUM_CLASSES = 5


def _roi_heads_cfg(agnostic=False, weights=(1.0, 0.5, 0.25)):
    cfg = LazyConfig.load(CONFIG)
    rh = cfg.model.roi_heads
    rh.num_classes = NUM_CLASSES
    rh.stage_loss_weights = weights
    for p in rh.box_predictors:
        p.cls_agnostic_bbox_reg = agnostic
        p.num_classes = NUM_CLASSES
    for h in rh.mask_heads:
        h.num_classes = NUM_CLASSES
    for h in rh.box_heads:
        h.conv_norm = "BN"
    return rh


def _features_and_proposals(n=8, hw=(64, 96)):
    g = torch.Generator().manual_seed(0)
    feats = {f"p{s}": torch.randn(1, 256, -(-hw[0] // 2**s), -(-hw[1] // 2**s), generator=g) for s in range(2, 7)}
    xy = torch.rand(n, 2, generator=g) * torch.tensor([hw[1] - 20, hw[0] - 20])
    wh = 8 + torch.rand(n, 2, generator=g) * 12
    props = Instances(hw)
    props.proposal_boxes = Boxes(torch.cat([xy, xy + wh], 1))
    props.objectness_logits = torch.randn(n, generator=g)
    return feats, [props]


def _targets(hw=(64, 96)):
    t = Instances(hw)
    t.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 40.0, 30.0], [50.0, 20.0, 90.0, 60.0]]))
    t.gt_classes = torch.tensor([1, 3])
    masks = torch.zeros(2, *hw, dtype=torch.bool)
    masks[0, 10:30, 10:40] = True
    masks[1, 20:60, 50:90] = True
    t.gt_masks = BitMasks(masks)
    return [t]


def test_next_stage_boxes_follow_gt_class_in_training_and_best_class_otherwise():
    heads = instantiate(_roi_heads_cfg())
    predictor = heads.box_predictor[0]
    R, K = 4, NUM_CLASSES
    props = Instances((64, 96))
    props.proposal_boxes = Boxes(torch.tensor([[10.0, 10.0, 30.0, 30.0]] * R))
    props.gt_classes = torch.tensor([2, K, 4, K])  # K = background
    scores = torch.full((R, K + 1), -5.0)
    scores[torch.arange(R), torch.tensor([0, 1, 0, 3])] = 5.0
    scores[3, K] = 50.0  # background wins overall for proposal 3: still a foreground class is used
    deltas = torch.zeros(R, K * 4)
    for c in range(K):  # class c moves the 20 px box right by c px (dx / weight 10 * width 20)
        deltas[:, 4 * c] = c * 10.0 / 20.0
    all_boxes = predictor.predict_boxes((scores, deltas), [props])[0].view(R, K, 4)

    heads.train()
    got = heads._boxes_for_next_stage(predictor, (scores, deltas), [props])[0]
    torch.testing.assert_close(got, all_boxes[torch.arange(R), torch.tensor([2, 1, 4, 3])])
    heads.eval()
    got = heads._boxes_for_next_stage(predictor, (scores, deltas), [props])[0]
    torch.testing.assert_close(got, all_boxes[torch.arange(R), torch.tensor([0, 1, 0, 3])])


def _detectron2_options(rh):
    """detectron2's cascade options: one mask head, later stages on every refined box."""
    rh.mask_head = rh.mask_heads[0]
    rh.mask_head.num_classes = NUM_CLASSES
    rh.mask_heads = None
    rh.sample_every_stage = False
    return rh


def test_class_agnostic_without_weights_is_detectron2_cascade():
    torch.manual_seed(0)
    ours = instantiate(_detectron2_options(_roi_heads_cfg(agnostic=True, weights=None))).eval()
    cfg = _detectron2_options(_roi_heads_cfg(agnostic=True, weights=None))
    cfg._target_ = CascadeROIHeads
    for k in ("stage_loss_weights", "mask_heads", "sample_every_stage"):
        del cfg[k]
    d2 = instantiate(cfg).eval()
    d2.load_state_dict(ours.state_dict())
    feats, props = _features_and_proposals()
    for p in list(ours.box_predictor) + list(d2.box_predictor):
        p.test_score_thresh, p.test_topk_per_image = 0.0, 5
    with torch.no_grad():
        a, _ = ours(None, feats, props)
        b, _ = d2(None, feats, props)
    assert len(a[0]) > 0
    torch.testing.assert_close(a[0].pred_boxes.tensor, b[0].pred_boxes.tensor)
    torch.testing.assert_close(a[0].scores, b[0].scores)
    torch.testing.assert_close(a[0].pred_masks, b[0].pred_masks)


def test_stage_loss_weights_scale_each_stage():
    losses = {}
    for weights in (None, (1.0, 0.5, 0.25)):
        torch.manual_seed(0)
        heads = instantiate(_roi_heads_cfg(weights=weights)).train()
        feats, props = _features_and_proposals()
        torch.manual_seed(1)  # same proposal sampling in both runs
        with EventStorage():
            _, losses[weights] = heads(None, feats, props, _targets())
    plain, weighted = losses[None], losses[(1.0, 0.5, 0.25)]
    assert set(plain) == set(weighted)
    for k, v in plain.items():
        assert torch.isfinite(v)
        w = {"stage0": 1.0, "stage1": 0.5, "stage2": 0.25}.get(k.rsplit("_", 1)[-1], 1.0)
        torch.testing.assert_close(weighted[k], v * w, msg=k)


def test_bad_stage_loss_weights():
    with pytest.raises(ValueError, match="stage_loss_weights"):
        instantiate(_roi_heads_cfg(weights=(1.0, 0.5)))


def test_cascade_detector_trains_and_predicts():
    cfg = LazyConfig.load(CONFIG)
    cfg.model.backbone.bottom_up.update(TINY)
    cfg.model.roi_heads.num_classes = NUM_CLASSES
    cfg.model.roi_heads.batch_size_per_image = 32  # CPU-cheap: 4-conv box heads x 3 stages
    cfg.model.proposal_generator.post_nms_topk = (32, 8)
    for p in cfg.model.roi_heads.box_predictors:
        p.test_topk_per_image = 5
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert isinstance(model.roi_heads, ClassSpecificCascadeROIHeads)
    assert model.roi_heads.box_predictor[0].bbox_pred.out_features == 4 * NUM_CLASSES
    img = torch.rand(3, 64, 96) * 255
    model.train()
    with EventStorage():
        losses = model([{"image": img, "instances": _targets()[0], "height": 64, "width": 96}])
    assert all(torch.isfinite(v) for v in losses.values())
    assert {"loss_box_reg_stage2", "loss_mask_stage0", "loss_mask_stage2"} <= set(losses)
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model([{"image": img, "height": 64, "width": 96}])[0]["instances"]
    assert out.pred_boxes.tensor.shape[1] == 4 and len(out) == len(out.pred_masks)


def test_average_mask_probs_by_hand():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(3, NUM_CLASSES, 2, 2, generator=g) for _ in range(3)]
    classes = torch.tensor([4, 0, 2])
    got = average_mask_probs(logits, classes)
    assert got.shape == (3, 1, 2, 2)
    for r, c in enumerate(classes.tolist()):
        for y in range(2):
            for x in range(2):
                want = sum(1.0 / (1.0 + math.exp(-float(l[r, c, y, x]))) for l in logits) / 3
                assert abs(float(got[r, 0, y, x]) - want) < 1e-6
    agnostic = [torch.randn(3, 1, 2, 2, generator=g) for _ in range(2)]
    torch.testing.assert_close(average_mask_probs(agnostic, classes), (agnostic[0].sigmoid() + agnostic[1].sigmoid()) / 2)


def test_inference_averages_the_three_stage_mask_heads():
    torch.manual_seed(0)
    heads = instantiate(_roi_heads_cfg()).eval()
    assert heads.mask_per_stage and len(heads.mask_head) == 3
    feats, props = _features_and_proposals()
    det = Instances(props[0].image_size)
    det.pred_boxes = props[0].proposal_boxes[:4]
    det.pred_classes = torch.tensor([0, 3, 1, 4])
    with torch.no_grad():
        out = heads.forward_with_given_boxes(feats, [det])[0].pred_masks
        pooled = heads.mask_pooler([feats[f] for f in heads.mask_in_features], [det.pred_boxes])
        per_stage = [h.layers(pooled)[torch.arange(4), det.pred_classes].sigmoid() for h in heads.mask_head]
    assert out.shape == (4, 1, 28, 28)
    torch.testing.assert_close(out[:, 0], (per_stage[0] + per_stage[1] + per_stage[2]) / 3)
    assert not torch.allclose(per_stage[0], per_stage[1])  # separately initialised heads


def test_later_stages_resample_with_gt_added_and_previous_gt_dropped():
    torch.manual_seed(0)
    rh = _roi_heads_cfg()
    rh.batch_size_per_image = 1000  # keep every RoI: counts show what was added / dropped
    heads = instantiate(rh).train()
    feats, props = _features_and_proposals(n=20)
    targets = _targets()
    with EventStorage():
        sampled = heads.label_and_sample_proposals(props, targets)
        outputs = heads._run_cascade(feats, sampled, targets)
    gt = targets[0].gt_boxes.tensor
    for _, _, (p,) in outputs:
        assert int(p.proposal_is_gt.sum()) == len(gt)
        added = p.proposal_boxes.tensor[p.proposal_is_gt]
        torch.testing.assert_close(added[added[:, 0].argsort()], gt[gt[:, 0].argsort()])
        assert p.has("gt_masks") and len(p.gt_masks) == len(p)
    # the refined copies of the gt proposals are dropped before the gt is added again
    assert [len(o[2][0]) for o in outputs] == [20 + 2] * 3

    rh.batch_size_per_image = 8  # 512 / 25% in the configs: here 8 / 25%
    heads = instantiate(rh).train()
    with EventStorage():
        outputs = heads._run_cascade(feats, heads.label_and_sample_proposals(props, targets), targets)
    for _, _, (p,) in outputs:
        assert len(p) == 8 and int((p.gt_classes < NUM_CLASSES).sum()) <= 2


def test_per_stage_mask_losses_follow_the_stage_weights():
    losses = {}
    for weights in (None, (1.0, 0.5, 0.25)):
        torch.manual_seed(0)
        heads = instantiate(_roi_heads_cfg(weights=weights)).train()
        feats, props = _features_and_proposals()
        torch.manual_seed(1)
        with EventStorage():
            _, losses[weights] = heads(None, feats, props, _targets())
    for k, w in zip(range(3), (1.0, 0.5, 0.25)):
        key = f"loss_mask_stage{k}"
        assert torch.isfinite(losses[None][key])
        torch.testing.assert_close(losses[(1.0, 0.5, 0.25)][key], losses[None][key] * w)
    assert "loss_mask" not in losses[None]


def test_mask_heads_and_mask_head_are_exclusive():
    rh = _roi_heads_cfg()
    rh.mask_head = rh.mask_heads[0]
    with pytest.raises(ValueError, match="not both"):
        instantiate(rh)
    rh = _roi_heads_cfg()
    rh.mask_heads = rh.mask_heads[:2]
    with pytest.raises(ValueError, match="2 heads for 3 cascade stages"):
        instantiate(rh)


def test_detectron2_options_train_one_mask_head_on_every_refined_box():
    torch.manual_seed(0)
    heads = instantiate(_detectron2_options(_roi_heads_cfg())).train()
    assert not heads.mask_per_stage and not heads.sample_every_stage
    feats, props = _features_and_proposals(n=20)
    targets = _targets()
    with EventStorage():
        sampled = heads.label_and_sample_proposals(props, targets)
        outputs = heads._run_cascade(feats, sampled, targets)
        _, losses = heads(None, feats, props, targets)
    assert "loss_mask" in losses and not any(k.startswith("loss_mask_stage") for k in losses)
    n0 = len(outputs[0][2][0])
    assert [len(o[2][0]) for o in outputs] == [n0] * 3  # every refined box, no gt added again
    assert not outputs[1][2][0].proposal_is_gt.any() and not outputs[1][2][0].has("gt_masks")
