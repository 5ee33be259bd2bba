"""Bad data that once crashed or exhausted a run (issue 16, rows 8-14 of docs/robustness.md).

Each test feeds one crafted input to the place the data enters (the checked
COCO loader, the mapper, detectron2's own train loader, the image reader) and
checks the documented decision: drop with a count, skip, or a one-line error.
"""
import json
import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, build_detection_train_loader

from vit_adapter.data import DatasetError, check_registered_coco_datasets, load_checked_coco_json
from vit_adapter.compat import fix_map_dataset_fallback
from vit_adapter.data.annotations import validate_coco_dict
from vit_adapter.data.image_io import ImageTooLargeError, read_image
from vit_adapter.data.robust_mapper import RobustDatasetMapper

from test_robust_mapper import box_anno, mapper, record, write_image

BOX_POLY = [4, 4, 24, 4, 24, 20, 4, 20]


def coco_file(tmp_path, annotations, images=None, drop_keys=()):
    """Write a 2-image COCO file (48x40 images exist on disk); returns its path."""
    if images is None:
        images = [{"id": i, "file_name": f"{i}.png", "width": 48, "height": 40} for i in (1, 2)]
    for img in images:
        if not (tmp_path / img["file_name"]).exists():
            write_image(tmp_path / img["file_name"])
    anns = []
    for i, a in enumerate(annotations):
        ann = {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 16], "area": 320.0,
               "iscrowd": 0, "segmentation": [BOX_POLY], **a}
        anns.append(ann)
    # a clean annotation on image 2, so the dataset never ends up empty
    anns.append({"id": 99, "image_id": 2, "category_id": 1, "bbox": [4, 4, 20, 16], "area": 320.0,
                 "iscrowd": 0, "segmentation": [BOX_POLY]})
    for key in drop_keys:
        for ann in anns[:-1]:
            ann.pop(key, None)
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return str(path)


def one_line(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


def n_annotations(dicts, image_id=1):
    return sum(len(d["annotations"]) for d in dicts if d["image_id"] == image_id)


# ------------------------------------------------------------------ row 8: detectron2's loader
def test_detectron2_train_loader_survives_a_skipped_image(tmp_path):
    """build_detection_train_loader (MapDataset) falls back to another image when the mapper skips one."""
    good = [record(write_image(tmp_path / f"{i}.png")) for i in range(3)]
    bad = record(tmp_path / "broken.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    dataset = [dict(d, image_id=i) for i, d in enumerate([bad] + good)]
    m = mapper()
    fix_map_dataset_fallback()  # as train_net.py's setup does
    loader = build_detection_train_loader(dataset=dataset, mapper=m, total_batch_size=2, num_workers=0)
    it = iter(loader)
    seen = [d["file_name"] for _ in range(6) for d in next(it)]
    assert len(seen) == 12 and all("broken" not in f for f in seen)
    assert m.skipped["undecodable"] >= 1


def test_compat_fallback_pool_is_a_sampleable_set():
    """The shim for unpatched 0.6 installs (the sdist patch itself: tests/tools/test_install.py)."""
    import random

    from vit_adapter.compat import _FallbackPool

    pool = _FallbackPool({5, 1, 3})
    pool.discard(3)
    pool.add(7)
    pool.add(1)
    assert list(pool) == [1, 5, 7] and 5 in pool and 3 not in pool
    assert random.Random(42).sample(pool, k=1)[0] == random.Random(42).sample(sorted({1, 5, 7}), k=1)[0]


# ------------------------------------------------------------------ rows 9-11: annotations
@pytest.mark.parametrize(
    "ann, reason",
    [
        ({"segmentation": []}, "empty segmentation"),
        ({"segmentation": [[4, 4, float("nan"), 4, 24, 20]]}, "non-finite polygon"),
        ({"segmentation": [[4, 4, 1e9, 4, 24, 20]]}, "polygon far outside the image"),
        ({"segmentation": [[4, 4, 24, 20]]}, "polygon with < 3 points"),
        ({"bbox": [4, 4, 20, 16, 1]}, "malformed bbox"),
        ({"bbox": [4, float("inf"), 20, 16]}, "malformed bbox"),
        ({"segmentation": {"size": [4000, 4000], "counts": [0, 16000000]}}, "bad RLE"),
        ({"segmentation": {"size": [40, 48], "counts": [5, 5]}}, "bad RLE"),
    ],
)
def test_bad_annotation_is_dropped_for_training_and_stops_evaluation(tmp_path, caplog, ann, reason):
    json_file = coco_file(tmp_path, [ann])
    with caplog.at_level(logging.WARNING, logger="vit_adapter.data.datasets"):
        dicts = load_checked_coco_json(json_file, str(tmp_path), bad_annotations="drop")
    assert n_annotations(dicts) == 0 and n_annotations(dicts, 2) == 1
    assert "dropped 1 of 2 annotations" in caplog.text and reason in caplog.text
    with pytest.raises(DatasetError) as e:
        load_checked_coco_json(json_file, str(tmp_path), bad_annotations="error")
    one_line(e, reason, "annotations[0]", "1.png", "evaluation needs valid ground truth")


def test_bad_polygon_among_good_ones_is_removed_and_the_annotation_kept(tmp_path, caplog):
    json_file = coco_file(tmp_path, [{"segmentation": [BOX_POLY, [1, 2, 3, 4]]}])
    with caplog.at_level(logging.WARNING, logger="vit_adapter.data.datasets"):
        dicts = load_checked_coco_json(json_file, str(tmp_path))
    (d,) = [d for d in dicts if d["image_id"] == 1]
    assert d["annotations"][0]["segmentation"] == [BOX_POLY]
    assert "dropped 0 of 2" in caplog.text and "polygons removed, annotation kept: 1" in caplog.text


def test_nan_polygon_stops_the_evaluated_dataset_before_pycocotools(tmp_path):
    """train_net registers the test datasets with bad_annotations='error' (eval_names)."""
    from detectron2.data.datasets import register_coco_instances

    json_file = coco_file(tmp_path, [{"segmentation": [[4, 4, float("nan"), 4, 24, 20]]}])
    name = "va_test_nan_eval"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    register_coco_instances(name, {}, json_file, str(tmp_path))
    with pytest.raises(DatasetError) as e:  # at once, not after a training run
        check_registered_coco_datasets([name], eval_names=[name])
    one_line(e, "non-finite polygon", name)
    check_registered_coco_datasets([name])  # registered for training: dropped
    assert n_annotations(DatasetCatalog.get(name)) == 0


@pytest.mark.parametrize("missing", ["area", "iscrowd", "segmentation"])
def test_missing_eval_fields_are_one_line_errors_for_evaluation_only(tmp_path, missing):
    json_file = coco_file(tmp_path, [{}], drop_keys=(missing,))
    assert n_annotations(load_checked_coco_json(json_file, str(tmp_path))) == 1  # training does not need it
    with pytest.raises(DatasetError) as e:
        load_checked_coco_json(json_file, str(tmp_path), bad_annotations="error")
    one_line(e, f"lacks '{missing}'", "COCOeval")


def test_file_without_annotations_key_is_one_line_error(tmp_path):
    json_file = coco_file(tmp_path, [])
    data = json.loads(open(json_file).read())
    del data["annotations"]
    open(json_file, "w").write(json.dumps(data))
    with pytest.raises(DatasetError) as e:
        load_checked_coco_json(json_file, str(tmp_path))
    one_line(e, "has no 'annotations' key")


def test_mapper_drops_two_point_polygon_5_number_bbox_missing_segmentation_and_rle(tmp_path):
    img = write_image(tmp_path / "a.png")
    m = mapper()
    nonseg = {k: v for k, v in box_anno([4, 4, 20, 16]).items() if k != "segmentation"}
    cases = [
        box_anno([4, 4, 20, 16], segmentation=[[4, 4, 20, 16]]),  # two points
        dict(box_anno([4, 4, 20, 16]), bbox=[4, 4, 20, 16, 1]),  # 5 numbers
        nonseg,
        box_anno([4, 4, 20, 16], segmentation={"size": [40, 48], "counts": [0, 1920]}),  # polygon format
        box_anno([4, 4, 20, 16], segmentation=[[4, 4, 1e12, 4, 24, 20]]),  # far outside
    ]
    out = m(record(img, annotations=cases + [box_anno([4, 4, 20, 16])]))
    assert len(out["instances"]) == 1
    assert m.dropped == {"no valid polygon": 2, "malformed box": 1, "no segmentation": 1,
                         "RLE mask (needs instance_mask_format='bitmask')": 1}


def test_mapper_keeps_a_non_crowd_rle_with_bitmask_format(tmp_path):
    img = write_image(tmp_path / "a.png")
    m = RobustDatasetMapper(is_train=True, augmentations=[], image_format="RGB", use_instance_mask=True,
                            instance_mask_format="bitmask", num_classes=3)
    mask = np.zeros((40, 48), np.uint8)
    mask[4:20, 4:24] = 1
    counts = [4 * 40 + 4, 16, 24, 16, 24, 16]  # not needed exactly: any valid uncompressed RLE
    counts = counts + [40 * 48 - sum(counts)]
    anno = box_anno([4, 4, 20, 16], segmentation={"size": [40, 48], "counts": counts})
    bad = box_anno([4, 4, 20, 16], segmentation={"size": [400, 480], "counts": [0, 192000]})
    out = m(record(img, annotations=[anno, bad]))
    assert len(out["instances"]) == 1 and out["instances"].gt_masks.tensor.shape == (1, 40, 48)
    assert m.dropped == {"bad RLE": 1}


# ------------------------------------------------------------------ row 12: duplicate image ids
def test_duplicate_image_ids_name_the_id_and_both_files(tmp_path):
    images = [{"id": 7, "file_name": "1.png", "width": 48, "height": 40},
              {"id": 7, "file_name": "2.png", "width": 48, "height": 40}]
    json_file = coco_file(tmp_path, [], images=images)
    data = json.loads(open(json_file).read())
    for a in data["annotations"]:
        a["image_id"] = 7
    open(json_file, "w").write(json.dumps(data))
    with pytest.raises(DatasetError) as e:
        load_checked_coco_json(json_file, str(tmp_path))
    one_line(e, "duplicate image id 7", "'1.png'", "'2.png'")


def test_validate_returns_the_same_object_when_clean(tmp_path):
    data = json.loads(open(coco_file(tmp_path, [{}])).read())
    out, dropped = validate_coco_dict(data, "x.json")
    assert out is data and not dropped


# ------------------------------------------------------------------ row 13: pixel limit
def png_header_only(path, width, height):
    """A PNG whose header claims width x height, with almost no pixel data (a decode would fail)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)  # 64 bytes of the width * height * 3 the header promises
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))
    return str(path)


def test_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    huge = png_header_only(tmp_path / "huge.png", 10000, 10000)
    with pytest.raises(ImageTooLargeError, match="10000x10000 = 100000000 pixels is over the limit of 20000000"):
        read_image(huge)  # from the header: a decode of this file would fail as truncated
    small = write_image(tmp_path / "small.png", size=(48, 40))
    monkeypatch.setenv("VIT_ADAPTER_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageTooLargeError, match="VIT_ADAPTER_MAX_IMAGE_PIXELS"):
        read_image(small)
    monkeypatch.setenv("VIT_ADAPTER_MAX_IMAGE_PIXELS", "0")  # no limit
    assert read_image(small).shape == (40, 48, 3)


def test_too_large_image_skipped_in_training_stops_evaluation_and_loading(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("VIT_ADAPTER_MAX_IMAGE_PIXELS", "1000")
    img = write_image(tmp_path / "a.png", size=(48, 40))
    m = mapper()
    with caplog.at_level(logging.WARNING):
        assert m(record(img)) is None
    assert m.skipped == {"too large": 1} and "over the limit of 1000" in caplog.text
    with pytest.raises(DatasetError, match="too large"):
        mapper(is_train=False)(record(img))
    with pytest.raises(DatasetError) as e:
        load_checked_coco_json(coco_file(tmp_path, [{}]), str(tmp_path))  # small dataset: decoded at load
    one_line(e, "is too large", "over the limit of 1000")


# ------------------------------------------------------------------ row 14: one reader
def test_predict_reads_images_exactly_as_training_and_evaluation(tmp_path):
    from vit_adapter.tools.predict import read_image as predict_read

    arr16 = (np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 30).astype(np.uint16)
    gray16 = tmp_path / "gray16.png"
    Image.fromarray(arr16).save(gray16)
    rotated = tmp_path / "exif.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
        rotated, exif=exif.tobytes())
    for path in (gray16, rotated):
        ref = read_image(str(path), "BGR")
        assert np.array_equal(predict_read(str(path), "BGR"), ref)
        mapped = mapper(is_train=False)({"file_name": str(path), "image_id": 0})["image"]
        assert np.array_equal(mapped.numpy().transpose(1, 2, 0), read_image(str(path), "RGB"))
    assert read_image(str(rotated)).shape == (48, 40, 3)  # EXIF applied: width and height swapped
    g = read_image(str(gray16), "RGB")[..., 0].astype(int)
    assert g.min() == 0 and 200 < g.max() < 255 and (g < 255).mean() > 0.9  # not clipped to white
