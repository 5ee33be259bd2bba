"""Every implementation of multi-scale deformable attention equals the
grid_sample reference (values and gradients), and the dispatcher picks and
falls back as documented. The reference itself is tested against an explicit
bilinear loop in test_ms_deform_attn.py."""
import pytest
import torch

from vit_adapter.layers.ms_deform_attn import (
    MSDeformAttn,
    dispatch,
    embedding_bag,
    ms_deform_attn,
    ms_deform_attn_reference,
    reordered,
    select_impl,
)
from vit_adapter.layers.ms_deform_attn.embedding_bag import ms_deform_attn_embedding_bag
from vit_adapter.layers.ms_deform_attn.gather import ms_deform_attn_gather

ATOL = 1e-5


def _compiled_aot_eager():
    # Dynamo + AOTAutograd trace of the exact function the "compile" path
    # compiles (Inductor itself needs minutes on this CPU; it runs in the CUDA test).
    torch._dynamo.reset()
    return torch.compile(ms_deform_attn_gather, backend="aot_eager")


def _compiled_call(value, shapes, loc, weights):
    return _compiled_aot_eager()(value, [tuple(s) for s in shapes.tolist()], loc, weights)


PATHS = {
    "embedding_bag": ms_deform_attn_embedding_bag,
    "gather": ms_deform_attn_gather,
    "compile(aot_eager)": _compiled_call,
}


def _inputs(shapes, n=2, lq=7, m=3, dh=5, p=3, lo=-0.3, hi=1.3, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(1)
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, dh, generator=g).to(dtype)
    loc = (torch.rand(n, lq, m, len(shapes), p, 2, generator=g) * (hi - lo) + lo).to(dtype)
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g).to(dtype)
    return [t.to(device) for t in (value, torch.tensor(shapes), loc, weights)]


def _value_and_grads(fn, value, shapes, loc, weights):
    leaves = [t.detach().clone().requires_grad_(True) for t in (value, loc, weights)]
    out = fn(leaves[0], shapes, leaves[1], leaves[2])
    # A fixed random cotangent, so every output element matters.
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(out.device, out.dtype)
    grads = torch.autograd.grad(out, leaves, cot)
    return out.detach(), grads


def _assert_matches_reference(fn, value, shapes, loc, weights):
    out_ref, grads_ref = _value_and_grads(ms_deform_attn_reference, value, shapes, loc, weights)
    out, grads = _value_and_grads(fn, value, shapes, loc, weights)
    assert out.shape == out_ref.shape
    torch.testing.assert_close(out, out_ref, atol=ATOL, rtol=0)
    for name, g, g_ref in zip(("value", "locations", "weights"), grads, grads_ref):
        torch.testing.assert_close(g, g_ref, atol=ATOL, rtol=0, msg=lambda m: f"grad {name}: {m}")


CASES = {
    # non-square levels, batch 2, points up to 0.3 outside the map on every side
    "multi_level_non_square": dict(shapes=[(6, 9), (3, 5), (2, 2)]),
    # the extractor's case: one value level
    "single_level": dict(shapes=[(7, 4)], lq=11),
    # 1-pixel-wide and 1-pixel-high levels: every corner is near a border
    "thin_levels": dict(shapes=[(1, 6), (5, 1)], n=1),
    # all points far outside: output and location gradients are exactly 0
    "far_outside": dict(shapes=[(4, 5), (2, 3)], lo=1.6, hi=3.0),
    # The ViT-Adapter-S injector layout at a 128x128 input (6 heads x 64
    # channels, 4 points). In float64: at this size float32 location gradients
    # reach |g| ~ 500 and the float32 *reference* is itself ~1.7e-4 off the
    # exact value (see test_float32_accuracy_no_worse_than_reference).
    "adapter_s_injector": dict(shapes=[(16, 16), (8, 8), (4, 4)], n=1, lq=64, m=6, dh=64, p=4,
                               lo=-0.05, hi=1.05, dtype=torch.float64),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", list(CASES))
def test_path_matches_reference(path, case):
    kw = dict(CASES[case])
    value, shapes, loc, weights = _inputs(**kw)
    _assert_matches_reference(PATHS[path], value, shapes, loc, weights)


@pytest.mark.parametrize("strategy", ["all_corners", "shifted_top_left"])
@pytest.mark.parametrize("case", ["multi_level_non_square", "single_level", "thin_levels", "adapter_s_injector"])
def test_both_value_gradient_strategies(monkeypatch, strategy, case):
    # The backward picks one of two value-gradient strategies by size; force each.
    threshold = 0.0 if strategy == "all_corners" else float("inf")
    monkeypatch.setattr(embedding_bag, "_CORNER_SORT_MIN_ROWS_PER_POINT", threshold)
    value, shapes, loc, weights = _inputs(**CASES[case])
    _assert_matches_reference(ms_deform_attn_embedding_bag, value, shapes, loc, weights)


@pytest.mark.parametrize("fn", [ms_deform_attn_embedding_bag, ms_deform_attn_gather])
def test_float32_accuracy_no_worse_than_reference(fn):
    """At the real adapter layout, in float32, each path is at least as close to
    the exact (float64) result as the float32 reference is."""
    kw = dict(CASES["adapter_s_injector"], dtype=torch.float32)
    value, shapes, loc, weights = _inputs(**kw)
    exact, exact_grads = _value_and_grads(
        ms_deform_attn_reference, value.double(), shapes, loc.double(), weights.double())

    def errors(f):
        out, grads = _value_and_grads(f, value, shapes, loc, weights)
        return [(a.double() - b).abs().max().item() for a, b in zip((out, *grads), (exact, *exact_grads))]

    ref_err, err = errors(ms_deform_attn_reference), errors(fn)
    for name, e, r in zip(("output", "grad value", "grad locations", "grad weights"), err, ref_err):
        assert e <= max(1.5 * r, 1e-6), f"{name}: error {e:.2e} vs the float32 reference's {r:.2e}"


def test_far_outside_points_read_zero():
    value, shapes, loc, weights = _inputs(shapes=[(4, 5), (2, 3)], lo=1.6, hi=3.0)
    out, grads = _value_and_grads(ms_deform_attn_embedding_bag, value, shapes, loc, weights)
    assert out.abs().max() == 0
    assert all(g.abs().max() == 0 for g in grads)


def _centres_and_borders(weights: torch.Tensor) -> torch.Tensor:
    """Locations (N, Lq, M, L, P, 2) on the pixel centres and exact edges of a
    4 x 6 level (x = loc * W - 0.5 integral; loc = 0 and 1): where floor()
    jumps. Lq * P <= 16, shaped like `weights` (N, Lq, M, L, P)."""
    n, lq, m, n_levels, p = weights.shape
    xs = torch.tensor([0.0, 0.5 / 6, 2.5 / 6, 1.0])
    ys = torch.tensor([0.0, 0.5 / 4, 1.5 / 4, 1.0])
    loc = torch.stack(torch.meshgrid(xs, ys, indexing="ij"), -1).reshape(16, 2)[: lq * p]
    return loc.view(1, lq, 1, 1, p, 2).expand(n, lq, m, n_levels, p, 2).contiguous()


def test_points_on_pixel_centres_and_borders():
    # Integer pixel coordinates (x = loc * W - 0.5 integral) and the exact map
    # edges (loc = 0 and 1) hit the floor()'s discontinuities.
    shapes = [(4, 6), (2, 3)]
    value, shapes_t, _, weights = _inputs(shapes=shapes, lq=4, p=2)
    loc = _centres_and_borders(weights)
    for fn in (ms_deform_attn_embedding_bag, ms_deform_attn_gather):
        out_ref = ms_deform_attn_reference(value, shapes_t, loc, weights)
        torch.testing.assert_close(fn(value, shapes_t, loc, weights), out_ref, atol=ATOL, rtol=0)


def test_embedding_bag_path_gradcheck_float64():
    value, shapes, loc, weights = _inputs(shapes=[(3, 4), (2, 2)], n=2, lq=3, m=2, dh=3, p=2, dtype=torch.float64)
    leaves = [t.requires_grad_(True) for t in (value, loc, weights)]
    assert torch.autograd.gradcheck(
        lambda v, l, w: ms_deform_attn_embedding_bag(v, shapes, l, w), leaves, eps=1e-6, atol=1e-5
    )


def test_value_only_and_weights_only_gradients():
    # The hand-written backward computes each gradient only when asked.
    value, shapes, loc, weights = _inputs(shapes=[(5, 3), (2, 4)])
    ref_v = torch.autograd.grad(
        ms_deform_attn_reference(value.requires_grad_(True), shapes, loc, weights).sum(), value)[0]
    got_v = torch.autograd.grad(ms_deform_attn_embedding_bag(value, shapes, loc, weights).sum(), value)[0]
    torch.testing.assert_close(got_v, ref_v, atol=ATOL, rtol=0)
    value = value.detach()
    w = weights.requires_grad_(True)
    ref_w = torch.autograd.grad(ms_deform_attn_reference(value, shapes, loc, w).sum(), w)[0]
    got_w = torch.autograd.grad(ms_deform_attn_embedding_bag(value, shapes, loc, w).sum(), w)[0]
    torch.testing.assert_close(got_w, ref_w, atol=ATOL, rtol=0)


# ---------------------------------------------------------------- module level


def _module_pair(impl, n_levels, **kw):
    torch.manual_seed(3)
    ref = MSDeformAttn(d_model=24, n_levels=n_levels, n_heads=4, n_points=3, impl="reference", **kw)
    # Non-zero offsets / attention projections, so points move with the query.
    for lin in (ref.sampling_offsets, ref.attention_weights):
        torch.nn.init.normal_(lin.weight, std=0.5)
    other = MSDeformAttn(d_model=24, n_levels=n_levels, n_heads=4, n_points=3, impl=impl, **kw)
    other.load_state_dict(ref.state_dict())
    return ref, other


@pytest.mark.parametrize("impl", ["auto", "embedding_bag", "gather"])
@pytest.mark.parametrize("ref_points", ["points", "boxes"])
def test_module_paths_match_with_padding_mask(impl, ref_points):
    shapes = torch.tensor([[6, 4], [3, 2]])
    s = int(shapes.prod(1).sum())
    n, lq = 2, 5
    ref, other = _module_pair(impl, n_levels=2, ratio=0.5)
    g = torch.Generator().manual_seed(4)
    query = torch.randn(n, lq, 24, generator=g)
    feat = torch.randn(n, s, 24, generator=g)
    dims = 2 if ref_points == "points" else 4
    rp = torch.rand(n, lq, 2, dims, generator=g)
    mask = torch.zeros(n, s, dtype=torch.bool)
    mask[1, -7:] = True  # second image padded
    start = torch.tensor([0, 24])
    outs = []
    for mod in (ref, other):
        q, f = query.clone().requires_grad_(True), feat.clone().requires_grad_(True)
        out = mod(q, rp, f, shapes, start, mask)
        grads = torch.autograd.grad(out.square().sum(), [q, f] + list(mod.parameters()))
        outs.append((out.detach(), grads))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=ATOL, rtol=0)
    for g_other, g_ref in zip(outs[1][1], outs[0][1]):
        torch.testing.assert_close(g_other, g_ref, atol=ATOL, rtol=0)


def test_module_rejects_unknown_impl():
    with pytest.raises(ValueError, match="impl must be"):
        MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=1, impl="cuda_ext")


def test_module_auto_uses_dispatcher(monkeypatch):
    calls = []
    real = dispatch.ms_deform_attn_embedding_bag

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(dispatch, "ms_deform_attn_embedding_bag", spy)
    mod = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=1)
    mod(torch.randn(1, 3, 8), torch.rand(1, 3, 1, 2), torch.randn(1, 6, 8), torch.tensor([[2, 3]]), torch.tensor([0]))
    assert calls == [1]


# ---------------------------------------------------------------- dispatcher


def test_select_impl_defaults(monkeypatch):
    assert select_impl("cpu") == "embedding_bag"
    expected_cuda = "compile" if dispatch.compile_available(torch.device("cuda")) else "embedding_bag"
    assert select_impl("cuda") == expected_cuda
    monkeypatch.setitem(__import__("sys").modules, "triton", None)  # triton not importable
    assert select_impl("cuda") == "embedding_bag"


def test_select_impl_inside_traces(monkeypatch):
    # A trace (fvcore) runs the eager embedding_bag path on any device; an ONNX
    # export the reference (GridSample); a named formulation is always honoured.
    seen = {}

    def record(t):
        seen["auto"], seen["forced"] = select_impl("cuda"), select_impl("cuda", "gather")
        return t

    torch.jit.trace(record, torch.zeros(1), check_trace=False)
    assert seen == {"auto": "embedding_bag", "forced": "gather"}
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert select_impl("cpu") == "reference" and select_impl("cpu", "embedding_bag") == "embedding_bag"


def test_select_impl_in_a_saved_graph_trace():
    """A trace for a saved graph (TorchScript) runs the reference; outside a trace the context changes nothing."""
    from vit_adapter.layers.ms_deform_attn import saved_graph_trace

    seen = {}

    def record(t):
        seen["auto"], seen["forced"] = select_impl("cpu"), select_impl("cpu", "embedding_bag")
        return t

    with saved_graph_trace():
        assert select_impl("cpu") == "embedding_bag"  # eager: unchanged
        torch.jit.trace(record, torch.zeros(1), check_trace=False)
    assert seen == {"auto": "reference", "forced": "embedding_bag"}
    torch.jit.trace(record, torch.zeros(1), check_trace=False)  # the context is gone
    assert seen["auto"] == "embedding_bag"


def test_select_impl_forced():
    assert select_impl("cpu", "reference") == "reference"
    assert select_impl("cpu", "gather") == "gather"
    with pytest.raises(ValueError, match="impl must be"):
        select_impl("cpu", "fast")


def test_dispatcher_runs_the_forced_path(monkeypatch):
    value, shapes, loc, weights = _inputs(shapes=[(4, 4), (2, 2)])
    seen = []
    for name in ("reference", "embedding_bag", "gather"):
        fn = getattr(dispatch, f"ms_deform_attn_{name}")
        monkeypatch.setattr(dispatch, f"ms_deform_attn_{name}", lambda *a, _fn=fn, _n=name: seen.append(_n) or _fn(*a))
    ref = ms_deform_attn_reference(value, shapes, loc, weights)
    for name in ("reference", "embedding_bag", "gather"):
        torch.testing.assert_close(ms_deform_attn(value, shapes, None, loc, weights, impl=name), ref, atol=ATOL, rtol=0)
    assert seen == ["reference", "embedding_bag", "gather"]


def test_module_impl_is_honoured_on_every_path(monkeypatch):
    # A module's own impl runs with and without autograd, in train and eval mode,
    # reorder set or not (a reordering is written with embedding_bag: another
    # impl keeps the plain formulation).
    seen = []
    real = dispatch.ms_deform_attn_reference
    monkeypatch.setattr(dispatch, "ms_deform_attn_reference", lambda *a: seen.append(1) or real(*a))
    for reorder in (None, "value_proj_last", "output_proj_first"):
        mod = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=1, impl="reference", reorder=reorder)
        args = (torch.randn(1, 3, 8), torch.rand(1, 3, 1, 2), torch.randn(1, 6, 8), torch.tensor([[2, 3]]),
                torch.tensor([0]))
        for train in (True, False):
            mod.train(train)
            mod(*args)
            with torch.no_grad():
                assert mod.takes_reordered(args[0]) is None
                mod(*args)
    assert len(seen) == 12


def test_auto_compile_failure_falls_back_in_that_module(monkeypatch):
    monkeypatch.setattr(dispatch, "compile_available", lambda device: True)

    def broken(*a):
        raise RuntimeError("inductor exploded")

    monkeypatch.setattr(dispatch, "_compiled_gather", lambda: broken)
    shapes = torch.tensor([[4, 4]])
    args = (torch.randn(1, 5, 8), torch.rand(1, 5, 1, 2), torch.randn(1, 16, 8), shapes, torch.tensor([0]))
    mod = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=2)
    ref = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=2, impl="reference")
    ref.load_state_dict(mod.state_dict())
    assert mod.resolved_impl("cpu") == "compile"
    with pytest.warns(UserWarning, match="inductor exploded"):
        out = mod(*args)
    torch.testing.assert_close(out, ref(*args), atol=ATOL, rtol=0)
    assert mod.resolved_impl("cpu") == "embedding_bag" and mod.impl == "auto"  # recorded on the module
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not retried
        mod(*args)
    other = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=2)
    assert other.resolved_impl("cpu") == "compile"  # no process-global flag
    forced = MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=2, impl="compile")
    with pytest.raises(RuntimeError, match="inductor exploded"):  # forced: no silent fallback
        forced(*args)
    with pytest.raises(RuntimeError, match="inductor exploded"):  # the bare operator raises too
        ms_deform_attn(torch.randn(1, 16, 2, 4), shapes, None, torch.rand(1, 5, 2, 1, 2, 2), torch.rand(1, 5, 2, 1, 2))


@pytest.mark.parametrize("impl", ["reference", "embedding_bag", "gather", "compile"])
def test_mixed_dtypes_compute_in_the_widest(impl):
    # Under autocast the values arrive in half precision, the locations in float32.
    # "compile" runs Inductor on CPU here (a C++ compiler is needed, as on CI).
    if impl == "compile":
        torch._dynamo.reset()
        dispatch._COMPILED = None
    value, shapes, loc, weights = _inputs(shapes=[(4, 5), (2, 3)])
    bf16, f32, f64 = torch.bfloat16, torch.float32, torch.float64
    # (values, locations, weights): half-precision values and weights (autocast), and float32
    # locations with float64 values (computed in float64: float32 pixel coordinates would
    # be ~1e-7 off)
    for dtypes, atol in (((bf16, f32, bf16), ATOL), ((f32, bf16, f32), ATOL), ((f64, f32, f64), 1e-12)):
        args = [t.to(d) for t, d in zip((value, loc, weights), dtypes)]
        out = ms_deform_attn(args[0], shapes, None, args[1], args[2], impl=impl)
        widest = f64 if f64 in dtypes else f32
        assert out.dtype == widest
        ref = ms_deform_attn_reference(args[0].to(widest), shapes, args[1].to(widest), args[2].to(widest))
        torch.testing.assert_close(out, ref, atol=atol, rtol=0)


def test_operator_rejects_bad_shapes():
    value, shapes, loc, weights = _inputs(shapes=[(4, 4), (2, 2)])
    with pytest.raises(ValueError, match="value tokens"):
        ms_deform_attn(value[:, :-1], shapes, None, loc, weights)
    with pytest.raises(ValueError, match="sampling_locations"):
        ms_deform_attn(value, shapes, None, loc[..., :1], weights)
    with pytest.raises(ValueError, match="attention_weights"):
        ms_deform_attn(value, shapes, None, loc, weights[..., :1])


# ---------------------------------------------------------------- CUDA

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("impl", ["embedding_bag", "gather", "compile"])
@pytest.mark.parametrize("case", ["multi_level_non_square", "single_level", "adapter_s_injector"])
def test_cuda_paths_match_reference(impl, case):
    value, shapes, loc, weights = _inputs(**CASES[case], device="cuda")
    torch._dynamo.reset()
    _assert_matches_reference(
        lambda v, s, l, w: ms_deform_attn(v, s, None, l, w, impl=impl), value, shapes, loc, weights
    )


@cuda
def test_cuda_auto_selects_compile():
    if dispatch.compile_available("cuda"):
        assert select_impl("cuda") == "compile"


def test_padded_value_table_same_with_and_without_autograd():
    # One formulation, out of place: in-place writes into a tensor that needs
    # grad would each cost a full-table copy in the backward (CopySlices).
    from vit_adapter.layers.ms_deform_attn.corners import pad_levels

    shapes = [(4, 6), (2, 3), (1, 2)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 3, 5, requires_grad=True)
    with_grad = pad_levels(value, shapes)
    node, seen = with_grad.grad_fn, set()
    stack = [node]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        assert "CopySlices" not in type(fn).__name__
        stack.extend(f for f, _ in fn.next_functions)
    with torch.no_grad():
        without = pad_levels(value, shapes)
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)
    assert without.shape == (2, 6 * 8 + 4 * 5 + 3 * 4, 3, 5)
    # borders are zero, interiors are the levels
    first = without[:, : 6 * 8].view(2, 6, 8, 3, 5)
    assert first[:, 0].abs().sum() == 0 and first[:, :, -1].abs().sum() == 0
    torch.testing.assert_close(first[:, 1:-1, 1:-1].reshape(2, 24, 3, 5), value[:, :24].detach())


# ------------------------------------------- sampling before the value projection


def _project_last_case(shapes, n=2, lq=7, m=3, dh=5, c=4, p=3, lo=-0.3, hi=1.3, dtype=torch.float32):
    """Un-projected features, value_proj weights and the reference's result
    (project first, then sample) for :func:`ms_deform_attn_project_last`."""
    g = torch.Generator().manual_seed(4)
    _, shapes_t, loc, weights = _inputs(shapes, n=n, lq=lq, m=m, dh=dh, p=p, lo=lo, hi=hi, dtype=dtype)
    s = sum(h * w for h, w in shapes)
    feats = (torch.randn(n, s, c, generator=g) * 2 + 1).to(dtype)
    w_v = torch.randn(m * dh, c, generator=g).to(dtype)
    b_v = torch.randn(m * dh, generator=g).to(dtype)
    value = (feats @ w_v.t() + b_v).view(n, s, m, dh)
    want = ms_deform_attn_reference(value, shapes_t, loc, weights)
    return feats, loc, weights, w_v, b_v, want


@pytest.mark.parametrize("case", ["multi_level_non_square", "thin_levels", "far_outside", "adapter_s_injector"])
def test_project_last_equals_projecting_first(case):
    # Sampling commutes with the value projection; the bias enters with the
    # weight of the corners inside the map (points partly / fully outside).
    kw = {k: v for k, v in CASES[case].items() if k != "dh"}
    shapes = kw.pop("shapes")
    feats, loc, weights, w_v, b_v, want = _project_last_case(shapes, **kw)
    got = reordered.ms_deform_attn_project_last(feats, shapes, loc, weights, w_v, b_v)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-6)
    # without bias: the reference on bias-free values
    n, s, _ = feats.shape
    m = weights.shape[2]
    value = (feats @ w_v.t()).view(n, s, m, -1)
    torch.testing.assert_close(reordered.ms_deform_attn_project_last(feats, shapes, loc, weights, w_v, None),
                               ms_deform_attn_reference(value, torch.tensor(shapes), loc, weights),
                               atol=ATOL, rtol=1e-6)


def test_project_last_on_pixel_centres_and_borders():
    shapes = [(4, 6), (2, 3)]
    feats, _, weights, w_v, b_v, _ = _project_last_case(shapes, n=1, lq=8, p=2)
    n, m = weights.shape[0], weights.shape[2]
    loc = _centres_and_borders(weights)
    value = (feats @ w_v.t() + b_v).view(n, -1, m, w_v.shape[0] // m)
    want = ms_deform_attn_reference(value, torch.tensor(shapes), loc, weights)
    got = reordered.ms_deform_attn_project_last(feats, shapes, loc, weights, w_v, b_v)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-6)


def _random_pair(n_levels: int, seed: int, reorder: str):
    """A plain MSDeformAttn with all parameters random (offsets and attention
    weights not at their zero init) and the same module built with `reorder`."""
    torch.manual_seed(seed)
    plain = MSDeformAttn(d_model=24, n_levels=n_levels, n_heads=4, n_points=3)
    with torch.no_grad():
        for prm in plain.parameters():
            prm.normal_(0, 0.2)
    fast = MSDeformAttn(d_model=24, n_levels=n_levels, n_heads=4, n_points=3, reorder=reorder)
    fast.load_state_dict(plain.state_dict())
    return plain.eval(), fast.eval()


def test_module_value_proj_last_equals_the_plain_formulation():
    plain, fast = _random_pair(n_levels=3, seed=5, reorder="value_proj_last")
    shapes = torch.tensor([[6, 8], [3, 4], [2, 2]])
    s = int(shapes.prod(1).sum())
    ref_pts = torch.rand(2, 9, 1, 2) * 1.2 - 0.1
    q, f = torch.randn(2, 9, 24), torch.randn(2, s, 24) * 2 + 1
    start = torch.tensor([0, 48, 60])
    with torch.no_grad():
        assert fast.takes_reordered(q) == "value_proj_last" and plain.takes_reordered(q) is None
        torch.testing.assert_close(fast(q, ref_pts, f, shapes, start), plain(q, ref_pts, f, shapes, start),
                                   atol=ATOL, rtol=1e-5)
        # one-pixel levels and box reference points
        thin = torch.tensor([[6, 8], [3, 4], [1, 4]])
        f_thin = f[:, : 48 + 12 + 4]
        torch.testing.assert_close(fast(q, ref_pts, f_thin, thin, None), plain(q, ref_pts, f_thin, thin, None),
                                   atol=ATOL, rtol=1e-5)
        boxes = torch.rand(2, 9, 1, 4)
        torch.testing.assert_close(fast(q, boxes, f, shapes, start), plain(q, boxes, f, shapes, start),
                                   atol=ATOL, rtol=1e-5)
        # a padding mask: the plain formulation (masked values carry no bias)
        mask = torch.zeros(2, s, dtype=torch.bool)
        mask[1, -9:] = True
        assert fast.takes_reordered(q, mask) is None
        torch.testing.assert_close(fast(q, ref_pts, f, shapes, start, mask), plain(q, ref_pts, f, shapes, start, mask))
    # with autograd: the plain formulation, every projection called as a module
    assert fast.takes_reordered(q) is None


def test_module_output_proj_first_equals_the_plain_formulation():
    plain, fast = _random_pair(n_levels=1, seed=7, reorder="output_proj_first")
    shapes = torch.tensor([[5, 7]])
    ref_pts = torch.rand(2, 40, 1, 2) * 1.2 - 0.1
    q, f = torch.randn(2, 40, 24), torch.randn(2, 35, 24)
    with torch.no_grad():
        assert fast.takes_reordered(q) == "output_proj_first"
        torch.testing.assert_close(fast(q, ref_pts, f, shapes, torch.tensor([0])),
                                   plain(q, ref_pts, f, shapes, torch.tensor([0])), atol=ATOL, rtol=1e-5)


def test_module_reordering_off_in_train_mode_under_autocast_and_when_disabled():
    _, fast = _random_pair(n_levels=1, seed=7, reorder="output_proj_first")
    q = torch.randn(1, 4, 24)
    with torch.no_grad():
        assert fast.takes_reordered(q) == "output_proj_first"
        assert fast.train().takes_reordered(q) is None
        fast.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fast.takes_reordered(q) is None
        fast.fast_path = False
        assert fast.takes_reordered(q) is None


def test_module_rejects_unknown_reorder():
    with pytest.raises(ValueError, match="reorder must be"):
        MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=1, reorder="sideways")


@cuda
def test_cuda_project_last_equals_projecting_first():
    shapes = CASES["multi_level_non_square"]["shapes"]
    feats, loc, weights, w_v, b_v, want = _project_last_case(shapes)
    feats, loc, weights, w_v, b_v = (t.cuda() for t in (feats, loc, weights, w_v, b_v))
    got = reordered.ms_deform_attn_project_last(feats, shapes, loc, weights, w_v, b_v)
    torch.testing.assert_close(got.cpu(), want, atol=ATOL, rtol=1e-6)


# -------------------------------------------- output projection before sampling


@pytest.mark.parametrize("case", ["multi_level_non_square", "single_level", "thin_levels", "far_outside"])
def test_output_projected_equals_projecting_the_samples(case):
    # output_proj commutes with sampling and the attention sum: projecting each
    # head's values first gives the same result.
    value, shapes, loc, weights = _inputs(**CASES[case])
    n, s, m, dh = value.shape
    w_o = torch.randn(7, m * dh, generator=torch.Generator().manual_seed(6))
    want = ms_deform_attn_reference(value, shapes, loc, weights) @ w_o.t()
    got = reordered.ms_deform_attn_output_projected(value, [tuple(x) for x in shapes.tolist()], loc, weights, w_o)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-6)
