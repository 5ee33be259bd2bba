"""Mask2Former head: matcher, point-sampled losses, masked attention, semantic
inference, and the sem_seg_head contract (tiny widths)."""
import itertools
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vit_adapter.modeling.mask2former import (
    HungarianMatcher,
    Mask2FormerHead,
    MaskedAttentionDecoder,
    MaskedAttentionDecoderLayer,
    MSDeformAttnPixelDecoder,
    SetCriterion,
    SinePositionalEncoding,
    batch_dice_cost,
    batch_sigmoid_bce_cost,
    semantic_inference,
    semantic_to_instances,
)
from vit_adapter.modeling.mask2former import criterion as criterion_module
from vit_adapter.modeling.mask2former.assignment import linear_sum_assignment, shortest_augmenting_path
from vit_adapter.modeling.mask2former.transformer_decoder import attention_mask_from_masks

FEATURES = ["res2", "res3", "res4", "res5"]


def _tiny_head(num_classes=4, num_queries=6, num_layers=3, num_points=64, dim=32):
    pixel_decoder = MSDeformAttnPixelDecoder([16, 16, 24, 24], conv_dim=dim, mask_dim=dim, num_layers=2,
                                             num_heads=4, num_points=2, ffn_dim=48, num_groups=8)
    predictor = MaskedAttentionDecoder(dim, num_classes, hidden_dim=dim, mask_dim=dim, num_queries=num_queries,
                                       num_heads=4, ffn_dim=48, num_layers=num_layers)
    criterion = SetCriterion(num_classes, HungarianMatcher(num_points=num_points), num_points=num_points)
    return Mask2FormerHead(in_features=FEATURES, pixel_decoder=pixel_decoder, predictor=predictor,
                           criterion=criterion, num_classes=num_classes)


def _features(n=2, h=64, w=96):
    chans = [16, 16, 24, 24]
    return {f: torch.randn(n, c, h // s, w // s) for f, c, s in zip(FEATURES, chans, (4, 8, 16, 32))}


# ----------------------------------------------------------------------------- matcher

@pytest.mark.parametrize("solver", [shortest_augmenting_path, linear_sum_assignment])
def test_assignment_on_hand_made_cost_matrices(solver):
    # greedy (row by row, cheapest free column) would pick (0,0), (1,1) = 1 + 10 = 11;
    # the optimum is (0,1), (1,0) = 2 + 2 = 4
    rows, cols = solver(np.array([[1.0, 2.0], [2.0, 10.0]]))
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
    # more queries than targets: the two cheap rows win, rows ascending
    rows, cols = solver(np.array([[5.0, 5.0], [0.0, 9.0], [9.0, 0.0]]))
    assert rows.tolist() == [1, 2] and cols.tolist() == [0, 1]
    # more targets than queries
    rows, cols = solver(np.array([[3.0, 1.0, 2.0]]))
    assert rows.tolist() == [0] and cols.tolist() == [1]
    # negative costs (the class cost is -p)
    rows, cols = solver(np.array([[-0.9, -0.1], [-0.8, -0.7]]))
    assert cols.tolist() == [0, 1]


def test_hungarian_matches_brute_force():
    rng = np.random.default_rng(0)
    for t in range(60):
        r, c = (int(x) for x in rng.integers(1, 6, 2))
        cost = rng.normal(size=(r, c)) if t % 2 else rng.integers(0, 3, (r, c)).astype(float)
        rows, cols = shortest_augmenting_path(cost)
        assert len(rows) == min(r, c) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        if r <= c:
            best = min(cost[range(r), list(p)].sum() for p in itertools.permutations(range(c), r))
        else:
            best = min(cost[list(p), range(c)].sum() for p in itertools.permutations(range(r), c))
        assert cost[rows, cols].sum() == pytest.approx(best, abs=1e-9)


def test_match_costs_against_direct_formulas():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.5, 1.0, 0.0]])
    bce = batch_sigmoid_bce_cost(logits, targets)
    dice = batch_dice_cost(logits, targets)
    p = logits.sigmoid()
    for q in range(2):
        for g in range(3):
            t = targets[g]
            direct = -(t * p[q].log() + (1 - t) * (1 - p[q]).log()).mean()
            assert bce[q, g] == pytest.approx(direct.item(), rel=1e-5)
            direct_dice = 1 - (2 * (p[q] * t).sum() + 1) / (p[q].sum() + t.sum() + 1)
            assert dice[q, g] == pytest.approx(direct_dice.item(), rel=1e-5)


def test_matcher_assigns_each_target_its_query():
    # query q predicts target (q + 1) % 3 perfectly (mask and class); query 3 predicts nothing
    h = w = 8
    masks = torch.zeros(3, h, w)
    masks[0, :4], masks[1, 4:, :4], masks[2, 4:, 4:] = 1, 1, 1
    labels = torch.tensor([2, 0, 1])
    order = [1, 2, 0]
    mask_logits = torch.full((1, 4, h, w), -8.0)
    class_logits = torch.full((1, 4, 4), -5.0)
    for q, g in enumerate(order):
        mask_logits[0, q] = masks[g] * 16 - 8
        class_logits[0, q, labels[g]] = 5.0
    (rows, cols), = HungarianMatcher(num_points=256)(class_logits, mask_logits, [{"labels": labels, "masks": masks}])
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == order
    empty = HungarianMatcher(num_points=16)(class_logits, mask_logits,
                                            [{"labels": torch.zeros(0, dtype=torch.long), "masks": masks[:0]}])
    assert [len(x) for x in empty[0]] == [0, 0]


# ----------------------------------------------------------------------------- losses

def _pixel_centre_coords(m, h, w):
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    return torch.stack((xs.flatten(), ys.flatten()), -1)[None].expand(m, -1, -1)


def test_point_sampled_mask_losses_against_direct_computation():
    h, w = 4, 6
    matcher = HungarianMatcher(num_points=h * w)
    crit = SetCriterion(3, matcher, num_points=h * w)
    mask_logits = torch.randn(2, 3, h, w)
    masks = [(torch.rand(2, h, w) > 0.5).float(), (torch.rand(1, h, w) > 0.5).float()]
    targets = [{"labels": torch.tensor([0, 2]), "masks": masks[0]}, {"labels": torch.tensor([1]), "masks": masks[1]}]
    indices = [(torch.tensor([2, 0]), torch.tensor([0, 1])), (torch.tensor([1]), torch.tensor([0]))]
    num_masks = 3.0
    # sample exactly the pixel centres: point_sample then reads the pixels themselves
    with mock.patch.object(criterion_module, "get_uncertain_point_coords_with_randomness",
                           lambda logits, *a: _pixel_centre_coords(logits.shape[0], h, w)):
        loss_bce, loss_dice = crit.mask_losses(mask_logits, targets, indices, num_masks)
    pred = torch.stack([mask_logits[0, 2], mask_logits[0, 0], mask_logits[1, 1]]).flatten(1)
    tgt = torch.stack([masks[0][0], masks[0][1], masks[1][0]]).flatten(1)
    p = pred.sigmoid()
    bce = -(tgt * p.log() + (1 - tgt) * (1 - p).log()).mean(1).sum() / num_masks
    dice = (1 - (2 * (p * tgt).sum(1) + 1) / (p.sum(1) + tgt.sum(1) + 1)).sum() / num_masks
    assert loss_bce.item() == pytest.approx(bce.item(), rel=1e-5)
    assert loss_dice.item() == pytest.approx(dice.item(), rel=1e-5)


def test_importance_sampling_prefers_uncertain_points():
    # logits 0 on the left half, 10 on the right: the 200 most uncertain of 600 candidates lie left
    crit = SetCriterion(1, HungarianMatcher(num_points=200), num_points=200, oversample_ratio=3.0,
                        importance_sample_ratio=1.0)
    logits = torch.full((1, 1, 16, 16), 10.0)
    logits[..., :8] = 0.0
    seen = {}
    real = criterion_module.get_uncertain_point_coords_with_randomness

    def spy(*args):
        seen["coords"] = real(*args)
        return seen["coords"]

    with mock.patch.object(criterion_module, "get_uncertain_point_coords_with_randomness", spy):
        crit.mask_losses(logits, [{"labels": torch.tensor([0]), "masks": torch.ones(1, 16, 16)}],
                         [(torch.tensor([0]), torch.tensor([0]))], 1.0)
    assert seen["coords"].shape == (1, 200, 2)
    from detectron2.projects.point_rend.point_features import point_sample
    chosen = point_sample(logits, seen["coords"], align_corners=False).abs().mean()
    uniform = point_sample(logits, torch.rand(1, 2000, 2), align_corners=False).abs().mean()
    assert chosen < 0.1 * uniform  # the chosen points sit where |logit| is small


def test_class_loss_weights_no_object():
    crit = SetCriterion(3, HungarianMatcher(num_points=4), no_object_weight=0.1)
    logits = torch.randn(1, 4, 4)
    targets = [{"labels": torch.tensor([1, 2]), "masks": torch.zeros(2, 2, 2)}]
    indices = [(torch.tensor([3, 0]), torch.tensor([0, 1]))]
    labels = torch.tensor([2, 3, 3, 1])  # query 0 -> class 2, query 3 -> class 1, others no-object (3)
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1])
    ce = -logits[0].log_softmax(-1)[torch.arange(4), labels]
    direct = (weight[labels] * ce).sum() / weight[labels].sum()
    assert crit.class_loss(logits, targets, indices).item() == pytest.approx(direct.item(), rel=1e-6)


def test_criterion_deep_supervision_names_and_weights():
    crit = SetCriterion(3, HungarianMatcher(num_points=16), class_weight=2.0, mask_weight=5.0, dice_weight=5.0,
                        num_points=16)
    preds = [{"pred_logits": torch.randn(1, 4, 4), "pred_masks": torch.randn(1, 4, 8, 8)} for _ in range(3)]
    targets = [{"labels": torch.tensor([1]), "masks": torch.ones(1, 16, 16)}]
    torch.manual_seed(1)
    losses = crit(preds, targets)
    assert sorted(losses) == sorted(["loss_cls", "loss_mask", "loss_dice"]
                                    + [f"d{i}.{n}" for i in range(2) for n in ("loss_cls", "loss_mask", "loss_dice")])
    torch.manual_seed(1)
    unweighted = SetCriterion(3, HungarianMatcher(num_points=16), class_weight=1.0, mask_weight=1.0,
                              dice_weight=1.0, num_points=16)(preds, targets)
    for name, value in losses.items():
        w = 2.0 if name.endswith("cls") else 5.0
        assert value.item() == pytest.approx(w * unweighted[name].item(), rel=1e-5)


# ----------------------------------------------------------------------------- masked attention

def test_attention_mask_empty_query_attends_everywhere():
    logits = torch.full((1, 3, 4, 4), -5.0)
    logits[0, 1, :2] = 5.0  # query 1: top half
    logits[0, 2] = 5.0      # query 2: everywhere
    mask = attention_mask_from_masks(logits, (2, 2), num_heads=2)
    assert mask.shape == (2, 3, 4) and mask.dtype == torch.bool
    assert not mask[:, 0].any()                       # empty mask: nothing blocked
    assert mask[:, 1].tolist() == [[False, False, True, True]] * 2
    assert not mask[:, 2].any()


def test_masked_cross_attention_ignores_blocked_tokens():
    layer = MaskedAttentionDecoderLayer(16, 2, 32).eval()
    query, query_pos = torch.randn(1, 1, 16), torch.randn(1, 1, 16)
    memory, memory_pos = torch.randn(1, 6, 16), torch.randn(1, 6, 16)
    blocked = torch.tensor([[[False, False, True, True, True, True]]]).repeat(2, 1, 1)
    out = layer(query, query_pos, memory, memory_pos, blocked)
    changed = memory.clone()
    changed[:, 2:] = torch.randn(1, 4, 16)
    assert torch.allclose(layer(query, query_pos, changed, memory_pos, blocked), out, atol=1e-6)
    # an empty predicted mask -> all-False row -> the same as no mask at all
    empty = attention_mask_from_masks(torch.full((1, 1, 2, 3), -9.0), (2, 3), num_heads=2)
    free = layer(query, query_pos, memory, memory_pos, torch.zeros(2, 1, 6, dtype=torch.bool))
    assert torch.allclose(layer(query, query_pos, memory, memory_pos, empty), free, atol=1e-6)
    assert not torch.allclose(free, out, atol=1e-4)


# ----------------------------------------------------------------------------- inference / targets

def test_semantic_inference_on_hand_made_queries():
    # query 0: class 0 with prob ~1 on the left pixel; query 1: class 1 / no-object split, right pixel
    class_logits = torch.tensor([[[10.0, -10.0, -10.0], [-10.0, 0.0, 0.0]]])
    mask_logits = torch.tensor([[[[10.0, -10.0]], [[-10.0, 10.0]]]])
    scores = semantic_inference(class_logits, mask_logits)
    assert scores.shape == (1, 2, 1, 2)
    probs = class_logits.softmax(-1)[0, :, :2]
    m = mask_logits.sigmoid()[0, :, 0]
    want = torch.einsum("qk,qp->kp", probs, m)
    assert torch.allclose(scores[0, :, 0], want)
    assert scores[0, 0, 0, 0] == pytest.approx(1.0, abs=1e-3) and scores[0, 1, 0, 1] == pytest.approx(0.5, abs=1e-3)
    assert scores[0].argmax(0).tolist() == [[0, 1]]


def test_semantic_to_instances_drops_ignore():
    sem = torch.tensor([[0, 0, 255], [3, 3, 0]])
    out = semantic_to_instances(sem, 255)
    assert out["labels"].tolist() == [0, 3]
    assert out["masks"].tolist() == [[[1, 1, 0], [0, 0, 1]], [[0, 0, 0], [1, 1, 0]]]
    assert semantic_to_instances(torch.full((2, 2), 255), 255)["labels"].numel() == 0


def test_sine_positional_encoding_formula():
    pe = SinePositionalEncoding(4)(torch.zeros(1, 3, 2, 3))
    assert pe.shape == (1, 8, 2, 3)
    y, x = 1, 2
    ye, xe = (y + 1) / (2 + 1e-6) * 2 * np.pi, (x + 1) / (3 + 1e-6) * 2 * np.pi
    dim_t = 10000 ** (2 * (np.arange(4) // 2) / 4)
    want_y = [np.sin(ye / dim_t[0]), np.cos(ye / dim_t[1]), np.sin(ye / dim_t[2]), np.cos(ye / dim_t[3])]
    want_x = [np.sin(xe / dim_t[0]), np.cos(xe / dim_t[1]), np.sin(xe / dim_t[2]), np.cos(xe / dim_t[3])]
    assert np.allclose(pe[0, :, y, x].numpy(), want_y + want_x, atol=1e-6)


# ----------------------------------------------------------------------------- the head

def test_head_shapes_and_contract():
    head = _tiny_head()
    feats = _features()
    mask_features, levels = head.pixel_decoder([feats[f] for f in FEATURES])
    assert mask_features.shape == (2, 32, 16, 24)
    assert [tuple(x.shape[-2:]) for x in levels] == [(2, 3), (4, 6), (8, 12)]
    preds = head.predictor(levels, mask_features)
    assert len(preds) == 4
    assert preds[-1]["pred_logits"].shape == (2, 6, 5) and preds[-1]["pred_masks"].shape == (2, 6, 16, 24)
    head.eval()
    scores, losses = head(feats)
    assert scores.shape == (2, 4, 64, 96) and losses == {}
    head.train()
    targets = torch.randint(0, 4, (2, 64, 96))
    targets[0, :8] = 255
    none, losses = head(feats, targets)
    assert none is None and len(losses) == 3 * 4
    sum(losses.values()).backward()
    unused = [n for n, p in head.named_parameters() if p.grad is None]
    assert unused == []
    with pytest.raises(ValueError, match="semantic targets"):
        head(feats)


def test_head_all_ignored_image_trains():
    head = _tiny_head()
    targets = torch.full((2, 64, 96), 255)
    targets[1, :10, :10] = 2
    _, losses = head(_features(), targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_checkpointed_ffn_and_layers_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = _tiny_head().eval()
    ckpt = _tiny_head().eval()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.pixel_decoder.checkpoint_layers = True
    for layer in (*ckpt.pixel_decoder.encoder.layers, *ckpt.predictor.layers):
        layer.checkpoint_ffn = True
    feats = {k: v.requires_grad_() for k, v in _features(n=1).items()}
    pa, pb = plain.layers(feats)[-1], ckpt.layers(feats)[-1]
    a = pa["pred_masks"].sum() + pa["pred_logits"].sum()
    b = pb["pred_masks"].sum() + pb["pred_logits"].sum()
    assert torch.allclose(pa["pred_masks"], pb["pred_masks"], atol=1e-6)
    ga = torch.autograd.grad(a, list(plain.parameters()))
    gb = torch.autograd.grad(b, list(ckpt.parameters()))
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(ga, gb))


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="4 input levels"):
        MSDeformAttnPixelDecoder([16, 16, 16])
    with pytest.raises(ValueError, match="num_classes"):
        Mask2FormerHead(in_features=FEATURES, pixel_decoder=_tiny_head().pixel_decoder,
                        predictor=_tiny_head(num_classes=3).predictor,
                        criterion=SetCriterion(4, HungarianMatcher()), num_classes=4)
    head = _tiny_head().eval()
    with pytest.raises(KeyError, match="lack"):
        head({"res2": torch.zeros(1, 16, 8, 8)})
    with pytest.raises(FloatingPointError, match="NaN"):
        HungarianMatcher.assign(torch.tensor([[float("nan")]]))
