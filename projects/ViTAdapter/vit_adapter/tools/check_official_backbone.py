#!/usr/bin/env python
"""Check our ViTAdapter against the released implementation, numerically.

Runs the release's own detection backbone source
(``detection/mmdet_custom/models/backbones/{vit_adapter,adapter_modules,base/vit}.py``
and ``detection/ops``) from a checkout of czczup/ViT-Adapter, or with
``--variant segmentation`` its segmentation backbone
(``segmentation/mmseg_custom/models/backbones/...``, same ``detection/ops``: the
segmentation tree has none of its own) against our
``ViTAdapter(vit_feature="per_interaction")`` with the segmentation configs'
global attention in every block. Small
stand-ins for mmcv / mmdet / mmseg (registry, BaseModule, logger) and the release's
pure-PyTorch deformable-attention core instead of its CUDA extension. Builds a
small official ViTAdapter with random weights and random BN statistics, loads
its state dict into ours with ``strict=True``, and compares the four outputs
and all gradients (eval and train mode, square and non-square inputs whose
token grids need window padding), then the outputs of the no-grad eval
forward (``torch.no_grad`` + eval: the modules' fast branches, e.g. the
deformable attention's projections moved across the sampling and folded
norms; the run asserts they were taken) with the release's.

    python tools/check_official_backbone.py --official /path/to/ViT-Adapter
    python tools/check_official_backbone.py --official /path/to/ViT-Adapter.git   # bare repo
    python tools/check_official_backbone.py --official /path/to/ViT-Adapter --variant segmentation

Nothing of the release is copied into this project: the files are read from
the given checkout into a temporary folder for the duration of the run.
Runs in float64 (timm's pos-embed resampling still interpolates in float32,
so expect ~1e-8); exits 1 when any difference exceeds --tol (relative to the
output / gradient scale).
"""
import argparse
import os
import subprocess
import sys
import tempfile

_OPS = {
    "ops/modules/__init__.py": "detection/ops/modules/__init__.py",
    "ops/modules/ms_deform_attn.py": "detection/ops/modules/ms_deform_attn.py",
    "ops/functions/__init__.py": "detection/ops/functions/__init__.py",
    "ops/functions/ms_deform_attn_func.py": "detection/ops/functions/ms_deform_attn_func.py",
}
_BACKBONE_DIRS = {
    "detection": "detection/mmdet_custom/models/backbones",
    "segmentation": "segmentation/mmseg_custom/models/backbones",
}
VARIANTS = tuple(_BACKBONE_DIRS)


def official_files(variant: str = "detection") -> dict:
    """Staged path -> path in the release, for the backbone `variant`."""
    src = _BACKBONE_DIRS[variant]
    return {**_OPS, **{f"official/{f}": f"{src}/{f}" for f in ("vit_adapter.py", "adapter_modules.py", "base/vit.py")}}


FILES = official_files("detection")

# Stand-ins for the release's mmcv / mmdet imports (nothing numerical).
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
    "mmdet/models/builder.py": (
        "class _Registry:\n"
        "    def register_module(self, *args, **kwargs):\n"
        "        return lambda cls: cls\n"
        "BACKBONES = _Registry()\n"
    ),
    "mmdet/utils/__init__.py": "import logging\n\ndef get_root_logger():\n    return logging.getLogger('mmdet')\n",
    "mmseg/__init__.py": "",
    "mmseg/models/__init__.py": "",
    "mmseg/models/builder.py": (
        "class _Registry:\n"
        "    def register_module(self, *args, **kwargs):\n"
        "        return lambda cls: cls\n"
        "BACKBONES = _Registry()\n"
    ),
    "mmseg/utils/__init__.py": "import logging\n\ndef get_root_logger():\n    return logging.getLogger('mmseg')\n",
    "mmcv/__init__.py": "",
    "mmcv/runner/__init__.py": (
        "from torch import nn\n\nclass BaseModule(nn.Module):\n"
        "    def __init__(self, init_cfg=None):\n        super().__init__()\n"
    ),
    "mmcv_custom/__init__.py": "def my_load_checkpoint(*args, **kwargs):\n    raise RuntimeError('not used')\n",
}


def _read(official: str, path: str) -> str:
    if os.path.isdir(os.path.join(official, "detection")):  # working tree
        with open(os.path.join(official, path)) as f:
            return f.read()
    return subprocess.run(  # bare repository
        ["git", "-C", official, "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout


def stage_official_sources(official: str, dst: str, variant: str = "detection"):
    if not os.path.exists(official):
        raise SystemExit(f"--official {official!r} does not exist")
    for rel, content in STUBS.items():
        os.makedirs(os.path.dirname(os.path.join(dst, rel)) or dst, exist_ok=True)
        with open(os.path.join(dst, rel), "w") as f:
            f.write(content)
    for rel, src in official_files(variant).items():
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        try:
            text = _read(official, src)
        except (OSError, subprocess.CalledProcessError) as e:
            raise SystemExit(f"cannot read {src} from {official!r}: {e}")
        with open(os.path.join(dst, rel), "w") as f:
            f.write(text)


def compare(tol: float, sizes, variant: str = "detection") -> bool:
    import torch

    import ops.modules.ms_deform_attn as official_msda
    from ops.functions.ms_deform_attn_func import ms_deform_attn_core_pytorch

    class _PureTorchCore:  # the release's own test reference in place of the CUDA op
        @staticmethod
        def apply(value, shapes, level_start_index, locations, weights, im2col_step):
            return ms_deform_attn_core_pytorch(value, shapes, locations, weights)

    official_msda.MSDeformAttnFunction = _PureTorchCore
    from official.vit_adapter import ViTAdapter as OfficialViTAdapter

    from vit_adapter.modeling.backbone import ViTAdapter

    torch.manual_seed(0)
    common = dict(embed_dim=48, depth=4, num_heads=3, deform_num_heads=3, conv_inplane=16, n_points=4,
                  interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], drop_path_rate=0.0,
                  init_values=0.5, cffn_ratio=0.25, deform_ratio=0.5)
    if variant == "segmentation":  # the released ADE20K configs: global attention in every block
        official = OfficialViTAdapter(pretrain_size=224, mlp_ratio=4, window_attn=[False] * 4,
                                      window_size=[None] * 4, **common)
        ours = ViTAdapter(pretrain_size=224, window_block_indexes=[], vit_feature="per_interaction",
                          norm="SyncBN", **common)
    else:
        official = OfficialViTAdapter(pretrain_size=224, mlp_ratio=4, window_attn=[True, False, True, False],
                                      window_size=[3, None, 3, None], **common)
        ours = ViTAdapter(pretrain_size=224, window_size=3, window_block_indexes=[0, 2], norm="SyncBN", **common)
    print(f"variant: {variant} (ours: vit_feature={ours.vit_feature!r})")
    with torch.no_grad():  # random everything: nothing may hide behind an init value
        for p in official.parameters():
            p.normal_(0, 0.2)
        for name, b in official.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.2)
    # float64: float32 rounding differences (~1e-7) can flip the stem's max-pool
    # argmax between near-equal values, which moves a gradient to another pixel.
    official.double()
    ours.double()
    state = official.state_dict()
    ours.load_state_dict(state, strict=True)
    print(f"official state dict ({len(state)} tensors) loads into ours with strict=True")

    ok = True
    official_params = dict(official.named_parameters())
    for train in (False, True):
        for hw in sizes:
            official.train(train)
            ours.train(train)
            x = torch.randn(2, 3, *hw, dtype=torch.float64)
            xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
            fa, fb = official(xa), ours(xb)
            fb = [fb[k] for k in ("res2", "res3", "res4", "res5")]
            scale = max(a.abs().max().item() for a in fa)
            out_diff = max((a - b).abs().max().item() for a, b in zip(fa, fb)) / scale
            official.zero_grad()
            ours.zero_grad()
            # a fixed random projection: well-conditioned gradients even after the output BNs
            weights = [torch.randn_like(a) for a in fa]
            sum((a * w).sum() for a, w in zip(fa, weights)).backward()
            sum((b * w).sum() for b, w in zip(fb, weights)).backward()
            gscale = max(p.grad.abs().max().item() for p in official.parameters())
            grad_diff = max((official_params[n].grad - p.grad).abs().max().item()
                            for n, p in ours.named_parameters()) / gscale
            in_diff = (xa.grad - xb.grad).abs().max().item() / xa.grad.abs().max().item()
            worst = max(out_diff, grad_diff, in_diff)
            ok &= worst <= tol
            print(f"{'train' if train else 'eval '} {hw[0]}x{hw[1]}: relative max difference "
                  f"outputs {out_diff:.1e}, parameter grads {grad_diff:.1e}, input grads {in_diff:.1e}"
                  f"{'' if worst <= tol else '  > tol'}")
    official.eval()
    ours.eval()
    taken = fast_branches(ours)
    for hw in sizes:
        x = torch.randn(2, 3, *hw, dtype=torch.float64)
        with torch.no_grad():
            fa, fb = official(x), ours(x)
        fb = [fb[k] for k in ("res2", "res3", "res4", "res5")]
        out_diff = max((a - b).abs().max().item() for a, b in zip(fa, fb)) / max(a.abs().max().item() for a in fa)
        ok &= out_diff <= tol
        print(f"eval no_grad {hw[0]}x{hw[1]}: relative max difference outputs {out_diff:.1e}"
              f"{'' if out_diff <= tol else '  > tol'}")
    for h in taken.pop("handles"):
        h.remove()
    # every deformable attention reordered, the stem's norms and the output stage folded
    n_attn = sum(isinstance(m, official_msda.MSDeformAttn) for m in official.modules()) * len(sizes)
    all_taken = taken == {"reordered": n_attn, "plain": 0, "folded": 2 * len(sizes)}
    ok &= all_taken
    print(f"eval no_grad fast branches: {taken['reordered']}/{n_attn} deformable attentions reordered, "
          f"{taken['folded']}/{2 * len(sizes)} stem / output stage folds{'' if all_taken else '  MISSING'}")
    return ok


def fast_branches(model) -> dict:
    """Forward pre-hooks on `model` counting the fast branches its calls take
    (the no-grad check is only meaningful if they run); "handles" to remove them."""
    from vit_adapter.layers.fast_path import fast_path_ok
    from vit_adapter.layers.ms_deform_attn import MSDeformAttn
    from vit_adapter.modeling.adapter_modules import SpatialPriorModule

    taken = {"reordered": 0, "plain": 0, "folded": 0, "handles": []}

    def on_attn(mod, args):
        taken["plain" if mod.takes_reordered(args[0]) is None else "reordered"] += 1

    for m in model.modules():
        if isinstance(m, MSDeformAttn):
            taken["handles"].append(m.register_forward_pre_hook(on_attn))
        elif isinstance(m, SpatialPriorModule):
            taken["handles"].append(m.register_forward_pre_hook(
                lambda mod, args: taken.__setitem__("folded", taken["folded"] + fast_path_ok(mod, args[0]))))
    taken["handles"].append(model.register_forward_pre_hook(
        lambda mod, args: taken.__setitem__("folded", taken["folded"] + mod.folds_output_stage(args[0]))))
    return taken


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="czczup/ViT-Adapter checkout (working tree or bare repo)")
    parser.add_argument("--tol", type=float, default=1e-6, help="max relative difference (default 1e-6)")
    parser.add_argument("--quick", action="store_true", help="two small input sizes only (CI)")
    parser.add_argument("--variant", choices=VARIANTS, default="detection",
                        help="the release's detection (default) or segmentation backbone")
    args = parser.parse_args(argv)
    sizes = [(64, 96), (96, 64)] if args.quick else [(64, 96), (96, 64), (128, 224)]
    with tempfile.TemporaryDirectory() as tmp:
        stage_official_sources(os.path.abspath(args.official), tmp, args.variant)
        sys.path.insert(0, tmp)
        try:
            ok = compare(args.tol, sizes, args.variant)
        finally:
            sys.path.remove(tmp)
            # forget the staged modules and stand-ins (an importer must not see a fake mmdet later)
            staged = {"ops", "official", "mmdet", "mmseg", "mmcv", "mmcv_custom", "MultiScaleDeformableAttention"}
            for name in [n for n in sys.modules if n.split(".")[0] in staged]:
                del sys.modules[name]
    print("MATCH" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
