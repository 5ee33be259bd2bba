"""ONNX export of a Mask2Former semantic segmentor (tiny, random weights):
shape-generic graph, OnnxPredictor's label map equals PyTorch's."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import LazyConfig, instantiate

from conftest import REPO_ROOT

pytest.importorskip("onnxruntime")
CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "tiny_mask2former_vit_adapter.py")


def test_bilinear_matrix_is_interpolate():
    from vit_adapter.deploy.predictor import bilinear_matrix

    x = torch.randn(1, 1, 5, 7)
    want = F.interpolate(x, size=(11, 3), mode="bilinear", align_corners=False)[0, 0].numpy()
    got = bilinear_matrix(11, 5) @ x[0, 0].numpy() @ bilinear_matrix(3, 7).T
    assert np.allclose(got, want, atol=1e-5)


def test_mask2former_exports_and_predicts_the_label_map(tmp_path):
    from vit_adapter.deploy import OnnxPredictor
    from vit_adapter.deploy.export import SemSegGraph, export_any, exportable, pytorch_detections

    cfg = LazyConfig.load(CONFIG)
    model = instantiate(cfg.model).eval()
    path = export_any(cfg, model, str(tmp_path / "m2f.onnx"), torch.randn(1, 3, 96, 160))
    predictor = OnnxPredictor(path)
    assert predictor.meta["task"] == "sem_seg"
    # the graph follows other input sizes (scores equal PyTorch's)
    for h, w in ((64, 64), (128, 96)):
        x = torch.randn(1, 3, h, w)
        with torch.no_grad(), exportable(model):
            ref = SemSegGraph(model)(x).numpy()
        got = predictor.run_network(x.numpy(), (h, w))["sem_seg"]
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4
    # end to end on an image of a size no multiple of 32: same label map as detectron2's postprocess
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    ref = pytorch_detections(model, cfg, image)["sem_seg"]
    got = predictor(image)["sem_seg"]
    assert got.shape == (70, 90) and got.dtype == np.int64
    assert (got == ref).mean() > 0.999
