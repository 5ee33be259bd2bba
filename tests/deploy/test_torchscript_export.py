"""tools/export_model.py --format torchscript (issue 16 item 12) and restoring the model's
state when an export fails (item 13)."""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from PIL import Image

from vit_adapter.deploy.export import export_detector, export_torchscript, load_torchscript
from vit_adapter.deploy.predictor import DeployError
from vit_adapter.layers.ms_deform_attn import MSDeformAttn
from test_export import OVERRIDES, TINY_CONFIG, _image, _nontrivial_heads


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(TINY_CONFIG), OVERRIDES)
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    _nontrivial_heads(model)
    ckpt = str(root / "model.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    Image.fromarray(_image(90, 130, seed=5)).save(root / "sample.png")
    return cfg, model, ckpt, root


def test_export_tool_torchscript_saves_reloads_and_matches_eager(trained_like):
    from vit_adapter.tools import export_model

    cfg, model, ckpt, root = trained_like
    path, reports = export_model.main([
        "--config-file", TINY_CONFIG, "--format", "torchscript", "--output", str(root / "ts"),
        "--sample-image", str(root / "sample.png"), *OVERRIDES, f"train.init_checkpoint={ckpt}",
    ])
    assert os.path.basename(path) == "model.ts"
    traced = reports.pop("traced")
    assert len(traced) == 2  # two sizes other than the traced one
    for r in traced.values():
        assert r["detections"] > 0 and r["max_abs_diff"] < 1e-3, traced
    assert len(reports) == 2  # the sample image at two network input shapes, as for ONNX
    for r in reports.values():
        assert r["checked"] == 50 and r["fraction"] >= 0.95, reports
    # plain torch.jit.load works (detectron2 users' deployment), metadata comes along
    module = torch.jit.load(path)
    _, meta = load_torchscript(path)
    assert meta["size_divisibility"] == 32 and meta["input_format"] == model.input_format
    out = module(torch.zeros(1, 3, 224, 288), torch.tensor([200, 270]))
    assert len(out) == 4 and out[3].shape[1:] == (28, 28)


def _boom(*args, **kwargs):
    raise RuntimeError("failed inside the trace")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("training", [True, False])
def test_failed_export_restores_modes_and_patches(trained_like, fmt, training):
    cfg, model, _, root = trained_like
    model.train(training)
    impls = [m.impl for m in model.modules() if isinstance(m, MSDeformAttn)]
    hook = model.proposal_generator.rpn_head.register_forward_pre_hook(_boom)
    try:
        with pytest.raises(RuntimeError, match="failed inside the trace"):
            (export_detector if fmt == "onnx" else export_torchscript)(cfg, model, str(root / f"x.{fmt}"))
    finally:
        hook.remove()
    assert all(m.training == training for m in model.modules())
    assert [m.impl for m in model.modules() if isinstance(m, MSDeformAttn)] == impls


def test_bad_torchscript_file_is_one_line(tmp_path):
    bad = tmp_path / "model.ts"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DeployError, match="is not a loadable TorchScript model"):
        load_torchscript(str(bad))
