#!/usr/bin/env python
"""Speed, memory and FLOPs of ViT-Adapter against its baselines, in one run.

    python tools/benchmark.py                 # full run (minutes on CPU)
    python tools/benchmark.py --quick         # tiny shapes, seconds (CI)
    python tools/benchmark.py --sections msda backbone --repeats 9 --json out.json

Sections (each prints ratios; absolute times are context):

1. ``msda``: our deformable attention (the dispatcher's choice, see
   vit_adapter.layers.ms_deform_attn) vs the grid_sample reference, at the shapes of
   ViT-Adapter-S's injector (queries on the 1/16 grid, values at 1/8, 1/16,
   1/32) and extractor (queries at 1/8+1/16+1/32, values on the 1/16 grid),
   512x512 and 1024x1024 inputs, forward and forward+backward.
2. ``backbone``: ViT-Adapter-S vs plain ViT-S (patch embed + blocks, same
   window layout), and each with its neck (FPN / SimpleFeaturePyramid),
   inference at 512x512, batch 1. Built from configs/common/models/.
3. ``detector``: full Mask R-CNN (T and S) inference at 512x512 and one
   training step (forward, backward, AdamW step), with and without activation
   checkpointing; peak memory per measurement in its own subprocess (CPU: peak
   RSS; GPU: torch.cuda.max_memory_allocated).
4. ``flops``: parameters and fvcore FLOPs per size T/S/B/L (see
   vit_adapter.analysis for exactly what is counted).
6. ``beit_memory`` (not in the default run; ``--sections beit_memory``):
   BEiT-Adapter-L Mask R-CNN (configs/common/models/mask_rcnn_beit_adapter.py)
   at 1024x1024 (``--beit-side``), one training step without and with
   activation checkpointing (``with_cp``), peak training memory of each in its
   own subprocess, as section 3.
7. ``seg`` (not in the default run; ``--sections seg``): ViT-Adapter-S +
   UperNet: sliding-window vs whole-image inference on a 512x683 image, one
   training step at crop 512 with and without ``with_cp`` (time, peak
   memory), the exported network in onnxruntime vs eager
   (vit_adapter/tools/benchmark_seg.py).
8. ``mask2former`` (not in the default run; ``--sections mask2former``; a GPU run): peak
   training memory of one step of BEiT-Adapter-L + Mask2Former at 896x896
   (configs/ADE20K/mask2former_beit_adapter_l_896_80k.py, batch 1), with
   ``with_cp`` on the backbone and the head's FFNs (the release's setting),
   and also with the pixel decoder's encoder layers checkpointed; tensor peak
   and peak RSS, and where the memory goes: the activations each part keeps
   for backward (backbone / pixel decoder / decoder / losses), measured as the
   allocation growth across its forward. ``--quick``: tiny widths at 64 px.
5. ``deploy``: exported ONNX network in onnxruntime vs PyTorch eager (demo
   model, ViT-Adapter-S at 800x1344) and the deformable attention's
   formulations in onnxruntime (see vit_adapter.tools.benchmark_deploy). Needs the
   ``deploy`` extra.

Timing: every ratio compares two measurements taken alternately on the same
inputs; the reported ratio is the median over ``--repeats`` pairs. Clocks:
``--clock wall`` (default; on CUDA always, with synchronisation) is what a user
sees on a quiet machine. On a shared machine use ``--threads 1 --clock
process``: the process CPU time excludes waiting for a core (with several
threads it would also count OpenMP spin-waiting, so use it with one thread).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List

from vit_adapter import REPO_ROOT as REPO  # noqa: E402
SECTIONS = ("msda", "backbone", "detector", "flops", "deploy")
# only when asked for (beit_memory: a BEiT-Adapter-L training step at 1024^2; mask2former: 896^2, a GPU run)
EXTRA_SECTIONS = ("beit_memory", "seg", "mask2former")
MASK2FORMER_CONFIG = os.path.join(REPO, "configs", "ADE20K", "mask2former_beit_adapter_l_896_80k.py")

import torch  # noqa: E402

from vit_adapter.tools import memory  # noqa: E402
from vit_adapter.tools.bench_common import (  # noqa: E402
    Clock,
    adapter_cfg,
    adapter_s_msda_inputs,
    beit_cfg,
    plain_cfg,
    print_table,
    shrink_for_quick,
    time_pair,
)

# --------------------------------------------------------------------------- 1. msda


def bench_msda(args, device, clock) -> List[Dict]:
    from vit_adapter.layers.ms_deform_attn import ms_deform_attn, ms_deform_attn_reference, select_impl

    ours_impl = select_impl(device, args.impl)
    sides = (64, 128) if args.quick else (512, 1024)
    results = []
    for side in sides:
        for layer in ("injector", "extractor"):
            for pass_ in ("fwd", "fwd+bwd"):
                bwd = pass_ == "fwd+bwd"
                value, shapes, loc, weights = adapter_s_msda_inputs(side, layer, device, bwd)
                level_start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])

                def run(fn):
                    if bwd:
                        out = fn()
                        out.backward(torch.ones_like(out))
                        for t in (value, loc, weights):
                            t.grad = None
                    else:
                        with torch.no_grad():
                            fn()

                def ref():
                    return ms_deform_attn_reference(value, shapes, loc, weights)

                def ours():
                    return ms_deform_attn(value, shapes, level_start, loc, weights, impl=ours_impl)

                with torch.no_grad():
                    err = (ref() - ours()).abs().max().item()
                t = time_pair(lambda: run(ref), lambda: run(ours), clock, args.repeats)
                results.append(dict(side=side, layer=layer, pass_=pass_, impl=ours_impl,
                                    reference_ms=t["a_ms"], ours_ms=t["b_ms"], speedup=t["ratio"],
                                    speedup_range=[t["ratio_min"], t["ratio_max"]], max_abs_diff=err))
    rows = [[f"{r['side']}x{r['side']}", r["layer"], r["pass_"], f"{r['reference_ms']:.1f}",
             f"{r['ours_ms']:.1f}", f"{r['speedup']:.2f}x", f"{r['max_abs_diff']:.1e}"] for r in results]
    print_table(
        f"1. deformable attention: reference (grid_sample) / ours ('{ours_impl}'), ViT-Adapter-S shapes",
        ["input", "layer", "pass", "ref ms", "ours ms", "speedup", "max|diff|"], rows)
    return results


# --------------------------------------------------------------------------- 2. backbone


def bench_backbone(args, device, clock) -> Dict:
    from detectron2.config import instantiate

    side = 64 if args.quick else 512
    size = "S"
    acfg, pcfg = adapter_cfg(size), plain_cfg(size)
    if args.quick:
        acfg, pcfg = shrink_for_quick(acfg, True), shrink_for_quick(pcfg, False)
    torch.manual_seed(0)
    adapter_fpn = instantiate(acfg.model.backbone).to(device).eval()
    plain_sfp = instantiate(pcfg.model.backbone).to(device).eval()
    adapter, plain = adapter_fpn.bottom_up, plain_sfp.net
    x = torch.randn(1, 3, side, side, device=device)

    def infer(m):
        def f():
            with torch.inference_mode():
                m(x)
        return f

    pairs = {
        "ViT-Adapter-S / ViT-S (patch embed + blocks)": (adapter, plain),
        "ViT-Adapter-S + FPN / ViT-S + SimpleFeaturePyramid": (adapter_fpn, plain_sfp),
    }
    results = {"side": side, "pairs": []}
    rows = []
    for name, (a, b) in pairs.items():
        t = time_pair(infer(a), infer(b), clock, args.repeats)
        results["pairs"].append(dict(name=name, adapter_ms=t["a_ms"], baseline_ms=t["b_ms"], ratio=t["ratio"],
                                     ratio_range=[t["ratio_min"], t["ratio_max"]]))
        rows.append([name, f"{t['a_ms']:.0f}", f"{t['b_ms']:.0f}", f"{t['ratio']:.2f}",
                     f"[{t['ratio_min']:.2f}, {t['ratio_max']:.2f}]"])
    print_table(f"2. backbone inference {side}x{side}, batch 1" + (" (tiny widths: --quick)" if args.quick else ""),
                ["pair", "adapter ms", "baseline ms", "ratio", "range"], rows,
                "target: ViT-Adapter-S / ViT-S <= 1.9 on CPU at 512x512")
    return results


# --------------------------------------------------------------------------- 3. detector (subprocesses)


def detector_child(spec: Dict) -> Dict:
    """One measurement in a fresh process: build, warm up, time, report peak memory."""
    from detectron2.config import instantiate
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    clock = Clock(spec["clock"], device)
    if spec.get("model") == "beit":
        cfg = beit_cfg(with_cp=spec["with_cp"], quick=spec["quick"])
    else:
        cfg = adapter_cfg(spec["size"], with_cp=spec["with_cp"])
        if spec["quick"]:
            cfg = shrink_for_quick(cfg, True)
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device)
    side = spec["side"]
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, side, side, generator=g) * 255).to(device)
    inst = Instances((side, side))
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8], [0.2, 0.5, 0.6, 0.95]]) * side
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.tensor([1, 5, 17])
    masks = torch.zeros(3, side, side, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
        masks[i, y0:y1, x0:x1] = True
    inst.gt_masks = BitMasks(masks)
    batch_train = [{"image": image, "instances": inst.to(device), "height": side, "width": side}]
    batch_test = [{"image": image, "height": side, "width": side}]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if spec["mode"] == "train" else None

    def step():
        if spec["mode"] == "train":
            model.train()
            with EventStorage():
                losses = model(batch_train)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
        else:
            model.eval()
            with torch.inference_mode():
                model(batch_test)

    # Memory of the built model (weights, imports) before any step; the peak
    # below covers the warm-up and timed steps (activations, gradients,
    # optimizer state, allocator caches).
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = memory.current_rss_bytes()
    step()  # warm-up (allocates the optimizer state too)
    # Second baseline: after the warm-up the weights, gradients and AdamW
    # state (16 B per parameter, a fixed cost checkpointing cannot cut) are
    # resident; the peak of the timed steps above it is the step's own
    # (activation + transient) memory.
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak_warm = torch.cuda.max_memory_allocated(device)
        state = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        has_state_peak = True
    else:
        peak_warm = memory.peak_rss_bytes()
        memory.release_free_heap()
        state = memory.current_rss_bytes()
        has_state_peak = memory.reset_peak_rss()
    times = []
    for _ in range(spec["repeats"]):
        t0 = clock()
        step()
        times.append(clock() - t0)
    if device.type == "cuda":
        peak_timed = torch.cuda.max_memory_allocated(device)
        peak_tensors = max(peak_warm, peak_timed)
    else:
        peak_timed = memory.hwm_rss_bytes() if has_state_peak else memory.peak_rss_bytes()
        peak_tensors = memory.peak_tensor_bytes_cpu(step, model, optimizer)
    peak = max(peak_warm, peak_timed)
    return {
        "peak_tensors_mb": peak_tensors / 2**20,
        "ms": 1e3 * statistics.median(times),
        "peak_mb": peak / 2**20,
        "base_mb": base / 2**20,
        "step_peak_mb": max(peak - base, 0) / 2**20,
        "state_mb": state / 2**20,
        # peak of the timed steps above the model + gradients + optimizer state
        "act_peak_mb": max(peak_timed - state, 0) / 2**20 if has_state_peak else float("nan"),
        "memory": "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS",
    }


def run_child(spec: Dict) -> Dict:
    cmd = [sys.executable, "-m", "vit_adapter.tools.benchmark", "--_child", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("CHILD_RESULT "):
            return json.loads(line[len("CHILD_RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise RuntimeError(f"benchmark subprocess {spec} failed (exit {proc.returncode}): " + " | ".join(tail))


def bench_detector(args, device, clock) -> List[Dict]:
    sizes = ("T",) if args.quick else tuple(args.detector_sizes)
    side = 64 if args.quick else args.detector_side
    repeats = 1 if args.quick else max(2, min(args.repeats, 3))
    results = []
    for size in sizes:
        for mode, with_cp in (("inference", False), ("train", False), ("train", True)):
            spec = dict(size=size, mode=mode, with_cp=with_cp, side=side, device=str(device), quick=args.quick,
                        repeats=repeats, clock=clock.kind, threads=args.threads)
            r = run_child(spec)
            results.append(dict(spec, **r))
    rows, ratios = [], {}
    for r in results:
        rows.append([f"ViT-Adapter-{r['size']}", r["mode"] + (" +cp" if r["with_cp"] else ""), f"{r['ms']:.0f}",
                     f"{r['peak_tensors_mb']:.0f}", f"{r['peak_mb']:.0f}", f"{r['step_peak_mb']:.0f}",
                     f"{r['act_peak_mb']:.0f}"])
    for size in sizes:
        by = {(r["mode"], r["with_cp"]): r for r in results if r["size"] == size}
        no_cp, cp = by[("train", False)], by[("train", True)]
        ratios[size] = dict(
            peak_tensors=cp["peak_tensors_mb"] / no_cp["peak_tensors_mb"],
            peak=cp["peak_mb"] / no_cp["peak_mb"],
            step_peak=cp["step_peak_mb"] / no_cp["step_peak_mb"] if no_cp["step_peak_mb"] > 0 else float("nan"),
            act_peak=cp["act_peak_mb"] / no_cp["act_peak_mb"] if no_cp["act_peak_mb"] > 0 else float("nan"),
            time=cp["ms"] / no_cp["ms"],
        )
    mem = results[0]["memory"]
    note = "\n".join(
        f"ViT-Adapter-{s}: checkpointing / none: peak tensor memory {v['peak_tensors']:.2f}x, "
        f"{mem} {v['peak']:.2f}x, training memory (peak above "
        f"the built model) {v['step_peak']:.2f}x, step memory (peak above model + grads + AdamW state) "
        f"{v['act_peak']:.2f}x, step time {v['time']:.2f}x" for s, v in ratios.items())
    print_table(f"3. Mask R-CNN {side}x{side}, batch 1 (one subprocess per row; memory: {mem})"
                + (" (tiny widths: --quick)" if args.quick else ""),
                ["model", "mode", "ms", "peak tensors MB", "peak MB", "above model MB", "above state MB"], rows,
                note + "\npeak tensors: live tensor bytes (CUDA: max_memory_allocated; CPU: profiler-counted, "
                "the same quantity); peak MB: " + mem + " (CPU: includes interpreter, libraries, allocator cache)"
                "\ntarget: checkpointing cuts peak training memory to <= 0.6x")
    for r in results:
        r["checkpointing_ratios"] = ratios[r["size"]]
    return results


# --------------------------------------------------------------------------- 8. mask2former memory


def mask2former_cfg(quick: bool, checkpoint_pixel_decoder: bool):
    """The 896 BEiT-Adapter-L Mask2Former row (plain BN: one process), or tiny widths for --quick."""
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(MASK2FORMER_CONFIG)
    cfg.model.backbone.norm = "BN"
    head = cfg.model.sem_seg_head
    if quick:
        cfg.model.backbone.update(img_size=64, embed_dim=48, depth=4, num_heads=3, deform_num_heads=6,
                                  interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], conv_inplane=16)
        head.pixel_decoder.update(in_channels=[48] * 4, conv_dim=32, mask_dim=32, num_heads=4, ffn_dim=64,
                                  num_groups=8, num_layers=2)
        head.predictor.update(in_channels=32, hidden_dim=32, mask_dim=32, num_heads=4, ffn_dim=64, num_layers=3,
                              num_queries=16)
        head.criterion.num_points = head.criterion.matcher.num_points = 256
        cfg.model.crop_size = (64, 64)
    head.pixel_decoder.checkpoint_layers = checkpoint_pixel_decoder
    return cfg


def mask2former_child(spec: Dict) -> Dict:
    """One training step's peak memory of the Mask2Former row in a fresh process, and
    the activations each part keeps (allocation growth across its forward)."""
    from detectron2.config import instantiate
    from detectron2.utils.events import EventStorage

    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    cfg = mask2former_cfg(spec["quick"], spec["checkpoint_pixel_decoder"])
    side = int(cfg.model.crop_size[0])
    num_classes = int(cfg.model.sem_seg_head.num_classes)
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).train()
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, side, side, generator=g) * 255).to(device)
    label = torch.zeros(side, side, dtype=torch.long)  # a few classes in blocks, an ignored band
    for i, c in enumerate((3, 17, 42, 99)):
        label[i * side // 4:(i + 1) * side // 4] = c % num_classes
    label[:, : side // 16] = 255
    batch = [{"image": image, "sem_seg": label.to(device), "height": side, "width": side}]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cuda = device.type == "cuda"

    def allocated():
        if cuda:
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated(device)
        return memory.current_rss_bytes()

    parts = {"backbone": model.backbone, "pixel decoder": model.sem_seg_head.pixel_decoder,
             "decoder": model.sem_seg_head.predictor, "losses": model.sem_seg_head.criterion}
    kept, handles = {}, []

    def step():
        with EventStorage():
            losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    step()  # warm-up: optimizer state allocated
    if cuda:
        torch.cuda.synchronize()
        state = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        memory.release_free_heap()
        state = memory.current_rss_bytes()
        memory.reset_peak_rss()
    for name, module in parts.items():  # the breakdown, on a step after the warm-up
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: kept.__setitem__(name, -allocated())))
        handles.append(module.register_forward_hook(lambda m, a, o, name=name: kept.__setitem__(name, kept[name] + allocated())))
    step()
    for h in handles:
        h.remove()
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
        peak_tensors = peak
        rss = memory.peak_rss_bytes()
    else:
        peak = memory.hwm_rss_bytes()
        rss = peak
        peak_tensors = memory.peak_tensor_bytes_cpu(step, model, optimizer)
    mb = 2**-20
    return {
        "side": side, "num_params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "peak_tensors_mb": peak_tensors * mb, "peak_rss_mb": rss * mb, "state_mb": state * mb,
        "act_peak_mb": max(peak - state, 0) * mb,
        "kept_mb": {k: v * mb for k, v in kept.items()},
        "memory": "cuda max_memory_allocated" if cuda else "CPU: profiler tensor peak / peak RSS",
    }


def bench_mask2former(args, device, clock) -> List[Dict]:
    results = []
    for ckpt_pd in (False, True):
        spec = dict(task="mask2former", checkpoint_pixel_decoder=ckpt_pd, device=str(device), quick=args.quick,
                    threads=args.threads)
        results.append(dict(spec, **run_child(spec)))
    rows = []
    for r in results:
        k = r["kept_mb"]
        rows.append(["with_cp + pixel decoder cp" if r["checkpoint_pixel_decoder"] else "with_cp (release)",
                     f"{r['peak_tensors_mb']:.0f}", f"{r['peak_rss_mb']:.0f}", f"{r['state_mb']:.0f}",
                     f"{k['backbone']:.0f}", f"{k['pixel decoder']:.0f}", f"{k['decoder']:.0f}", f"{k['losses']:.0f}"])
    side = results[0]["side"]
    print_table(f"8. BEiT-Adapter-L + Mask2Former, one training step at {side}x{side}, batch 1 "
                f"({results[0]['num_params_m']:.1f}M params; memory: {results[0]['memory']})"
                + (" (tiny widths: --quick)" if args.quick else ""),
                ["setting", "peak tensors MB", "peak RSS MB", "weights+grads+AdamW MB", "kept: backbone MB",
                 "pixel decoder MB", "decoder MB", "losses MB"], rows,
                "kept: growth of allocated memory across each part's forward (what it keeps for backward; CPU: RSS)"
                "\ngoal: a recipe that fits 24 GB per image (peak tensors)")
    return results


# --------------------------------------------------------------------------- 6. beit memory


def bench_beit_memory(args, device, clock) -> List[Dict]:
    """6. Peak training memory of BEiT-Adapter-L Mask R-CNN, without / with checkpointing."""
    side = 64 if args.quick else args.beit_side
    results = []
    for with_cp in (False, True):
        spec = dict(model="beit", size="L", mode="train", with_cp=with_cp, side=side, device=str(device),
                    quick=args.quick, repeats=1, clock=clock.kind, threads=args.threads)
        results.append(dict(spec, **run_child(spec)))
    no_cp, cp = results
    ratio = cp["peak_tensors_mb"] / no_cp["peak_tensors_mb"]
    for r in results:
        r["checkpointing_ratio"] = ratio
    rows = [["BEiT-Adapter-L", "train" + (" +cp" if r["with_cp"] else ""), f"{r['peak_tensors_mb']:.0f}",
             f"{r['peak_mb']:.0f}", f"{r['step_peak_mb']:.0f}", f"{r['act_peak_mb']:.0f}"] for r in results]
    print_table(f"6. Mask R-CNN BEiT-Adapter-L {side}x{side}, batch 1, one training step (memory: "
                f"{results[0]['memory']})" + (" (tiny widths: --quick)" if args.quick else ""),
                ["model", "mode", "peak tensors MB", "peak MB", "above model MB", "above state MB"], rows,
                f"checkpointing / none: peak tensor memory {ratio:.2f}x")
    return results


# --------------------------------------------------------------------------- 4. flops


def bench_flops(args, device) -> List[Dict]:
    from detectron2.config import instantiate

    from vit_adapter.analysis import count_flops

    sizes = ("T",) if args.quick else ("T", "S", "B", "L")
    side = 64 if args.quick else 512
    results = []
    for size in sizes:
        cfg = adapter_cfg(size)
        if args.quick:
            cfg = shrink_for_quick(cfg, True)
        torch.manual_seed(0)
        detector = instantiate(cfg.model)
        backbone = detector.backbone  # ViT-Adapter + FPN
        flops = count_flops(backbone, (torch.randn(1, 3, side, side),))
        bm = flops["by_module"]
        vit = bm.get("bottom_up.blocks", 0) + bm.get("bottom_up.patch_embed", 0)
        msda = flops["by_operator"].get("PythonOp._BilinearGatherSum", 0)
        results.append(dict(
            size=size, side=side,
            detector_params_m=sum(p.numel() for p in detector.parameters()) / 1e6,
            backbone_params_m=sum(p.numel() for p in backbone.bottom_up.parameters()) / 1e6,
            backbone_fpn_gmacs=flops["total"] / 1e9, vit_gmacs=vit / 1e9,
            adapter_gmacs=(bm.get("bottom_up", 0) - vit) / 1e9, fpn_gmacs=(flops["total"] - bm.get("bottom_up", 0)) / 1e9,
            deform_attn_gmacs=msda / 1e9, uncounted_ops=sorted(flops["unsupported"]),
        ))
        del detector, backbone
    rows = [[f"ViT-Adapter-{r['size']}", f"{r['detector_params_m']:.1f}", f"{r['backbone_params_m']:.1f}",
             f"{r['vit_gmacs']:.1f}", f"{r['adapter_gmacs']:.1f}", f"{r['deform_attn_gmacs']:.2f}",
             f"{r['fpn_gmacs']:.1f}", f"{r['backbone_fpn_gmacs']:.1f}",
             f"{(r['vit_gmacs'] + r['adapter_gmacs']) / r['vit_gmacs']:.2f}"] for r in results]
    print_table(
        f"4. parameters (M) and fvcore GMACs (1 multiply-add = 1; x2 for 'FLOPs') at {side}x{side}",
        ["model", "Mask R-CNN params", "backbone params", "ViT", "adapter", "(deform op)", "FPN",
         "backbone+FPN", "(ViT+adapter)/ViT"], rows,
        "counted: fvcore defaults + scaled_dot_product_attention + deformable op (vit_adapter/analysis.py); "
        "not counted: element-wise ops")
    return results


# --------------------------------------------------------------------------- main


def environment(args, device, clock) -> Dict:
    env = dict(torch=torch.__version__, python=platform.python_version(), device=str(device),
               threads=torch.get_num_threads(), clock=clock.kind, quick=args.quick, repeats=args.repeats)
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["cores"] = os.cpu_count()
        try:
            env["load_avg"] = [round(v, 2) for v in os.getloadavg()]
        except OSError:
            pass
    return env


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes and widths, 1 repeat (CI smoke run)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS + EXTRA_SECTIONS, default=list(SECTIONS))
    p.add_argument("--repeats", type=int, default=None, help="timed pairs per ratio (default 5; quick 1)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--clock", choices=("process", "wall"), default="wall",
                   help="CPU timing clock; 'process' (CPU time) with --threads 1 on a shared machine. "
                        "CUDA always uses synchronised wall time")
    p.add_argument("--impl", default="auto", help="deformable attention implementation for 'ours'")
    p.add_argument("--detector-sizes", nargs="+", choices=("T", "S", "B", "L"), default=["T", "S"],
                   help="Mask R-CNN sizes of section 3")
    p.add_argument("--detector-side", type=int, default=512, help="image side of section 3 (multiple of 32)")
    p.add_argument("--beit-side", type=int, default=1024, help="image side of the beit_memory section")
    p.add_argument("--json", default=None, help="also write all results to this JSON file")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.beit_side < 32 or args.beit_side % 32:
        p.error(f"--beit-side must be a positive multiple of 32, got {args.beit_side}")
    if args.detector_side < 32 or args.detector_side % 32:
        p.error(f"--detector-side must be a positive multiple of 32, got {args.detector_side}")
    return args


def main(argv=None) -> Dict:
    args = parse_args(argv)
    if args._child is not None:
        spec = json.loads(args._child)
        child = mask2former_child if spec.get("task") == "mask2former" else detector_child
        print("CHILD_RESULT " + json.dumps(child(spec)), flush=True)
        return {}
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmark: --device cuda but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = Clock(args.clock, device)
    env = environment(args, device, clock)
    print("ViT-Adapter benchmark: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    results = {"environment": env}
    t0 = time.perf_counter()
    if "msda" in args.sections:
        results["msda"] = bench_msda(args, device, clock)
    if "backbone" in args.sections:
        results["backbone"] = bench_backbone(args, device, clock)
    if "detector" in args.sections:
        results["detector"] = bench_detector(args, device, clock)
    if "flops" in args.sections:
        results["flops"] = bench_flops(args, device)
    if "mask2former" in args.sections:
        results["mask2former"] = bench_mask2former(args, device, clock)
    if "beit_memory" in args.sections:
        results["beit_memory"] = bench_beit_memory(args, device, clock)
    if "seg" in args.sections:  # 7. ViT-Adapter-S UperNet (vit_adapter/tools/benchmark_seg.py)
        from vit_adapter.tools.benchmark_seg import bench_seg

        results["seg"] = bench_seg(args, device, clock)
    if "deploy" in args.sections:  # 5. onnxruntime vs PyTorch eager (vit_adapter/tools/benchmark_deploy.py)
        from vit_adapter.tools.benchmark_deploy import bench_deploy

        results["deploy"] = bench_deploy(args, device, clock)
    results["environment"]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\n(benchmark took {results['environment']['seconds']} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
