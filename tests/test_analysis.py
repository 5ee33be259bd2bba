"""vit_adapter.analysis.count_detector_flops: a whole R-CNN counted with the attention and
deformable-sampling handles, beside what fvcore (and so detectron2's analyze_model.py)
counts without them (issue 16 item 14)."""
import os

import torch
from detectron2.config import LazyConfig, instantiate

from vit_adapter.analysis import count_detector_flops
from conftest import REPO_ROOT


def test_detector_flops_count_attention_and_deformable_sampling():
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "tests", "configs", "demo_tiny.py"))
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    image = torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)
    r = count_detector_flops(model, image)
    assert model.training  # mode restored
    ops = r["by_operator"]
    handled = ops["scaled_dot_product_attention"] + ops["PythonOp._BilinearGatherSum"]
    assert ops["scaled_dot_product_attention"] > 0 and ops["PythonOp._BilinearGatherSum"] > 0
    # fvcore's default count is exactly ours minus what the two handles add
    assert r["total"] - r["fvcore_default"] == handled
    assert not {"aten::scaled_dot_product_attention", "prim::PythonOp._BilinearGatherSum"} & set(r["unsupported"])
    assert r["by_module"]["model.backbone"] > 0 and r["by_module"]["model.roi_heads"] > 0
