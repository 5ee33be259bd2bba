"""tools/predict.py logs the number of detections it draws, and how many fell below
--score-threshold (issue 16 item 4: it logged the count before the threshold)."""
import logging

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances
from PIL import Image

from vit_adapter.tools import predict


class _FixedPredictor:
    """Three boxes with scores 0.9, 0.3, 0.1 on any image."""

    input_format = "RGB"

    def __call__(self, image):
        h, w = image.shape[:2]
        boxes = torch.tensor([[2.0, 2.0, 20.0, 20.0], [30.0, 30.0, 50.0, 50.0], [5.0, 40.0, 25.0, 60.0]])
        return Instances((h, w), pred_boxes=Boxes(boxes), scores=torch.tensor([0.9, 0.3, 0.1]),
                         pred_classes=torch.tensor([0, 1, 2]))


def _run(tmp_path, caplog, threshold):
    image = tmp_path / "img.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    with caplog.at_level(logging.INFO, logger="vit_adapter.predict"):
        (out,) = predict.predict_images(_FixedPredictor(), [str(image)], str(tmp_path / f"vis{threshold}"),
                                        MetadataCatalog.get("__unused"), score_threshold=threshold)
    drawn = np.asarray(Image.open(out).convert("RGB"))
    return caplog.messages[-1], (drawn != 128).any()


def test_log_counts_what_is_drawn(tmp_path, caplog):
    msg, changed = _run(tmp_path, caplog, 0.5)
    assert "1 detection drawn (score >= 0.5), 2 below" in msg and changed
    msg, changed = _run(tmp_path, caplog, 0.0)
    assert "3 detections drawn (score >= 0), 0 below" in msg and changed


def test_nothing_above_threshold_says_zero_drawn(tmp_path, caplog):
    msg, changed = _run(tmp_path, caplog, 0.95)
    assert "0 detections drawn (score >= 0.95), 3 below" in msg and not changed
