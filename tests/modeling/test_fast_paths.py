"""One forward per module: the no-grad fast branches equal the plain
formulation, the plain formulation calls every layer as a module, and nothing
prepared goes stale. Every comparison runs on modules whose parameters and
buffers are ALL random (tests/_random_params.py): a bias or affine at its
zero / unit init would hide a term one path forgets."""
from functools import partial

import pytest
import torch
from torch import nn

from _random_params import assert_all_random, randomize_
from test_backbone import TINY
from vit_adapter.layers.fast_path import fast_path_ok
from vit_adapter.layers.ms_deform_attn import MSDeformAttn
from vit_adapter.modeling.adapter_modules import (
    Extractor,
    Injector,
    InteractionBlock,
    SpatialPriorModule,
    deform_inputs,
    level_shapes,
)
from vit_adapter.modeling.backbone import VIT_ADAPTER_PRESETS, ViTAdapter
from vit_adapter.modeling.vit import Block


def _eval_adapter(**kw):
    torch.manual_seed(0)
    m = randomize_(ViTAdapter(**{**TINY, **kw}))  # TINY: tests/modeling/test_backbone.py (norm "BN")
    assert_all_random(m)
    return m.eval()


def _assert_maps_close(a, b, atol=2e-5, rtol=1e-5):
    assert list(a) == list(b)
    for k in b:
        assert a[k].shape == b[k].shape
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol)


def _count_fast_branches(model):
    """Forward pre-hooks recording which fast branches each call takes."""
    taken = {"value_proj_last": 0, "output_proj_first": 0, None: 0, "folded_output": 0, "folded_spm": 0}
    handles = []
    for m in model.modules():
        if isinstance(m, MSDeformAttn):
            handles.append(m.register_forward_pre_hook(
                lambda mod, args: taken.__setitem__(mod.takes_reordered(args[0]), taken[mod.takes_reordered(args[0])] + 1)))
        if isinstance(m, SpatialPriorModule):
            handles.append(m.register_forward_pre_hook(
                lambda mod, args: taken.__setitem__("folded_spm", taken["folded_spm"] + fast_path_ok(mod, args[0]))))
    if isinstance(model, ViTAdapter):
        handles.append(model.register_forward_pre_hook(
            lambda mod, args: taken.__setitem__("folded_output", taken["folded_output"] + mod.folds_output_stage(args[0]))))
    return taken, handles


# ------------------------------------------------------------ the choice


def test_fast_path_only_without_autograd_autocast_training_and_tracing():
    m, x = _eval_adapter(), torch.randn(1, 3, 32, 32)
    assert not fast_path_ok(m, x)  # autograd on
    with torch.no_grad():
        assert fast_path_ok(m, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not fast_path_ok(m, x)
        assert not fast_path_ok(m.train(), x)
        m.eval().fast_path = False
        assert not fast_path_ok(m, x)


def test_output_stage_folds_only_fixed_affine_norms():
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert _eval_adapter().folds_output_stage(x)
        assert _eval_adapter(norm="").folds_output_stage(x)  # Identity
        assert not _eval_adapter(norm=lambda c: nn.GroupNorm(2, c)).folds_output_stage(x)


# ------------------------------------------------------------ fast == plain


def test_spatial_prior_module_folds_eval_norms_to_the_same_values():
    spm = randomize_(SpatialPriorModule(inplanes=8, embed_dim=12, norm="BN")).eval()
    assert_all_random(spm)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert fast_path_ok(spm, x)
        folded = spm(x)
    for g, w in zip(folded, spm(x)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw", [{}, {"add_vit_feature": False}, {"norm": ""}, {"norm": lambda c: nn.GroupNorm(2, c)}])
@pytest.mark.parametrize("batch,hw", [(1, (64, 64)), (2, (64, 96)), (2, (96, 32))])
def test_no_grad_forward_equals_autograd_forward(kw, batch, hw):
    # Without autograd the modules take their fast branches; with autograd
    # (same eval mode) the plain ones. Same outputs.
    m = _eval_adapter(**kw)
    x = torch.randn(batch, 3, *hw)
    x0 = x.clone()
    with torch.no_grad():
        fast = m(x)
    with torch.inference_mode():
        fast_im = m(x)
    slow = m(x)
    _assert_maps_close(fast, slow)
    _assert_maps_close(fast_im, slow)
    torch.testing.assert_close(x, x0, rtol=0, atol=0)


def test_no_grad_forward_takes_every_fast_branch():
    # Each injector samples before value_proj, each extractor applies
    # output_proj before sampling, the stem folds its norms, the output
    # stage is folded; with autograd none of them.
    m = _eval_adapter()
    taken, handles = _count_fast_branches(m)
    n = len(m.interactions)
    n_extractors = sum(1 + (0 if i.extra_extractors is None else len(i.extra_extractors)) for i in m.interactions)
    with torch.no_grad():
        m(torch.randn(1, 3, 64, 64))
    assert taken == {"value_proj_last": n, "output_proj_first": n_extractors, None: 0,
                     "folded_output": 1, "folded_spm": 1}
    for k in taken:
        taken[k] = 0
    m(torch.randn(1, 3, 64, 64))
    assert taken == {"value_proj_last": 0, "output_proj_first": 0, None: n + n_extractors,
                     "folded_output": 0, "folded_spm": 0}
    for h in handles:
        h.remove()


def test_training_mode_norms_under_no_grad_run_the_plain_modules():
    # BatchNorm in training mode under no_grad normalises with batch statistics
    # (and updates running stats): the plain path, same as with autograd.
    m = _eval_adapter().train()
    x = torch.randn(2, 3, 64, 64)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        assert not m.folds_output_stage(x)
        a = m(x)
    after_one = {k: v.clone() for k, v in m.state_dict().items()}
    m.load_state_dict(state)
    b = m(x)
    _assert_maps_close(a, b)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(after_one[k], v)


def test_autocast_inference_runs_the_plain_modules():
    # The fast branches combine float32 weights with the activations
    # explicitly; under autocast the plain modules run: bit-identical outputs.
    m = _eval_adapter()
    x = torch.randn(2, 3, 64, 96)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            fast = m(x)
        slow = m(x)
    for k in slow:
        torch.testing.assert_close(fast[k], slow[k], rtol=0, atol=0)


def _adapter_parts(seed=0, **norm_kw):
    torch.manual_seed(seed)
    inj_inputs, ext_inputs = deform_inputs(64, 96)
    x = torch.randn(2, 4 * 6, 12)
    c = torch.randn(2, 8 * 12 + 4 * 6 + 2 * 3, 12)
    injector = randomize_(Injector(12, num_heads=3, n_points=2, **norm_kw), seed=seed + 1).eval()
    extractor = randomize_(Extractor(12, num_heads=3, n_points=2, **norm_kw), seed=seed + 2).eval()
    assert_all_random(injector), assert_all_random(extractor)
    return inj_inputs, ext_inputs, x, c, injector, extractor


def test_no_grad_injector_and_extractor_equal_autograd_and_leave_inputs_alone():
    inj_inputs, ext_inputs, x, c, injector, extractor = _adapter_parts()
    x0, c0 = x.clone(), c.clone()
    shapes = level_shapes(4, 6)
    with torch.no_grad():
        assert injector.attn.takes_reordered(x) == "value_proj_last"
        assert extractor.attn.takes_reordered(c) == "output_proj_first"
        y = injector(x, c, inj_inputs)
        d = extractor(c, x, ext_inputs, shapes)
    torch.testing.assert_close(x, x0, rtol=0, atol=0)
    torch.testing.assert_close(c, c0, rtol=0, atol=0)
    torch.testing.assert_close(y, injector(x, c, inj_inputs), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d, extractor(c, x, ext_inputs, shapes), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("affine", [True, False])
def test_interaction_block_no_grad_with_and_without_layer_norm_affine(affine):
    torch.manual_seed(0)
    norm = partial(nn.LayerNorm, eps=1e-6, elementwise_affine=affine)
    block = randomize_(InteractionBlock(12, num_heads=3, n_points=2, norm_layer=norm, extra_extractor=True)).eval()
    vit_blocks = [randomize_(Block(12, num_heads=2), seed=1).eval()]
    assert_all_random(block)
    inj_inputs, ext_inputs = deform_inputs(64, 96)
    x = torch.randn(2, 4 * 6, 12)
    c = torch.randn(2, 8 * 12 + 4 * 6 + 2 * 3, 12)
    want_x, want_c = block(x, c, vit_blocks, inj_inputs, ext_inputs, 4, 6)
    with torch.no_grad():
        got_x, got_c = block(x, c, vit_blocks, inj_inputs, ext_inputs, 4, 6)
    torch.testing.assert_close(got_x, want_x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_c, want_c, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("why", ["fast_path_off", "impl_forced"])
def test_no_grad_forward_without_projection_reordering(why):
    # A module whose fast path is off, or whose operator formulation is forced
    # to another than embedding_bag, keeps the plain formulation: same outputs.
    m = _eval_adapter()
    for mod in m.modules():
        if isinstance(mod, MSDeformAttn):
            if why == "fast_path_off":
                mod.fast_path = False
            else:
                mod.impl = "gather"
    taken, handles = _count_fast_branches(m)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        fast = m(x)
    assert taken["value_proj_last"] == taken["output_proj_first"] == 0 and taken[None] > 0
    for h in handles:
        h.remove()
    _assert_maps_close(fast, m(x))


@pytest.mark.parametrize("per_output", [False, True], ids=["one_vit_map", "four_vit_maps"])
def test_output_stage_fast_branch_equals_the_plain_stage(per_output):
    m = _eval_adapter()
    H, W = 4, 6
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(2, H * W, 24, generator=g) for _ in range(4 if per_output else 1)]
    x = xs if per_output else xs[0]
    c = torch.randn(2, 4 * H * W + H * W + H * W // 4, 24, generator=g)
    c1 = torch.randn(2, 24, 4 * H, 4 * W, generator=g).contiguous(memory_format=torch.channels_last)
    inputs = [t.clone() for t in (*xs, c, c1)]
    with torch.no_grad():
        assert m.folds_output_stage(xs[0])
        fast = m.output_stage(x, c, c1, H, W)
    slow = m.output_stage(x, c, c1, H, W)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for t, t0 in zip((*xs, c, c1), inputs):  # inputs untouched
        torch.testing.assert_close(t, t0, rtol=0, atol=0)


# ------------------------------------------------------------ nothing goes stale


def test_no_grad_output_follows_training_steps_and_in_place_edits():
    # detectron2 evaluates in the middle of training (train -> eval -> train):
    # whatever the fast branches derive from the weights (folded norms,
    # scales, shifts) must follow every change.
    m = _eval_adapter()
    x = torch.randn(1, 3, 64, 64)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)

    def check():
        m.eval()
        with torch.no_grad():
            fast = m(x)
        slow = m(x)
        for k in slow:
            rel = (fast[k] - slow[k]).abs().max() / slow[k].abs().max()
            assert rel <= 1e-4, (k, rel.item())
        return slow

    before = check()
    m.train()
    sum(v.square().mean() for v in m(torch.randn(2, 3, 64, 64)).values()).backward()
    opt.step()  # parameters and BN running statistics change
    after_step = check()
    with torch.no_grad():  # in-place edits of weights every fast branch reads
        m.spm.stem[1].weight.mul_(1.5)
        m.norm1.running_mean.add_(0.3)
        m.up.bias.add_(0.2)
        m.interactions[0].injector.attn.value_proj.weight.mul_(-1)
        m.interactions[-1].extractor.attn.output_proj.bias.add_(0.1)
    after_edit = check()
    for a, b in ((before, after_step), (after_step, after_edit)):
        assert any((a[k] - b[k]).abs().max() > 1e-3 for k in a)  # the changes mattered


# ------------------------------------------------------------ every layer a module


def test_training_forward_calls_every_parameterised_layer_as_a_module():
    # ViT-Adapter-S (real widths, tiny input): in a training-mode autograd
    # forward every leaf module holding parameters fires its forward hook.
    torch.manual_seed(0)
    m = ViTAdapter(**VIT_ADAPTER_PRESETS["S"], norm="BN").train()
    leaves = {name: mod for name, mod in m.named_modules()
              if not list(mod.children()) and list(mod.parameters(recurse=False))}
    fired = set()
    handles = [mod.register_forward_hook(lambda mod, i, o, name=name: fired.add(name)) for name, mod in leaves.items()]
    out = m(torch.randn(1, 3, 64, 64))  # the 1/32 map is 2x2: training BatchNorm needs > 1 value
    assert all(v.requires_grad for v in out.values())
    for h in handles:
        h.remove()
    assert len(leaves) > 150
    assert sorted(set(leaves) - fired) == []


def test_fvcore_attributes_flops_to_the_deformable_projections():
    from vit_adapter.analysis import count_flops

    m = _eval_adapter()
    flops = count_flops(m, (torch.randn(1, 3, 64, 64),))["by_module"]
    for i, block in enumerate(m.interactions):
        for part in ("injector", "extractor"):
            for proj in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
                assert flops[f"interactions.{i}.{part}.attn.{proj}"] > 0, (i, part, proj)
    for name in ("spm.fc1", "spm.fc2", "spm.fc3", "spm.fc4", "up"):
        assert flops[name] > 0, name
