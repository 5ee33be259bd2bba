"""Registration of COCO-Stuff-164k / -10k and Pascal Context-59 (vit_adapter.data.seg_datasets)."""
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from vit_adapter.data.datasets import DatasetError
from vit_adapter.data.seg_datasets import (
    COCO_STUFF_CLASSES,
    PASCAL_CONTEXT_59_CLASSES,
    SEG_DATASETS,
    register_seg_datasets,
)


def test_class_lists():
    assert len(COCO_STUFF_CLASSES) == len(set(COCO_STUFF_CLASSES)) == 171
    assert COCO_STUFF_CLASSES[0] == "person" and COCO_STUFF_CLASSES[80] == "banner" and COCO_STUFF_CLASSES[-1] == "wood"
    assert len(PASCAL_CONTEXT_59_CLASSES) == len(set(PASCAL_CONTEXT_59_CLASSES)) == 59


def test_layout_loads_and_missing_folders_are_one_line_errors(tmp_path):
    register_seg_datasets(str(tmp_path), replace=True)
    try:
        for name, (_, _, classes) in SEG_DATASETS.items():
            meta = MetadataCatalog.get(name)
            assert meta.stuff_classes == classes and meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
        with pytest.raises(DatasetError, match="pascal_ctx_d2/images/validation"):
            DatasetCatalog.get("pascal_context59_sem_seg_val")
        images, labels = (tmp_path / p for p in SEG_DATASETS["coco_stuff10k_sem_seg_test"][:2])
        os.makedirs(images)
        os.makedirs(labels)
        Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(images / "COCO_train2014_000000000077.jpg")
        Image.fromarray(np.array([[0, 170, 255, 3, 4] * 2] * 8, np.uint8)).save(labels / "COCO_train2014_000000000077.png")
        (d,) = DatasetCatalog.get("coco_stuff10k_sem_seg_test")
        assert d["height"] == 8 and d["width"] == 10 and d["sem_seg_file_name"].endswith("000000000077.png")
    finally:
        register_seg_datasets(replace=True)  # back to the default root
