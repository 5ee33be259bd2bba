"""ONNX export of the segmentor's network; OnnxPredictor's numpy slide / resize == PyTorch."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import LazyConfig, instantiate
from detectron2.config import LazyCall as L
from detectron2.data import transforms as T

from conftest import REPO_ROOT
from vit_adapter.deploy.predictor import OnnxPredictor, resize_scores, slide_windows
from vit_adapter.modeling.semantic_segmentor import slide_windows as torch_slide_windows

pytest.importorskip("onnxruntime")
CONFIG = os.path.join(REPO_ROOT, "tests", "configs", "tiny_upernet_seg.py")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: tiny tensors on a shared CPU (threads only spin)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, _one_thread):
    """The tiny segmentation config (slide 32 / 16; test resize to short side 48) at random
    init, exported once."""
    from vit_adapter.deploy.export import export_segmentor

    torch.manual_seed(0)
    cfg = LazyConfig.load(CONFIG)
    cfg.dataloader.test.mapper.augmentations = [L(T.ResizeShortestEdge)(short_edge_length=48, max_size=96)]
    model = instantiate(cfg.model).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = export_segmentor(cfg, model, str(tmp_path_factory.mktemp("onnx") / "model.onnx"))
    return cfg, model, OnnxPredictor(path)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [(70, 100), (64, 64)])
def test_onnx_logits_and_label_map_match_pytorch(exported, size):
    from vit_adapter.deploy.export import pytorch_label_map

    cfg, model, predictor = exported
    image = _image(*size)
    aug = T.AugInput(image)
    T.AugmentationList([instantiate(a) for a in cfg.dataloader.test.mapper.augmentations])(aug)
    with torch.no_grad():
        ref = model([{"image": torch.as_tensor(aug.image.transpose(2, 0, 1).copy()), "height": size[0],
                      "width": size[1]}])[0]["sem_seg"].numpy()
    got = predictor.segment_scores(image)
    assert got.shape == ref.shape == (4,) + size
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    labels = predictor(image)["sem_seg"]
    assert labels.dtype == np.int64 and labels.shape == size
    assert (labels == pytorch_label_map(model, cfg, image)["sem_seg"]).mean() > 0.999


def test_numpy_helpers_match_torch():
    for h, w in ((96, 160), (48, 48), (100, 36)):
        assert slide_windows(h, w, (32, 32), (16, 16)) == torch_slide_windows(h, w, (32, 32), (16, 16))
    scores = np.random.default_rng(0).normal(size=(3, 13, 21)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(scores)[None], size=(40, 17), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(resize_scores(scores, 40, 17), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_export_model_cli_reports_label_agreement(exported, tmp_path):
    """tools/export_model.py on a segmentation config (whole-image test, to keep it short)."""
    from PIL import Image

    from vit_adapter.tools import export_model

    cfg, model, _ = exported
    ckpt = str(tmp_path / "model.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    Image.fromarray(_image(70, 100, seed=3)).save(tmp_path / "img.png")
    path, reports = export_model.main(["--config-file", CONFIG, "--output", str(tmp_path / "out"), "--sample-image",
                                       str(tmp_path / "img.png"), f"train.init_checkpoint={ckpt}",
                                       "model.test_mode=whole"])
    assert os.path.isfile(path) and len(reports) == 2  # two network input shapes
    assert all(r["label_agreement"] > 0.999 for r in reports.values())


def test_multi_scale_test_is_refused(exported, tmp_path):
    from vit_adapter.deploy import DeployError
    from vit_adapter.deploy.export import export_segmentor

    cfg, model, _ = exported
    model.test_flip = True
    try:
        with pytest.raises(DeployError, match="multi-scale / flip"):
            export_segmentor(cfg, model, str(tmp_path / "m.onnx"))
    finally:
        model.test_flip = False
