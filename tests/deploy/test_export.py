"""ONNX export (tools/export_model.py) and the numpy + onnxruntime OnnxPredictor.

One tiny Mask R-CNN (tests/configs/demo_tiny.py) with random weights is exported
once through the command-line tool; its heads are re-drawn with larger weights so
that scores spread out and detections differ by class (not a near-uniform
score soup). Every check compares against the PyTorch model at input shapes
other than the traced one.
"""
import importlib
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="needs the deploy extra (onnx)")
ort = pytest.importorskip("onnxruntime", reason="needs the deploy extra (onnxruntime)")

import torch  # noqa: E402

from vit_adapter.deploy import DeployError, OnnxPredictor  # noqa: E402
from vit_adapter.deploy.agreement import agreement  # noqa: E402
from conftest import REPO_ROOT

TINY_CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "demo_tiny.py")
PREDICTOR_FILE = os.path.join(REPO_ROOT, "projects", "ViTAdapter", "vit_adapter", "deploy", "predictor.py")
OVERRIDES = ["model.roi_heads.box_predictor.test_score_thresh=0.0"]


def _image(h, w, seed=0):
    """A textured RGB test image: smooth blobs plus noise."""
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([np.sin(xx / (5 + 3 * c) + c) * np.cos(yy / (7 + 2 * c)) for c in range(3)], -1)
    return np.clip(127 + 90 * img + rs.randn(h, w, 3) * 20, 0, 255).astype(np.uint8)


def _nontrivial_heads(model):
    """Spread the RPN / box / mask predictions: larger random head weights."""
    g = torch.Generator().manual_seed(1)
    rh = model.roi_heads
    with torch.no_grad():
        for layer, std in ((rh.box_predictor.cls_score, 0.5), (rh.box_predictor.bbox_pred, 0.05),
                           (rh.mask_head.predictor, 0.5), (model.proposal_generator.rpn_head.objectness_logits, 0.5)):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * std)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(cfg, PyTorch model, checkpoint path, model.onnx path, export report)."""
    from detectron2.config import LazyConfig, instantiate

    from vit_adapter.tools import export_model

    root = tmp_path_factory.mktemp("deploy")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(TINY_CONFIG), OVERRIDES)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    _nontrivial_heads(model)
    ckpt = str(root / "model.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    sample = root / "sample.png"
    from PIL import Image

    Image.fromarray(_image(90, 130, seed=5)).save(sample)
    path, report = export_model.main([
        "--config-file", TINY_CONFIG, "--format", "onnx", "--output", str(root / "export"),
        "--sample-image", str(sample), *OVERRIDES, f"train.init_checkpoint={ckpt}",
    ])
    return cfg, model, ckpt, path, report


@pytest.fixture(scope="module")
def predictor(exported):
    return OnnxPredictor(exported[3])


def test_export_tool_writes_model_and_checks_it(exported):
    _, _, _, path, reports = exported
    assert os.path.basename(path) == "model.onnx" and os.path.isfile(path)
    assert len(reports) == 2  # the traced shape and another one
    for report in reports.values():
        assert report["checked"] == 50 and report["fraction"] >= 0.95, reports


def test_backbone_features_match_pytorch(exported, tmp_path):
    """The ViT-Adapter backbone alone, traced at 256x320, at two other sizes."""
    from vit_adapter.deploy.export import export_module

    model = exported[1]

    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = model.backbone.bottom_up

        def forward(self, x):
            return tuple(self.backbone(x).values())

    net = Features().eval()
    path = export_module(net, (torch.randn(1, 3, 256, 320),), str(tmp_path / "backbone.onnx"), ["image"],
                         ["res2", "res3", "res4", "res5"], {"image": {2: "h", 3: "w"}})
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for h, w in ((192, 288), (320, 224)):
        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            expected = net(x)  # no grad: the fast branches (reordered projections, folded norms)
        got = session.run(None, {"image": x.numpy()})
        for e, g in zip(expected, got):
            assert g.shape == tuple(e.shape)
            np.testing.assert_allclose(g, e.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(120, 200), (160, 160)])
def test_detections_agree_with_pytorch(exported, predictor, shape):
    from vit_adapter.deploy.export import pytorch_detections

    cfg, model = exported[:2]
    image = _image(*shape, seed=shape[1])
    ref, got = pytorch_detections(model, cfg, image), predictor(image)
    # non-trivial: at least 50 detections, several classes, spread scores, real masks
    assert len(ref["scores"]) >= 50 and len(np.unique(ref["classes"][:50])) > 1
    assert ref["scores"].max() - np.sort(ref["scores"])[-50] > 0.1
    assert ref["masks"][:50].any(axis=(1, 2)).mean() > 0.5
    assert got["boxes"].dtype == np.float32 and got["masks"].shape[1:] == shape and got["masks"].dtype == bool
    result = agreement(ref, got, top_k=50, min_box_iou=0.99, score_tol=1e-3, min_mask_iou=0.95)
    assert result["checked"] == 50 and result["fraction"] >= 0.95, result


def test_predictor_runs_without_torch_or_detectron2(exported, predictor):
    image = _image(70, 110, seed=3)
    expected = predictor(image)
    hidden = {name: None for name in list(sys.modules) if name.split(".")[0] in ("torch", "torchvision", "detectron2")}
    with mock.patch.dict(sys.modules, hidden):
        with pytest.raises(ImportError):
            importlib.import_module("torch")  # really hidden
        got = OnnxPredictor(exported[3])(image)
    for key in ("boxes", "scores", "classes", "masks"):
        np.testing.assert_array_equal(got[key], expected[key])


def test_predictor_file_ships_alone(exported, tmp_path):
    """predictor.py loaded on its own, in a process where torch / detectron2 cannot be imported."""
    script = f"""
import importlib.abc, importlib.util, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "detectron2", "vit_adapter"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location("predictor", {PREDICTOR_FILE!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
import numpy as np
out = mod.OnnxPredictor({exported[3]!r})(np.full((64, 96, 3), 100, np.uint8))
print("detections", len(out["scores"]), out["masks"].shape[1:])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "(64, 96)" in proc.stdout


def test_preprocessing_matches_detectron2(exported, predictor):
    from detectron2.data import transforms as T

    cfg, model = exported[:2]
    for h, w in ((90, 130), (130, 90), (192, 192), (50, 400), (400, 40)):
        assert predictor.preprocess(np.zeros((h, w, 3), np.uint8))[1] == T.ResizeShortestEdge.get_output_shape(
            h, w, 192, cfg.dataloader.test.mapper.augmentations[0].max_size)
    image = _image(90, 130)
    aug_input = T.AugInput(image)
    T.AugmentationList([T.ResizeShortestEdge(192, cfg.dataloader.test.mapper.augmentations[0].max_size)])(aug_input)
    tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
    expected = model.preprocess_image([{"image": tensor}]).tensor
    got, size = predictor.preprocess(image)
    assert size == tuple(tensor.shape[1:])
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6, atol=1e-5)


def test_paste_masks_matches_detectron2():
    from detectron2.layers.mask_ops import paste_masks_in_image
    from detectron2.structures import Boxes

    from vit_adapter.deploy.predictor import paste_masks

    g = torch.Generator().manual_seed(0)
    probs = torch.rand(20, 28, 28, generator=g)
    xy = torch.rand(20, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + 2 + torch.rand(20, 2, generator=g) * 60], 1)
    boxes = torch.min(boxes, torch.tensor([90.0, 70.0, 90.0, 70.0]))  # clipped, as detector_postprocess does
    expected = paste_masks_in_image(probs, Boxes(boxes), (70, 90), threshold=0.5).numpy()
    got = paste_masks(probs.numpy(), boxes.numpy(), 70, 90)
    assert got.shape == expected.shape and (got != expected).mean() < 1e-3


def test_predict_tool_onnx_draws_the_same_pictures(exported, tmp_path):
    from PIL import Image

    from vit_adapter.tools import predict

    _, _, ckpt, path, _ = exported
    Image.fromarray(_image(100, 150, seed=9)).save(tmp_path / "img.png")
    common = ["--config-file", TINY_CONFIG, "--input", str(tmp_path / "img.png"), "--score-threshold", "0.3"]
    pictures = []
    for how in (["--weights", ckpt], ["--onnx", path]):
        np.random.seed(0)  # the Visualizer's instance colours
        (written,) = predict.main(common + how + ["--output", str(tmp_path / how[0][2:])] + OVERRIDES)
        pictures.append(np.asarray(Image.open(written)).astype(int))
    assert pictures[0].shape == (100, 150, 3)
    assert (np.abs(pictures[0] - pictures[1]).max(-1) > 8).mean() < 0.01
    with pytest.raises(predict.PredictError, match="exactly one of --weights"):
        predict.main(common + ["--weights", ckpt, "--onnx", path])
    with pytest.raises(predict.PredictError, match="exactly one of --weights"):
        predict.main(common)
    with pytest.raises(predict.PredictError, match=r"ONNX model not found: .*nope\.onnx"):
        predict.main(common + ["--onnx", str(tmp_path / "nope.onnx")])
    with mock.patch.dict(sys.modules, {"onnxruntime": None}):
        with pytest.raises(predict.PredictError, match=r"onnxruntime is not installed; .*\.\[deploy\]"):
            predict.main(common + ["--onnx", path])


def test_bad_inputs(exported, predictor, tmp_path):
    from vit_adapter.deploy.export import export_detector
    from vit_adapter.tools import export_model

    cfg, model, ckpt, path, _ = exported
    base = ["--config-file", TINY_CONFIG, "--output", str(tmp_path / "o")]
    weights = [f"train.init_checkpoint={ckpt}"]
    with pytest.raises(DeployError, match=r"unsupported --format 'caffe2' \(supported: onnx, torchscript\)"):
        export_model.main(base + ["--format", "caffe2"] + weights)
    with pytest.raises(DeployError, match="multiples of 32, got 100x128"):
        export_model.main(base + ["--trace-size", "100,128"] + weights)
    with pytest.raises(DeployError, match="multiples of 32, got 96x90"):
        export_detector(cfg, model, str(tmp_path / "m.onnx"), torch.zeros(1, 3, 96, 90))
    with pytest.raises(DeployError, match="no weights to export"):
        export_model.main(["--config-file", TINY_CONFIG, "--output", str(tmp_path / "o")])
    with pytest.raises(DeployError, match="config file not found"):
        export_model.main(["--config-file", str(tmp_path / "nope.py"), "--output", str(tmp_path / "o")])
    with pytest.raises(DeployError, match=r"H and W multiples of 32, got shape \(1, 3, 100, 96\)"):
        predictor.run_network(np.zeros((1, 3, 100, 96), np.float32), (100, 96))
    with pytest.raises(DeployError, match=r"uint8 RGB image, got float32 array of shape \(10, 10, 3\)"):
        predictor(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(DeployError, match=r"uint8 RGB image, got uint8 array of shape \(10, 10\)"):
        predictor(np.zeros((10, 10), np.uint8))
    for module in ("onnx", "onnxruntime"):
        with mock.patch.dict(sys.modules, {module: None}):
            with pytest.raises(ImportError, match=rf"^{module} is not installed; .*\.\[deploy\]"):
                export_model.main(base + weights)
    with mock.patch.dict(sys.modules, {"onnxruntime": None}):
        with pytest.raises(ImportError, match=r"onnxruntime is not installed; .*\.\[deploy\]"):
            OnnxPredictor(path)
    with pytest.raises(DeployError, match="ONNX model not found"):
        OnnxPredictor(str(tmp_path / "missing.onnx"))
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_bytes(b"PK\x03\x04 a checkpoint, not an ONNX graph")
    with pytest.raises(DeployError, match=r"model.onnx is not a loadable ONNX model \(.*\)$"):
        OnnxPredictor(str(not_onnx))


def test_export_tool_one_line_error():
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "export_model.py"), "--config-file", TINY_CONFIG,
         "--format", "caffe2", "--output", "unused"],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "export_model.py: error: unsupported --format 'caffe2' (supported: onnx, torchscript)")


def test_cascade_network_matches_pytorch(tmp_path):
    """Cascade Mask R-CNN (class-specific stages), backbone at tiny widths:
    the exported network's detections at two shapes other than the traced one."""
    from detectron2.config import LazyConfig, instantiate

    from vit_adapter.deploy.export import DetectorGraph, export_detector
    from vit_adapter.tools.bench_common import shrink_for_quick

    cfg = shrink_for_quick(LazyConfig.load(os.path.join(REPO_ROOT, "configs", "COCO",
                                                        "cascade_mask_rcnn_vit_adapter_s_3x_ms.py")), True)
    for predictor_cfg in cfg.model.roi_heads.box_predictors:
        predictor_cfg.test_score_thresh = 0.0
    cfg.model.proposal_generator.update(pre_nms_topk=(200, 200), post_nms_topk=(64, 64))  # light heads
    model = instantiate(cfg.model).eval()
    path = export_detector(cfg, model, str(tmp_path / "cascade.onnx"), torch.randn(1, 3, 128, 160))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    graph = DetectorGraph(model).eval()
    for h, w in ((96, 192), (160, 128)):
        image, size = torch.randn(1, 3, h, w), torch.tensor([h, w])
        with torch.no_grad():
            expected = [t.numpy() for t in graph(image, size)]
        got = session.run(None, {"image": image.numpy(), "image_size": size.numpy()})
        ref = dict(zip(("boxes", "scores", "classes"), expected))
        result = agreement(ref, dict(zip(("boxes", "scores", "classes"), got)))
        assert len(expected[1]) == 100 and result["fraction"] >= 0.95, result
        if len(got[3]) == len(expected[3]):
            np.testing.assert_allclose(got[3], expected[3], atol=1e-4)


def test_trace_size_takes_the_general_branches():
    """Traced at a square input of the pretraining grid, the graph would skip the
    position-embedding resize; traced where windows need no padding, it would
    skip the padding (Python branches are frozen by tracing)."""
    from vit_adapter.deploy.export import trace_size

    class Stub(torch.nn.Module):
        def __init__(self, grid, window):
            super().__init__()
            self.pretrain_grid = grid
            self.attn = torch.nn.Module()
            self.attn.qkv, self.attn.window_size = torch.nn.Identity(), window

    for grid, window in (((14, 14), 14), ((20, 26), 14), ((20, 26), 0), ((32, 32), 2)):
        h, w = trace_size(Stub(grid, window))
        assert h % 32 == 0 and w % 32 == 0 and h != w and (h // 16, w // 16) != grid
        if window > 2:
            assert (h // 16) % window or (w // 16) % window


def test_exportable_changes_nothing_and_refuses_untraceable_impls():
    # Export takes the plain path without touching the model: "auto" runs the
    # reference (GridSample) inside an ONNX export; a forced other operator
    # formulation is refused with one line.
    from vit_adapter.deploy.export import exportable
    from vit_adapter.layers.ms_deform_attn import MSDeformAttn

    net = torch.nn.Sequential(MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=1),
                              MSDeformAttn(d_model=8, n_levels=1, n_heads=2, n_points=1, impl="reference"))
    with exportable(net) as same:
        assert same is net and [m.impl for m in net] == ["auto", "reference"]
    net[0].impl = "gather"
    with pytest.raises(DeployError, match="0 has impl='gather'"):
        with exportable(net):
            pass
