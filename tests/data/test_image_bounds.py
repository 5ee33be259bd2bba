"""Bounds on what one image can cost (issue 16, adversarial inputs): an image the resize
rounds to 0 px, the pixel limit derived from the evaluation's per-pixel memory, one record
with a huge number of annotations, annotation files nested too deeply for the JSON decoder."""
import json
import logging

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from PIL import Image

from vit_adapter.data import DatasetError, load_checked_coco_json
from vit_adapter.data.image_io import DEFAULT_MAX_IMAGE_PIXELS, EVAL_BYTES_PER_PIXEL
from vit_adapter.data.robust_mapper import MAX_ANNOTATIONS_ENV, RobustDatasetMapper
from test_robust_mapper import box_anno, record, tiny_model  # noqa: F401 (fixture)

DEMO_RESIZE = [T.ResizeShortestEdge(short_edge_length=192, max_size=384)]  # the demo config's test resize


def _mapper(is_train, augmentations=(), **kw):
    return RobustDatasetMapper(is_train=is_train, augmentations=list(augmentations), image_format="RGB",
                               use_instance_mask=True, num_classes=3, **kw)


# ------------------------------------------------------------------ a side resized to 0 px
@pytest.mark.parametrize("size", [(40000, 1), (1, 40000)])
def test_image_resized_to_zero_pixels_is_skipped_in_training_and_stops_evaluation(tmp_path, size, caplog):
    path = tmp_path / "line.png"
    Image.fromarray(np.full(size[::-1] + (3,), 90, np.uint8)).save(path)
    rec = record(path, size=size, annotations=[])
    train = _mapper(True, DEMO_RESIZE)
    with caplog.at_level(logging.WARNING):
        assert train(rec) is None
    assert train.skipped["cannot be resized"] == 1
    assert f"{size[0]}x{size[1]} pixels" in caplog.text
    with pytest.raises(DatasetError, match=r"line\.png cannot be used \(cannot be resized: .*pixels") as e:
        _mapper(False, DEMO_RESIZE)(rec)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ the pixel limit
def test_pixel_limit_is_derived_from_the_evaluations_memory_per_pixel():
    # 2 GiB per evaluated image at the limit (docs/robustness.md has the measured figure)
    assert DEFAULT_MAX_IMAGE_PIXELS * EVAL_BYTES_PER_PIXEL <= 2**31


def test_evaluation_holds_one_bool_mask_per_detection_at_the_original_size(tmp_path, tiny_model):
    # What EVAL_BYTES_PER_PIXEL counts: detectron2 pastes every detection's mask at the
    # original size as bool (1 byte per pixel per detection, at most test_topk_per_image).
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 300, 3), dtype=np.uint8)).save(path)
    data = _mapper(False, [T.ResizeShortestEdge(short_edge_length=64, max_size=128)])(record(path, size=(300, 120)))
    tiny_model.eval()
    tiny_model.roi_heads.box_predictor.test_score_thresh = 0.0
    with torch.no_grad():
        inst = tiny_model([data])[0]["instances"]
    topk = tiny_model.roi_heads.box_predictor.test_topk_per_image
    assert 0 < len(inst) <= topk <= EVAL_BYTES_PER_PIXEL - 4
    assert inst.pred_masks.dtype == torch.bool and tuple(inst.pred_masks.shape[1:]) == (120, 300)


# ------------------------------------------------------------------ annotations per image
def _crowded_record(tmp_path, n, crowd=0):
    path = tmp_path / "crowded.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(path)
    annos = [box_anno([i % 50, (i * 7) % 50, 10, 10], category_id=i % 3) for i in range(n)]
    for a in annos[:crowd]:
        a["iscrowd"] = 1
    return record(path, size=(64, 64), annotations=annos)


def test_image_with_too_many_annotations_is_subsampled_with_a_count(tmp_path, caplog):
    rec = _crowded_record(tmp_path, 500, crowd=2)
    m = _mapper(True, max_annotations=40)
    np.random.seed(0)
    with caplog.at_level(logging.WARNING):
        out = m(rec)
    assert len(out["instances"]) == 40  # the crowd ones are kept but are not instances
    assert m.dropped["subsampled: over 40 per image"] == 458
    assert "dropped 458 annotation(s)" in caplog.text
    assert len(rec["annotations"]) == 500  # the dataset's record is untouched
    np.random.seed(0)
    again = _mapper(True, max_annotations=40)(rec)  # the loader seeds the RNG: reproducible
    assert torch.equal(again["instances"].gt_boxes.tensor, out["instances"].gt_boxes.tensor)


def test_annotation_cap_from_the_environment(tmp_path, monkeypatch):
    rec = _crowded_record(tmp_path, 30)
    monkeypatch.setenv(MAX_ANNOTATIONS_ENV, "7")
    assert len(_mapper(True)(rec)["instances"]) == 7
    monkeypatch.setenv(MAX_ANNOTATIONS_ENV, "0")  # no cap
    assert len(_mapper(True)(rec)["instances"]) == 30


# ------------------------------------------------------------------ JSON nested too deeply
@pytest.mark.parametrize("where", ["top", "annotation field"])
def test_deeply_nested_json_is_one_line_naming_the_file(tmp_path, where):
    deep = "[" * 200000 + "]" * 200000
    if where == "top":
        text = '{"images": ' + deep + "}"
    else:
        text = json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
                           "categories": [{"id": 1, "name": "a"}],
                           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1],
                                            "segmentation": "DEEP"}]}).replace('"DEEP"', deep)
    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(DatasetError, match=r"deep\.json is nested too deeply") as e:
        load_checked_coco_json(str(path), str(tmp_path))
    assert "\n" not in str(e.value)


def test_moderately_nested_segmentation_is_a_bad_annotation(tmp_path):
    # parses (900 levels), but is not a polygon list: dropped for training like any bad segmentation
    Image.fromarray(np.full((4, 4, 3), 1, np.uint8)).save(tmp_path / "a.png")
    good = {"id": 2, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0,
            "segmentation": [[0, 0, 2, 0, 2, 2]]}
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1,
                             "iscrowd": 0, "segmentation": "DEEP"}, good]}
    path = tmp_path / "nested.json"
    path.write_text(json.dumps(data).replace('"DEEP"', "[" * 900 + "]" * 900))
    dicts = load_checked_coco_json(str(path), str(tmp_path))
    assert [len(d["annotations"]) for d in dicts] == [1]
