"""Section 7 of tools/benchmark.py (``--sections seg``): ViT-Adapter-S + UperNet.

- sliding-window (512 / 341) vs whole-image inference on a 512 x 683 image
  (the ADE20K test size: two windows);
- one training step at crop 512 (batch 2: forward, backward, AdamW), without
  and with activation checkpointing (``with_cp``): time and peak tensor memory
  (CUDA: ``max_memory_allocated``; CPU: profiler-counted live tensors);
- the exported ONNX network (vit_adapter.deploy) in onnxruntime vs PyTorch
  eager on one 512 x 512 window (needs the ``deploy`` extra; skipped without).

``--quick``: tiny widths and a 64 x 96 image / 64 crops (same code paths).
Ratios are medians of alternating pairs (``time_pair``).
"""
import os
import tempfile
from typing import Dict

import torch

__all__ = ["bench_seg", "upernet_cfg"]


def upernet_cfg(with_cp: bool = False, quick: bool = False):
    """configs/common/models/upernet_vit_adapter.py (ViT-Adapter-S); --quick: tiny widths, crop 64."""
    from detectron2.config import LazyConfig

    from vit_adapter import REPO_ROOT

    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs", "common", "models", "upernet_vit_adapter.py"))
    cfg.model.backbone.with_cp = with_cp
    cfg.model.backbone.drop_path_rate = 0.0
    if quick:
        cfg.model.backbone.update(embed_dim=48, num_heads=2, depth=4, deform_num_heads=2, conv_inplane=8,
                                  pretrain_size=64, interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]])
        cfg.model.sem_seg_head.update(channels=16, aux_channels=8)
        cfg.model.update(crop_size=64, stride=43)
    return cfg


def _train_step(cfg, device, side, clock, repeats):
    from detectron2.config import instantiate
    from detectron2.utils.events import EventStorage

    from vit_adapter.tools import memory

    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).train()
    g = torch.Generator().manual_seed(0)
    # 2 images (the release's per-GPU batch): BatchNorm of the PPM's 1x1 pooled map needs
    # more than one value per channel
    batch = [{"image": (torch.rand(3, side, side, generator=g) * 255).to(device),
              "sem_seg": torch.randint(0, 150, (side, side), generator=g).to(device)} for _ in range(2)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with EventStorage():
            losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    step()  # warm-up (optimizer state)
    times = []
    for _ in range(repeats):
        t0 = clock()
        step()
        times.append(clock() - t0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        step()
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = memory.peak_tensor_bytes_cpu(step, model, optimizer)
    times.sort()
    return {"ms": 1e3 * times[len(times) // 2], "peak_tensors_mb": peak / 2**20}


def _onnx_vs_eager(model, device, side, clock, repeats, time_pair):
    try:
        from vit_adapter.deploy.predictor import require

        ort = require("onnxruntime")
        require("onnx")
    except ImportError as e:
        return {"skipped": str(e)}
    from vit_adapter.deploy.export import export_module, SEG_INPUT_NAMES, SEG_OUTPUT_NAMES, SegmentorGraph

    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seg.onnx")
        dynamic = {SEG_INPUT_NAMES[0]: {2: "height", 3: "width"}, SEG_OUTPUT_NAMES[0]: {2: "height", 3: "width"}}
        export_module(SegmentorGraph(model.cpu()).eval(), (x,), path, SEG_INPUT_NAMES, SEG_OUTPUT_NAMES, dynamic)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        feed = {SEG_INPUT_NAMES[0]: x.numpy()}
        model = model.cpu().eval()

        def eager():
            with torch.inference_mode():
                model.network_scores(x)

        r = time_pair(lambda: session.run(None, feed), eager, clock, repeats)
        with torch.inference_mode():
            diff = float(abs(torch.from_numpy(session.run(None, feed)[0]) - model.network_scores(x)).max())
    return {"onnx_ms": r["a_ms"], "eager_ms": r["b_ms"], "ratio": r["ratio"], "max_abs_diff": diff, "side": side}


def bench_seg(args, device, clock) -> Dict:
    """Section 7 (see the module docstring); prints its tables, returns the numbers."""
    from detectron2.config import instantiate

    from vit_adapter.tools.benchmark import print_table, time_pair

    quick = args.quick
    h, w = (64, 96) if quick else (512, 683)
    crop = 64 if quick else 512
    repeats = args.repeats
    out: Dict = {}

    cfg = upernet_cfg(quick=quick)
    torch.manual_seed(0)
    model = instantiate(cfg.model).to(device).eval()
    batch = [{"image": (torch.rand(3, h, w, generator=torch.Generator().manual_seed(0)) * 255).to(device)}]

    def run(mode):
        def fn():
            model.test_mode = mode
            with torch.inference_mode():
                model(batch)
        return fn

    r = time_pair(run("slide"), run("whole"), clock, repeats)
    model.test_mode = "slide"
    out["inference"] = dict(r, image=[h, w], crop=list(model.crop_size), stride=list(model.stride))
    print_table(f"7a. ViT-Adapter-S UperNet inference {h}x{w} (slide {model.crop_size[0]} / {model.stride[0]} vs whole)"
                + (" (tiny widths: --quick)" if quick else ""),
                ["mode", "ms"], [["slide", f"{r['a_ms']:.0f}"], ["whole", f"{r['b_ms']:.0f}"]],
                f"slide / whole: {r['ratio']:.2f}x (min {r['ratio_min']:.2f}, max {r['ratio_max']:.2f})")

    steps = {cp: _train_step(upernet_cfg(with_cp=cp, quick=quick), device, crop, clock, max(1, min(repeats, 3)))
             for cp in (False, True)}
    ratios = {"time": steps[True]["ms"] / steps[False]["ms"],
              "peak_tensors": steps[True]["peak_tensors_mb"] / steps[False]["peak_tensors_mb"]}
    out["train_step"] = {"crop": crop, "no_cp": steps[False], "cp": steps[True], "cp_over_no_cp": ratios}
    print_table(f"7b. ViT-Adapter-S UperNet training step at crop {crop}, batch 2"
                + (" (tiny widths: --quick)" if quick else ""),
                ["with_cp", "ms", "peak tensors MB"],
                [[str(cp), f"{s['ms']:.0f}", f"{s['peak_tensors_mb']:.0f}"] for cp, s in steps.items()],
                f"with_cp / without: time {ratios['time']:.2f}x, peak tensor memory {ratios['peak_tensors']:.2f}x")

    d = _onnx_vs_eager(model, device, crop, clock, repeats, time_pair)
    out["deploy"] = d
    if "skipped" in d:
        print(f"\n== 7c. segmentor ONNX vs eager: skipped ({d['skipped']})")
    else:
        print_table(f"7c. ViT-Adapter-S UperNet network on {crop}x{crop}: onnxruntime vs PyTorch eager (CPU)"
                    + (" (tiny widths: --quick)" if quick else ""),
                    ["runtime", "ms"], [["onnxruntime", f"{d['onnx_ms']:.0f}"], ["eager", f"{d['eager_ms']:.0f}"]],
                    f"onnxruntime / eager: {d['ratio']:.2f}x; max |logit difference| {d['max_abs_diff']:.2e}")
    return out
