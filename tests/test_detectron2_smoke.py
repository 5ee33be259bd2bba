"""detectron2's own model-zoo Mask R-CNN R50-FPN trains and infers on CPU here."""
import math

import torch

from detectron2.config import instantiate
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from vit_adapter.compat import get_model_zoo_config


def _build():
    cfg = get_model_zoo_config("common/models/mask_rcnn_fpn.py").model
    cfg.backbone.bottom_up.stem.norm = "BN"
    cfg.backbone.bottom_up.stages.norm = "BN"
    cfg.roi_heads.num_classes = 3
    cfg.roi_heads.box_predictor.test_score_thresh = 0.0
    return instantiate(cfg)


def _sample(h=160, w=192):
    image = torch.randint(0, 255, (3, h, w), dtype=torch.uint8)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 90.0, 100.0], [50.0, 30.0, 150.0, 140.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 20:100, 10:90] = True
    masks[1, 30:140, 50:150] = True
    inst.gt_masks = BitMasks(masks)
    return {"image": image, "instances": inst, "height": h, "width": w}


def test_model_zoo_mask_rcnn_trains_one_step_and_infers():
    model = _build()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with EventStorage(0):
        losses = model([_sample()])
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    total = sum(losses.values())
    assert all(math.isfinite(v.item()) for v in losses.values())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()

    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": _sample()["image"], "height": 80, "width": 96}])
    inst = out["instances"]
    assert inst.image_size == (80, 96)  # rescaled to the requested output size
    assert inst.pred_masks.shape[1:] == (80, 96)
    assert len(inst) > 0
