#!/usr/bin/env python
"""Check our BEiTAdapter against the released implementation, numerically, both variants.

Stages the release's own backbone sources from a checkout of czczup/ViT-Adapter
(as :mod:`vit_adapter.tools.check_official_backbone` does for ViT-Adapter):

* detection: ``detection/mmdet_custom/models/backbones/{beit_adapter,adapter_modules,base/beit}.py``;
* segmentation: ``segmentation/mmseg_custom/models/backbones/{beit_adapter,adapter_modules,base/beit}.py``;

with ``detection/ops`` and its pure-PyTorch deformable-attention core instead
of the CUDA extension, and small stand-ins for mmcv / mmdet / mmseg (registry,
BaseModule, logger, checkpoint loader). Builds a small release BEiTAdapter of
each variant, perturbs every parameter (relative position tables, gammas, q / v
biases, injector gammas included: none is a no-op) and the BN statistics, loads
its state dict into ours with ``strict=True`` (the derived
``relative_position_index`` buffers are compared, not loaded), and compares in
float64:

* autograd (train and eval mode): the four outputs, every parameter gradient
  and the input gradient;
* ``torch.no_grad`` and ``torch.inference_mode`` (eval): the four outputs.

Detection runs at non-square sizes whose token grids need window padding;
segmentation at the release's img_size (the only size its code runs at).

    python tools/check_official_beit.py --official /path/to/ViT-Adapter[.git]

Exits 1 when a relative difference exceeds --tol.
"""
import argparse
import os
import sys
import tempfile

from vit_adapter.tools.check_official_backbone import _read

_BACKBONES = {
    "detection": "detection/mmdet_custom/models/backbones",
    "segmentation": "segmentation/mmseg_custom/models/backbones",
}
_OPS = {
    "ops/modules/__init__.py": "detection/ops/modules/__init__.py",
    "ops/modules/ms_deform_attn.py": "detection/ops/modules/ms_deform_attn.py",
    "ops/functions/__init__.py": "detection/ops/functions/__init__.py",
    "ops/functions/ms_deform_attn_func.py": "detection/ops/functions/ms_deform_attn_func.py",
}
_REGISTRY = (
    "class _Registry:\n"
    "    def register_module(self, *args, **kwargs):\n"
    "        return lambda cls: cls\n"
    "BACKBONES = _Registry()\n"
)
_LOGGER = "import logging\n\ndef get_root_logger():\n    return logging.getLogger('staged')\n"
# Stand-ins for the release's mmcv / mmdet / mmseg imports (nothing numerical).
STUBS = {
    "ops/__init__.py": "",
    "official/__init__.py": "",
    "official/base/__init__.py": "",
    "MultiScaleDeformableAttention.py": (
        "def ms_deform_attn_forward(*args, **kwargs):\n"
        "    raise RuntimeError('the compiled op is replaced by the pure-PyTorch core')\n"
    ),
    "mmdet/__init__.py": "",
    "mmdet/models/__init__.py": "",
    "mmdet/models/builder.py": _REGISTRY,
    "mmdet/utils/__init__.py": _LOGGER,
    "mmseg/__init__.py": "",
    "mmseg/models/__init__.py": "",
    "mmseg/models/builder.py": _REGISTRY,
    "mmseg/utils/__init__.py": _LOGGER,
    "mmcv/__init__.py": "",
    "mmcv/runner/__init__.py": (
        "from torch import nn\n\nclass BaseModule(nn.Module):\n"
        "    def __init__(self, init_cfg=None):\n        super().__init__()\n"
    ),
    "mmcv_custom/__init__.py": (
        "def load_checkpoint(*args, **kwargs):\n    raise RuntimeError('not used')\n"
        "my_load_checkpoint = load_checkpoint\n"
    ),
}
_STAGED = {"ops", "official", "mmdet", "mmseg", "mmcv", "mmcv_custom", "MultiScaleDeformableAttention"}

# Small models of both variants (4 blocks, one per interaction).
_COMMON = dict(
    patch_size=16, embed_dim=48, depth=4, num_heads=3, mlp_ratio=4, qkv_bias=True, use_abs_pos_emb=False,
    use_rel_pos_bias=True, init_values=0.5, drop_path_rate=0.0, conv_inplane=16, n_points=4,
    deform_num_heads=3, cffn_ratio=0.25, deform_ratio=0.5, interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
)
VARIANTS = {
    # windows 3 and 6 (as 14 / 56 in the HTC++ configs): padded on every grid below
    "detection": dict(_COMMON, img_size=224, window_attn=[True] * 4, window_size=[3, 3, 3, 6]),
    "segmentation": dict(_COMMON, img_size=64),
}


def stage_official_sources(official: str, dst: str, variant: str):
    if not os.path.exists(official):
        raise SystemExit(f"--official {official!r} does not exist")
    base = _BACKBONES[variant]
    files = dict(_OPS)
    files.update({
        "official/beit_adapter.py": f"{base}/beit_adapter.py",
        "official/adapter_modules.py": f"{base}/adapter_modules.py",
        "official/base/beit.py": f"{base}/base/beit.py",
    })
    for rel, content in STUBS.items():
        os.makedirs(os.path.dirname(os.path.join(dst, rel)) or dst, exist_ok=True)
        with open(os.path.join(dst, rel), "w") as f:
            f.write(content)
    for rel, src in files.items():
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        try:
            text = _read(official, src)
        except Exception as e:  # OSError, CalledProcessError
            raise SystemExit(f"cannot read {src} from {official!r}: {e}")
        with open(os.path.join(dst, rel), "w") as f:
            f.write(text)


def _rel(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b)) / max(x.abs().max().item() for x in a)


def compare(variant: str, tol: float, sizes, log=print) -> dict:
    """Stage-independent part: the staged modules must be importable. Returns
    {path: max relative difference} and prints one line per comparison."""
    import torch

    import ops.modules.ms_deform_attn as official_msda
    from ops.functions.ms_deform_attn_func import ms_deform_attn_core_pytorch

    class _PureTorchCore:  # the release's own test reference in place of the CUDA op
        @staticmethod
        def apply(value, shapes, level_start_index, locations, weights, im2col_step):
            return ms_deform_attn_core_pytorch(value, shapes, locations, weights)

    official_msda.MSDeformAttnFunction = _PureTorchCore
    from official.beit_adapter import BEiTAdapter as OfficialBEiTAdapter

    from vit_adapter.modeling.beit_adapter import BEiTAdapter

    torch.manual_seed(0)
    cfg = VARIANTS[variant]
    official = OfficialBEiTAdapter(pretrain_size=224, **cfg)
    ours = BEiTAdapter(pretrain_size=224, norm="SyncBN", with_cls_token=variant == "segmentation", **cfg)
    with torch.no_grad():  # perturb everything: no table, gamma or bias may hide behind its init value
        for p in official.parameters():
            p.normal_(0, 0.2)
        for name, b in official.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.2)
    official.double()
    ours.double()
    state = official.state_dict()
    derived = {k: v for k, v in state.items() if k.endswith("relative_position_index")}
    ours_modules = dict(ours.named_modules())
    bad_index = [k for k, v in derived.items()
                 if not torch.equal(v, ours_modules[k.rsplit(".", 1)[0]].relative_position_index())]
    if bad_index:
        raise SystemExit(f"{variant}: relative_position_index differs from the release's: {bad_index[:3]}")
    ours.load_state_dict({k: v for k, v in state.items() if k not in derived}, strict=True)
    log(f"{variant}: release state dict ({len(state)} tensors, {len(derived)} derived "
        f"relative_position_index buffers equal ours) loads into ours with strict=True")

    results = {}
    official_params = dict(official.named_parameters())
    for train in (False, True):
        for hw in sizes:
            official.train(train)
            ours.train(train)
            x = torch.randn(2, 3, *hw, dtype=torch.float64)
            xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            fa, fb = official(xa), ours(xb)
            fb = [fb[k] for k in ("res2", "res3", "res4", "res5")]
            out_diff = _rel(fa, fb)
            official.zero_grad()
            ours.zero_grad()
            weights = [torch.randn_like(a) for a in fa]
            sum((a * w).sum() for a, w in zip(fa, weights)).backward()
            sum((b * w).sum() for b, w in zip(fb, weights)).backward()
            gscale = max(p.grad.abs().max().item() for p in official.parameters() if p.grad is not None)
            grad_diff = max((official_params[n].grad - p.grad).abs().max().item()
                            for n, p in ours.named_parameters() if p.grad is not None) / gscale
            missing_grads = [n for n, p in ours.named_parameters()
                             if (p.grad is None) != (official_params[n].grad is None)]
            if missing_grads:
                raise SystemExit(f"{variant}: gradients present on one side only: {missing_grads[:5]}")
            in_diff = (xa.grad - xb.grad).abs().max().item() / xa.grad.abs().max().item()
            worst = max(out_diff, grad_diff, in_diff)
            key = f"autograd {'train' if train else 'eval'} {hw[0]}x{hw[1]}"
            results[key] = worst
            log(f"{variant} {key}: relative max difference outputs {out_diff:.1e}, parameter grads "
                f"{grad_diff:.1e}, input grads {in_diff:.1e}{'' if worst <= tol else '  > tol'}")
    official.eval()
    ours.eval()
    for mode, ctx in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
        for hw in sizes:
            x = torch.randn(2, 3, *hw, dtype=torch.float64)
            with ctx():
                fa, fb = official(x), ours(x)
            diff = _rel(fa, [fb[k] for k in ("res2", "res3", "res4", "res5")])
            results[f"{mode} {hw[0]}x{hw[1]}"] = diff
            log(f"{variant} eval {mode} {hw[0]}x{hw[1]}: relative max difference outputs {diff:.1e}"
                f"{'' if diff <= tol else '  > tol'}")
    return results


def run_variant(official: str, variant: str, tol: float, quick: bool, log=print) -> dict:
    if variant == "detection":
        sizes = [(64, 96), (96, 64)] if quick else [(64, 96), (96, 64), (128, 224)]
    else:
        sizes = [(VARIANTS[variant]["img_size"],) * 2]
    with tempfile.TemporaryDirectory() as tmp:
        stage_official_sources(os.path.abspath(official), tmp, variant)
        sys.path.insert(0, tmp)
        try:
            return compare(variant, tol, sizes, log)
        finally:
            sys.path.remove(tmp)
            # forget the staged modules and stand-ins (the next variant / an importer must not see them)
            for name in [n for n in sys.modules if n.split(".")[0] in _STAGED]:
                del sys.modules[name]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="czczup/ViT-Adapter checkout (working tree or bare repo)")
    parser.add_argument("--tol", type=float, default=1e-5, help="max relative difference (default 1e-5)")
    parser.add_argument("--quick", action="store_true", help="two small detection sizes only (CI)")
    parser.add_argument("--variant", choices=["detection", "segmentation", "both"], default="both")
    args = parser.parse_args(argv)
    variants = ["detection", "segmentation"] if args.variant == "both" else [args.variant]
    worst = {}
    for variant in variants:
        results = run_variant(args.official, variant, args.tol, args.quick)
        for path in ("autograd", "no_grad", "inference_mode"):
            worst[(variant, path)] = max(v for k, v in results.items() if k.startswith(path))
    for (variant, path), value in worst.items():
        print(f"max relative difference {variant} {path}: {value:.1e}")
    ok = all(v <= args.tol for v in worst.values())
    print("MATCH" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
