"""The demo dataset generator and the checked COCO loader (clear errors for bad data)."""
import json
import os

import numpy as np
import pytest
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from vit_adapter.data import (
    CATEGORIES,
    DatasetError,
    generate_demo_dataset,
    load_checked_coco_json,
    prepare_demo_dataset,
    register_checked_coco_instances,
)

SMALL = dict(num_train=3, num_val=2, image_size=96, seed=3)


def _read_tree(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    return root, generate_demo_dataset(root, **SMALL)


def test_generator_is_deterministic(small_demo, tmp_path):
    root, _ = small_demo
    generate_demo_dataset(str(tmp_path), **SMALL)
    first, second = _read_tree(root), _read_tree(str(tmp_path))
    assert sorted(first) == sorted(second)
    assert len([f for f in first if f.endswith(".jpg")]) == 5
    assert all(first[k] == second[k] for k in first)  # byte-identical
    other = str(tmp_path / "other_seed")
    generate_demo_dataset(other, **{**SMALL, "seed": 4})
    assert _read_tree(other)["train/000000.jpg"] != first["train/000000.jpg"]


def test_valid_coco(small_demo):
    _, splits = small_demo
    for split, n in (("train", 3), ("val", 2)):
        json_file, image_dir = splits[split]
        coco = COCO(json_file)
        assert len(coco.getImgIds()) == n
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == [c["name"] for c in CATEGORIES]
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) >= 2 * n  # at least 2 shapes per image
        for ann in anns:
            img = coco.loadImgs(ann["image_id"])[0]
            assert os.path.isfile(os.path.join(image_dir, img["file_name"]))
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= img["width"] and y + h <= img["height"]
            assert len(ann["segmentation"]) == 1 and len(ann["segmentation"][0]) >= 6
            m = coco.annToMask(ann)
            # the polygon covers the visible mask the area was counted on
            assert abs(int(m.sum()) - ann["area"]) <= 0.15 * ann["area"] + 10
            ys, xs = np.nonzero(m)
            assert xs.min() >= x - 1 and xs.max() <= x + w and ys.min() >= y - 1 and ys.max() <= y + h
            assert mask_util.area(mask_util.encode(np.asfortranarray(m))) > 0


def test_prepare_reuses_identical_copy_only(tmp_path):
    root = str(tmp_path / "d")
    prepare_demo_dataset(root, **SMALL)
    ann = os.path.join(root, "annotations", "instances_train.json")
    os.utime(ann, (1, 1))
    prepare_demo_dataset(root, **SMALL)  # same arguments: reused
    assert os.path.getmtime(ann) == 1
    prepare_demo_dataset(root, **{**SMALL, "num_train": 4})  # different: regenerated
    with open(ann) as f:
        assert len(json.load(f)["images"]) == 4


def test_registration_is_lazy_and_generates_on_first_use(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from vit_adapter.data import check_registered_coco_datasets, register_demo_dataset

    root = str(tmp_path / "d")
    names = {"train": "_test_lazy_demo_train", "val": "_test_lazy_demo_val"}
    try:
        for _ in range(2):  # registering again replaces the registration
            assert register_demo_dataset(root, names, **SMALL) == names
        assert not os.path.exists(root)  # nothing written at registration
        assert MetadataCatalog.get(names["val"]).thing_classes == [c["name"] for c in CATEGORIES]
        check_registered_coco_datasets(list(names.values()))  # leaves the generating loader in place
        assert len(DatasetCatalog.get(names["val"])) == SMALL["num_val"]  # generated now
        assert len(DatasetCatalog.get(names["train"])) == SMALL["num_train"]
        with open(os.path.join(root, "demo_dataset.json")) as f:
            assert json.load(f)["num_train"] == SMALL["num_train"]
        assert [n for n in os.listdir(tmp_path) if n != "d"] == []  # no temporary copy left
    finally:
        for name in names.values():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_generator_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="at least one image"):
        generate_demo_dataset(str(tmp_path), num_train=0)
    with pytest.raises(ValueError, match="image_size"):
        generate_demo_dataset(str(tmp_path), image_size=32)


# --- bad input: each problem gives one DatasetError naming it -----------------------------


@pytest.fixture
def demo_copy(small_demo, tmp_path):
    """A writable copy of the small train split: (json_file, image_dir)."""
    _, splits = small_demo
    json_file, image_dir = splits["train"]
    dst_img = tmp_path / "img"
    dst_img.mkdir()
    for f in os.listdir(image_dir):
        (dst_img / f).write_bytes(open(os.path.join(image_dir, f), "rb").read())
    dst_json = tmp_path / "ann.json"
    dst_json.write_text(open(json_file).read())
    return str(dst_json), str(dst_img)


def _one_line_error(json_file, image_dir, match):
    with pytest.raises(DatasetError) as info:
        load_checked_coco_json(json_file, image_dir)
    msg = str(info.value)
    assert "\n" not in msg
    assert match in msg, msg
    return msg


def test_checked_loader_accepts_good_data(demo_copy):
    dicts = load_checked_coco_json(*demo_copy)
    assert len(dicts) == 3 and all(d["annotations"] for d in dicts)


def test_missing_image(demo_copy):
    json_file, image_dir = demo_copy
    os.remove(os.path.join(image_dir, "000001.jpg"))
    msg = _one_line_error(json_file, image_dir, "image file not found")
    assert "000001.jpg" in msg


def test_corrupt_image(demo_copy):
    json_file, image_dir = demo_copy
    path = os.path.join(image_dir, "000002.jpg")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 3])  # truncated JPEG
    msg = _one_line_error(json_file, image_dir, "corrupt or not an image")
    assert "000002.jpg" in msg


@pytest.mark.parametrize(
    "content, match",
    [
        ("this is not json", "is not valid JSON"),
        ("[1, 2, 3]", "is not COCO JSON"),
        ('{"images": [], "annotations": []}', "is not COCO JSON: missing or invalid key(s) 'categories'"),
        ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "images[0] lacks file_name"),
    ],
)
def test_annotation_file_not_coco(demo_copy, content, match):
    json_file, image_dir = demo_copy
    open(json_file, "w").write(content)
    msg = _one_line_error(json_file, image_dir, match)
    assert json_file in msg


def test_missing_annotation_file(tmp_path):
    _one_line_error(str(tmp_path / "nope.json"), str(tmp_path), "annotation file not found")


def test_empty_dataset(demo_copy):
    json_file, image_dir = demo_copy
    data = json.load(open(json_file))
    json.dump({**data, "images": [], "annotations": []}, open(json_file, "w"))
    _one_line_error(json_file, image_dir, "is empty")
    json.dump({**data, "annotations": []}, open(json_file, "w"))
    _one_line_error(json_file, image_dir, "has no annotations")


def test_registered_dataset_raises_through_catalog(demo_copy):
    from detectron2.data import DatasetCatalog

    json_file, image_dir = demo_copy
    os.remove(os.path.join(image_dir, "000000.jpg"))
    register_checked_coco_instances("test_demo_broken", {}, json_file, image_dir)
    with pytest.raises(DatasetError, match="dataset 'test_demo_broken'|image file not found"):
        DatasetCatalog.get("test_demo_broken")
