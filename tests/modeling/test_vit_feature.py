"""ViTAdapter(vit_feature=...): which ViT map each output gets.

"last" (detection release): the final ViT map, resized, on all four outputs;
"per_interaction" (segmentation release): output i gets the map after
interaction i. The no-grad fast branch must equal the plain path for both.
"""
import pytest
import torch
import torch.nn.functional as F

from _random_params import assert_all_random, randomize_
from test_backbone import TINY
from vit_adapter.modeling.adapter_modules import _tokens_to_map
from vit_adapter.modeling.backbone import ViTAdapter

NAMES = ("res2", "res3", "res4", "res5")


def _adapter(**kw):
    torch.manual_seed(0)
    m = randomize_(ViTAdapter(**{**TINY, **kw}))  # TINY: tests/modeling/test_backbone.py (norm "BN")
    assert_all_random(m)
    return m.eval()


@pytest.mark.parametrize("hw", [(64, 96), (96, 64)])
def test_per_interaction_fast_branch_equals_the_plain_path(hw):
    m = _adapter(vit_feature="per_interaction")
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(1))
    folded = []
    h = m.register_forward_pre_hook(lambda mod, args: folded.append(mod.folds_output_stage(args[0])))
    with torch.no_grad():
        fast = m(x)
    plain = m(x)  # autograd on: the plain modules
    h.remove()
    assert folded == [True, False]
    for k in NAMES:
        torch.testing.assert_close(fast[k], plain[k], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("grad", [True, False], ids=["plain", "fast"])
def test_output_i_gets_the_vit_map_after_interaction_i(grad):
    """A manual output stage from the tokens recorded after each interaction."""
    m = _adapter(vit_feature="per_interaction")
    after, prior = [], []
    hooks = [blk.register_forward_hook(lambda mod, args, out: after.append(out)) for blk in m.interactions]
    hooks.append(m.spm.register_forward_hook(lambda mod, args, out: prior.append(out[0])))
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.set_grad_enabled(grad):
        out = m(x)
        for h in hooks:
            h.remove()
        H, W = 4, 6
        c = after[-1][1]
        c2 = _tokens_to_map(c[:, : 4 * H * W], 2 * H, 2 * W)
        c3 = _tokens_to_map(c[:, 4 * H * W : 5 * H * W], H, W)
        c4 = _tokens_to_map(c[:, 5 * H * W :], H // 2, W // 2)
        c1 = m.up(c2) + prior[0]
        vit = [_tokens_to_map(a[0], H, W) for a in after]
        expected = [
            c1 + F.interpolate(vit[0], scale_factor=4, mode="bilinear", align_corners=False),
            c2 + F.interpolate(vit[1], scale_factor=2, mode="bilinear", align_corners=False),
            c3 + vit[2],
            c4 + F.interpolate(vit[3], scale_factor=0.5, mode="bilinear", align_corners=False),
        ]
        expected = [norm(e) for norm, e in zip(m.output_norms, expected)]
    for k, e in zip(NAMES, expected):
        torch.testing.assert_close(out[k], e, atol=2e-5, rtol=1e-5)
    # the detection variant, same weights, differs on res2..res4 (the final map there)
    last = _adapter(vit_feature="last")
    last.load_state_dict(m.state_dict())
    with torch.set_grad_enabled(grad):
        ref = last(x)
    for k in NAMES[:3]:
        assert not torch.allclose(out[k], ref[k], atol=1e-3)


def test_per_interaction_checkpointed_training_equals_plain():
    m = _adapter(vit_feature="per_interaction").train()
    cp = _adapter(vit_feature="per_interaction", with_cp=True).train()
    cp.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    a, b = m(x), cp(x)
    sum(v.square().sum() for v in a.values()).backward()
    sum(v.square().sum() for v in b.values()).backward()
    for k in NAMES:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    grads = dict(cp.named_parameters())
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, grads[n].grad, atol=1e-4, rtol=1e-4, msg=n)


def test_state_dict_names_do_not_depend_on_vit_feature():
    assert list(_adapter(vit_feature="last").state_dict()) == list(_adapter(vit_feature="per_interaction").state_dict())


def test_bad_vit_feature_arguments():
    with pytest.raises(ValueError, match="vit_feature must be one of"):
        ViTAdapter(**TINY, vit_feature="first")
    with pytest.raises(ValueError, match="needs 4 interactions, got 2"):
        ViTAdapter(**{**TINY, "interaction_indexes": [[0, 1], [2, 3]]}, vit_feature="per_interaction")
    ViTAdapter(**{**TINY, "interaction_indexes": [[0, 1], [2, 3]]}, vit_feature="per_interaction", add_vit_feature=False)
    m = _adapter()
    with pytest.raises(ValueError, match="one ViT token tensor or 4"):
        m.output_stage([torch.zeros(1, 24, 24)] * 2, torch.zeros(1, 126, 24), torch.zeros(1, 24, 16, 24), 4, 6)
