"""ONNX export of a Mask2Former semantic segmentor (tiny, random weights) through
the segmentor export (vit_adapter.deploy.export.export_segmentor): the graph
follows the input size, OnnxPredictor's label map equals PyTorch's."""
import os

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from conftest import REPO_ROOT

pytest.importorskip("onnxruntime")
CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "tiny_mask2former_vit_adapter.py")


def test_mask2former_exports_and_predicts_the_label_map(tmp_path):
    from vit_adapter.deploy import OnnxPredictor
    from vit_adapter.deploy.export import SegmentorGraph, export_segmentor, exportable, pytorch_label_map

    cfg = LazyConfig.load(CONFIG)
    model = instantiate(cfg.model).eval()
    path = export_segmentor(cfg, model, str(tmp_path / "m2f.onnx"), torch.randn(1, 3, 96, 160))
    predictor = OnnxPredictor(path)
    # the graph follows other input sizes (the pixel decoder's level table is traced): scores equal PyTorch's
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for h, w in ((64, 64), (128, 96)):
        x = torch.randn(1, 3, h, w)
        with torch.no_grad(), exportable(model):
            ref = SegmentorGraph(model)(x).numpy()
        got = session.run(None, {name: x.numpy()})[0]
        assert got.shape == ref.shape == (1, 3, h, w)
        assert np.abs(got - ref).max() < 1e-4
    # end to end on an image of a size no multiple of 32: PyTorch's label map
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)
    ref = pytorch_label_map(model, cfg, image)["sem_seg"]
    got = predictor(image)["sem_seg"]
    assert got.shape == (70, 90)
    assert (got == ref).mean() > 0.999
