"""The ``deploy`` section of tools/benchmark.py: onnxruntime vs PyTorch eager.

* detector: the exported network (:class:`vit_adapter.deploy.export.DetectorGraph`:
  backbone, RPN, RoI heads; no resize / pasting) in onnxruntime vs the same
  network in PyTorch eager (``torch.inference_mode``, the default CPU
  inference path), random weights, batch 1: the demo model at its test size
  (192x192) and Mask R-CNN ViT-Adapter-S at 800x1344. onnxruntime gets as
  many intra-op threads as torch.
* with ``openvino`` installed (optional), the same graph in OpenVINO (CPU,
  float32) as a third column, with the fraction of onnxruntime's top-50
  detections it matches;
* deformable attention formulations in onnxruntime: the op alone, exported at
  a fixed shape with ``impl="reference"`` (grid_sample) and ``impl="gather"``
  (corner indexing), at ViT-Adapter-S's injector / extractor shapes for a
  1024x1024 image. (Only "reference" traces to a shape-generic graph; see
  :mod:`vit_adapter.deploy.export`.)

Ratios are onnxruntime time / PyTorch time (below 1: onnxruntime is faster),
medians over ``--repeats`` alternated pairs (:func:`vit_adapter.tools.bench_common.time_pair`).
"""
import os
import tempfile
from typing import Dict, List

import torch
from torch import nn

__all__ = ["bench_deploy"]


def _session(path: str):
    from vit_adapter.deploy.predictor import require

    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _openvino_runner(path: str):
    """A callable running the ONNX model with OpenVINO (CPU, float32 precision:
    its default reduced precision on some CPUs changes detections), or None
    when openvino is not installed (an optional third column)."""
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()})
    return lambda feeds: [compiled(feeds)[o] for o in compiled.outputs]


def _detector_models(quick: bool):
    """(name, cfg, (H, W)) of the measured detectors."""
    from detectron2.config import LazyConfig

    from vit_adapter import REPO_ROOT
    from vit_adapter.tools.bench_common import adapter_cfg, shrink_for_quick

    demo = LazyConfig.load(os.path.join(REPO_ROOT, "configs", "demo", "mask_rcnn_vit_adapter_demo.py"))
    small = adapter_cfg("S")
    if quick:
        demo, small = shrink_for_quick(demo, True), shrink_for_quick(small, True)
        return [("demo (tiny widths)", demo, (64, 96)), ("ViT-Adapter-S (tiny widths)", small, (96, 160))]
    return [("demo", demo, (192, 192)), ("ViT-Adapter-S", small, (800, 1344))]


def _bench_detectors(args, clock, tmp: str) -> List[Dict]:
    from detectron2.config import instantiate

    from vit_adapter.deploy.agreement import agreement
    from vit_adapter.deploy.export import DetectorGraph, export_detector
    from vit_adapter.tools.bench_common import time_pair

    out = []
    for name, cfg, (h, w) in _detector_models(args.quick):
        torch.manual_seed(0)
        model = instantiate(cfg.model).eval()
        image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        size = torch.tensor([h, w])
        path = export_detector(cfg, model, os.path.join(tmp, "detector.onnx"))  # traced at trace_size
        session = _session(path)
        feeds = {"image": image.numpy(), "image_size": size.numpy()}
        graph = DetectorGraph(model).eval()

        def run_torch():
            with torch.inference_mode():
                graph(image, size)

        t = time_pair(lambda: session.run(None, feeds), run_torch, clock, args.repeats)
        row = dict(model=name, size=f"{h}x{w}", ort_ms=t["a_ms"], torch_ms=t["b_ms"], ratio=t["ratio"],
                   ratio_range=[t["ratio_min"], t["ratio_max"]])
        openvino = _openvino_runner(path)
        if openvino is not None:
            names = ("boxes", "scores", "classes")
            match = agreement(dict(zip(names, session.run(None, feeds))), dict(zip(names, openvino(feeds))))
            t = time_pair(lambda: openvino(feeds), run_torch, clock, args.repeats)
            row.update(openvino_ms=t["a_ms"], openvino_ratio=t["ratio"], openvino_matched=match["fraction"])
        out.append(row)
    return out


class _Op(nn.Module):
    def __init__(self, impl: str, shapes):
        super().__init__()
        self.impl, self.shapes = impl, shapes

    def forward(self, value, loc, weights):
        from vit_adapter.layers.ms_deform_attn import ms_deform_attn

        return ms_deform_attn(value, self.shapes, None, loc, weights, impl=self.impl)


def _bench_msda(args, clock, tmp: str) -> List[Dict]:
    from vit_adapter.deploy.predictor import require
    from vit_adapter.tools.bench_common import adapter_s_msda_inputs, time_pair

    require("onnx")
    side = 64 if args.quick else 1024
    out = []
    for layer in ("injector", "extractor"):
        value, shapes, loc, weights = adapter_s_msda_inputs(side, layer, "cpu", requires_grad=False)
        shapes = [tuple(int(v) for v in row) for row in shapes.tolist()]
        feeds = {"value": value.numpy(), "loc": loc.numpy(), "weights": weights.numpy()}
        sessions, results = {}, {}
        for impl in ("reference", "gather"):
            path = os.path.join(tmp, f"msda_{impl}.onnx")
            # Traced with autograd on: without it "gather" pads the value table in place
            # into a fresh buffer, which the tracer records without its data dependence.
            with torch.enable_grad():
                torch.onnx.export(_Op(impl, shapes).eval(), (value.requires_grad_(), loc, weights), path,
                                  dynamo=False, opset_version=17, input_names=list(feeds), output_names=["out"])
            value.requires_grad_(False)
            sessions[impl] = _session(path)
            results[impl] = sessions[impl].run(None, feeds)[0]
        err = float(abs(results["gather"] - results["reference"]).max())
        t = time_pair(lambda: sessions["gather"].run(None, feeds), lambda: sessions["reference"].run(None, feeds),
                      clock, args.repeats)
        out.append(dict(layer=layer, side=side, gather_ms=t["a_ms"], reference_ms=t["b_ms"], ratio=t["ratio"],
                        max_abs_diff=err))
    return out


def bench_deploy(args, device, clock) -> Dict:
    """Run both measurements (CPU only), print their tables, return the results."""
    from vit_adapter.tools.bench_common import print_table

    from vit_adapter.deploy.predictor import DEPLOY_EXTRA, require

    if device.type != "cpu":
        print("\n== deploy: skipped (onnxruntime runs on the CPU here; use --device cpu)")
        return {}
    try:
        require("onnx"), require("onnxruntime")
    except ImportError:
        print(f"\n== deploy: skipped (needs the deploy extra: {DEPLOY_EXTRA})")
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        detectors = _bench_detectors(args, clock, tmp)
        msda = _bench_msda(args, clock, tmp)
    def openvino_cols(r):
        if "openvino_ms" not in r:
            return ["-", "-", "-"]
        return [f"{r['openvino_ms']:.0f}", f"{r['openvino_ratio']:.2f}", f"{r['openvino_matched']:.2f}"]

    print_table("deploy: onnxruntime (and OpenVINO) / PyTorch eager, detector network (batch 1, random weights)",
                ["model", "input", "onnxruntime ms", "PyTorch ms", "ratio", "range",
                 "OpenVINO ms", "OpenVINO ratio", "OpenVINO/ORT top-50 matched"],
                [[r["model"], r["size"], f"{r['ort_ms']:.0f}", f"{r['torch_ms']:.0f}", f"{r['ratio']:.2f}",
                  f"[{r['ratio_range'][0]:.2f}, {r['ratio_range'][1]:.2f}]"] + openvino_cols(r) for r in detectors],
                "OpenVINO columns: only when `openvino` is installed (optional, not in the deploy extra)")
    print_table(f"deploy: deformable attention in onnxruntime, gather / reference (grid_sample), "
                f"ViT-Adapter-S shapes at {msda[0]['side']}x{msda[0]['side']}",
                ["layer", "gather ms", "reference ms", "ratio", "max |diff|"],
                [[r["layer"], f"{r['gather_ms']:.1f}", f"{r['reference_ms']:.1f}", f"{r['ratio']:.2f}",
                  f"{r['max_abs_diff']:.1e}"] for r in msda])
    return {"detector": detectors, "msda": msda}
